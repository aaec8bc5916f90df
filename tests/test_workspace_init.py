"""`nanogpt init` and where the student set lives: a workspace of one's own, found from the current folder upwards.

Run in process on temporary folders: `init` writes the pristine skeletons, a README and the `nanogpt.toml` marker and
never overwrites; the location order is NANOGPT_STUDENT_DIR, then the nearest marker, then the source checkout's
`impls/student`; installed from a wheel (simulated here: no checkout) there is no student set outside a workspace,
and every command that needs one says how to make one. Inside a workspace the panel, the diagnosis and `status` name
the learner's file as it is on disk and the reference where it is installed, and `reset`/`hint` write there.
tests/test_installed_wheel.py does the same with a real wheel in a fresh virtual environment.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from learner_files import FINISHED_ROTARY
from test_learner_errors import TINY_TEXT, train_args
from test_learner_support import _one_thread  # noqa: F401

import nanogpt_impls.reference as ref
from nanogpt_cli.main import cli
from nanogpt_core.errors import WorkspaceError
from nanogpt_core.files import display_path
from nanogpt_core.learn.diagnose import diagnose
from nanogpt_core.learn.status import smoke_config
from nanogpt_core.learn.workspace import (
    BACKUP_DIR,
    HINT_LOG,
    MARKER_NAME,
    STUDENT_DIR_ENV,
    init_workspace,
    pristine_text,
    readme_text,
    student_dir,
)
from nanogpt_core.model import workspace_location
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import registrations
from nanogpt_core.model.use_spec import resolve_use
from nanogpt_core.model.workspace_location import checkout_student_dir, locate_student_set, read_marker

REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(STUDENT_DIR_ENV, raising=False)


@pytest.fixture
def refreshed(monkeypatch):
    """The registry asks the student plugin again where its files are, after the test changes the folder or the
    environment; and again once they are back, so no later test sees this test's workspace."""
    yield lambda: registrations(refresh=True)
    monkeypatch.undo()
    registrations(refresh=True)


@pytest.fixture
def installed(monkeypatch):
    """nanogpt as a wheel installs it: no source checkout to fall back on."""
    monkeypatch.setattr(workspace_location, "checkout_student_dir", lambda: None)


# --- nanogpt init ----------------------------------------------------------------------------------------------


def test_init_writes_the_skeletons_a_readme_and_the_marker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("init")  # the default folder
    assert result.exit_code == 0, result.output
    workspace = tmp_path / "my-gpt"
    for component in COMPONENT_NAMES:  # every component, gpt included, byte for byte the pristine skeleton
        assert (workspace / f"{component}.py").read_text() == pristine_text(component)
    assert (workspace / "README.md").read_text() == readme_text()
    assert all(f"`{c}.py`" in readme_text() for c in COMPONENT_NAMES) and "nanogpt status" in readme_text()
    assert read_marker(workspace / MARKER_NAME) == workspace.resolve()
    assert "__pycache__/" in (workspace / ".gitignore").read_text()
    assert "cd my-gpt" in result.output and "nanogpt status" in result.output
    assert not [p for p in tmp_path.iterdir() if p.name != "my-gpt"]  # no staging folder left behind
    mode = os.stat(workspace / "rotary.py").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # an ordinary file, not a private temporary one


def test_init_never_overwrites(tmp_path):
    workspace = tmp_path / "ws"
    assert invoke("init", str(workspace)).exit_code == 0
    (workspace / "rotary.py").write_text(FINISHED_ROTARY)
    again = invoke("init", str(workspace))
    assert again.exit_code == 2 and again.output.startswith("Error: ") and "already a nanogpt workspace" in again.output
    assert (workspace / "rotary.py").read_text() == FINISHED_ROTARY  # the learner's work is untouched

    half = tmp_path / "half"  # a folder with one of the workspace's files: refused, nothing written
    half.mkdir()
    (half / "README.md").write_text("mine\n")
    refused = invoke("init", str(half))
    assert refused.exit_code == 2 and "already has README.md" in refused.output
    assert sorted(p.name for p in half.iterdir()) == ["README.md"] and (half / "README.md").read_text() == "mine\n"

    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert invoke("init", str(a_file)).exit_code == 2


def test_init_into_an_existing_folder_keeps_its_other_files(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / ".gitignore").write_text("*.log\n")
    (folder / "notes.md").write_text("my notes\n")
    assert invoke("init", str(folder)).exit_code == 0
    assert (folder / ".gitignore").read_text() == "*.log\n" and (folder / "notes.md").read_text() == "my notes\n"
    assert read_marker(folder / MARKER_NAME) == folder.resolve()
    assert (folder / "gpt.py").read_text() == pristine_text("gpt")


# --- where the student set lives -------------------------------------------------------------------------------


def test_the_source_checkout_is_the_default_workspace(tmp_path, monkeypatch, no_env):
    assert checkout_student_dir() == REPO / "impls" / "student"
    monkeypatch.chdir(tmp_path)  # no marker here or above: the checkout's impls/student, as before workspaces
    location = locate_student_set()
    assert (location.directory, location.found_by) == (REPO / "impls" / "student", "the source checkout")


def test_the_nearest_marker_wins_and_the_environment_beats_it(tmp_path, monkeypatch, no_env):
    outer, inner = init_workspace(tmp_path / "outer").directory, init_workspace(tmp_path / "outer" / "inner").directory
    below = inner / "notes" / "deeper"
    below.mkdir(parents=True)
    monkeypatch.chdir(below)  # any folder below a workspace uses it
    assert student_dir() == inner.resolve()
    monkeypatch.chdir(outer)
    assert student_dir() == outer.resolve()
    assert locate_student_set().found_by == MARKER_NAME
    monkeypatch.setenv(STUDENT_DIR_ENV, str(inner))
    assert (student_dir(), locate_student_set().found_by) == (inner.resolve(), STUDENT_DIR_ENV)


@pytest.mark.parametrize("text, problem", [
    ("[workspace\nstudent = '.'\n", "is not a readable nanogpt workspace file (TOMLDecodeError"),
    ("title = 'x'\n", "has no `student = \"...\"` in a [workspace] table"),
    ("[workspace]\nstudent = 'src'\n", "names student = 'src', and src is not a folder"),
])
def test_a_broken_marker_is_one_line_naming_it_and_the_fix(tmp_path, monkeypatch, no_env, refreshed, text, problem):
    (tmp_path / MARKER_NAME).write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkspaceError, match=r"^nanogpt\.toml ") as info:
        student_dir()
    assert problem in str(info.value) and "\n" not in str(info.value)
    refreshed()  # the registry loads without a student set; asking for it gives the same line, the rest still runs
    with pytest.raises(WorkspaceError) as asked:
        resolve_use("student:mlp")
    assert str(asked.value) == str(info.value)
    build_model(smoke_config(), use="reference")


def test_a_missing_student_dir_in_the_environment_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(STUDENT_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(WorkspaceError, match=rf"{STUDENT_DIR_ENV}=.*nowhere is not a folder.*nanogpt init"):
        student_dir()


def test_installed_outside_a_workspace_every_command_says_how_to_make_one(tmp_path, monkeypatch, no_env, installed,
                                                                          refreshed):
    monkeypatch.chdir(tmp_path)
    refreshed()
    assert ("student", "rotary") not in registrations()  # the skeletons in site-packages are never the student set
    (tmp_path / "tiny.txt").write_text(TINY_TEXT)
    for args in (["status"], train_args("student:rotary", tmp_path / "tiny.txt", tmp_path / "run"),
                 ["check", "student:rotary"], ["compare", "--use", "student:rotary"], ["hint"],
                 ["reset", "student:rotary"], ["show", "student:rotary"]):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        line = result.output.strip().splitlines()[-1]
        assert line.startswith("Error: the student set is the files of a workspace, and there is none here"), args
        assert f"no nanogpt.toml in {tmp_path.resolve()} or a folder above it" in line
        assert "`nanogpt init`" in line and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
    listed = CliRunner().invoke(cli, ["components"], env={"COLUMNS": "400"})  # lists the rest, and says why not it
    assert listed.exit_code == 0 and "No student set: the student set is the files of a workspace" in listed.output


# --- the loop inside a workspace -------------------------------------------------------------------------------


@pytest.fixture
def in_workspace(tmp_path, monkeypatch, no_env, installed, refreshed):
    workspace = init_workspace(tmp_path / "my-gpt").directory
    (tmp_path / "tiny.txt").write_text(TINY_TEXT)
    monkeypatch.chdir(workspace)
    refreshed()
    return workspace


def test_the_panel_names_the_workspace_file_and_the_installed_reference(in_workspace):
    result = invoke(*train_args("student:rotary", Path("../tiny.txt"), Path("../run")))
    assert result.exit_code == 3, result.output
    out = result.output
    assert "Not implemented yet: rotary.precompute (student)" in out
    assert "your code  rotary.py:24  in Rotary.precompute" in out  # relative to the current folder: the workspace
    reference = display_path(inspect.getsourcefile(ref.Rotary))
    assert f"reference  {reference}" in out and Path(reference).is_file()
    assert "read it    nanogpt show reference:rotary.precompute" in out
    assert "impls/student" not in out
    assert invoke("show", "reference:rotary.precompute").exit_code == 0  # the command it names works


def test_the_diagnosis_and_status_name_real_paths(in_workspace):
    with pytest.raises(NotImplementedError) as info:
        build_model(smoke_config(), use="student:attention")
    d = diagnose(info.value, {"attention": "student"})
    assert (d.file, d.line) == ("attention.py", 24)
    assert Path(d.reference_file).resolve() == Path(inspect.getsourcefile(ref.CausalSelfAttention)).resolve()
    assert d.reference_command == "nanogpt show reference:attention.__init__"
    assert "nanogpt show reference:attention.__init__" in d.hint and "next to attention.py" in d.hint
    status = invoke("status", "--no-checks")
    assert status.exit_code == 0, status.output
    assert "Your files: . (the student set, from nanogpt.toml)" in status.output


def test_a_finished_component_in_the_workspace_passes_and_writes_stay_there(tmp_path, monkeypatch, no_env,
                                                                           installed, refreshed):
    workspace = init_workspace(tmp_path / "my-gpt").directory
    (workspace / "rotary.py").write_text(FINISHED_ROTARY)  # before the process loads it, as a new `nanogpt` would
    monkeypatch.chdir(workspace)
    refreshed()
    result = invoke("check", "student:rotary")
    assert result.exit_code == 0 and "0 failed, 0 not implemented" in result.output, result.output
    assert invoke("hint", "student:attention.forward").exit_code == 0
    assert (workspace / HINT_LOG).is_file()
    reset = invoke("reset", "student:rotary")
    assert reset.exit_code == 0 and "Backed up rotary.py -> .backups/rotary.py." in reset.output, reset.output
    [backup] = (workspace / BACKUP_DIR).glob("rotary.py.*")
    assert backup.read_text() == FINISHED_ROTARY and (workspace / "rotary.py").read_text() == pristine_text("rotary")
