"""`nanogpt reset`: restores pristine skeletons and keeps the learner's file. Always on a temporary copy of the
student folder (NANOGPT_STUDENT_DIR), never the real one."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from learner_files import workspace_in

from nanogpt_cli.main import cli
from nanogpt_core.errors import UseSpecError
from nanogpt_core.learn.workspace import (
    BACKUP_DIR,
    STUDENT_DIR_ENV,
    is_pristine,
    list_backups,
    pristine_text,
    reset_components,
    student_dir,
    undo_reset,
    write_pristine_dir,
)
from nanogpt_core.model.contracts import COMPONENT_NAMES


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    directory = write_pristine_dir(tmp_path / "student")
    monkeypatch.setenv(STUDENT_DIR_ENV, str(directory))
    return directory


def test_the_workspace_override_is_honoured(workspace):
    assert student_dir() == workspace


def test_reset_one_component_backs_up_and_restores(workspace):
    mine = "# my attention, half written\nclass CausalSelfAttention: pass\n"
    (workspace / "attention.py").write_text(mine)
    (workspace / "mlp.py").write_text("# my mlp\n")
    result = CliRunner().invoke(cli, ["reset", "student:attention"])
    assert result.exit_code == 0, result.output
    backups = list((workspace / BACKUP_DIR).glob("attention.py.*"))
    assert len(backups) == 1 and backups[0].read_text() == mine
    assert (workspace / "attention.py").read_text() == pristine_text("attention")
    assert f"Backed up {workspace / 'attention.py'} -> {backups[0]}" in result.output
    assert f"Restored  {workspace / 'attention.py'}" in result.output
    assert (workspace / "mlp.py").read_text() == "# my mlp\n"  # untouched
    assert (workspace / BACKUP_DIR / ".gitignore").read_text() == "*\n"  # backups never end up in git


def test_reset_everything_and_twice_in_a_second_keeps_both_backups(workspace):
    for component in COMPONENT_NAMES:
        (workspace / f"{component}.py").write_text(f"# v1 {component}\n")
    reset_components(None, now=1_700_000_000)
    (workspace / "norm.py").write_text("# v2 norm\n")
    results = reset_components(["norm"], now=1_700_000_000)
    assert all(is_pristine(c) for c in COMPONENT_NAMES)
    norm_backups = sorted(p.read_text() for p in (workspace / BACKUP_DIR).glob("norm.py.*"))
    assert norm_backups == ["# v1 norm\n", "# v2 norm\n"]
    assert results[0].backup.name.endswith("-1")


def test_reset_of_a_pristine_file_makes_no_backup(workspace):
    result = CliRunner().invoke(cli, ["reset", "student"])
    assert result.exit_code == 0
    assert "was already the skeleton" in result.output
    assert not (workspace / BACKUP_DIR).exists()


def test_reset_restores_a_deleted_file(workspace):
    (workspace / "block.py").unlink()
    [r] = reset_components(["block"])
    assert r.backup is None and is_pristine("block")


@pytest.mark.parametrize("target, message", [
    ("reference:mlp", "only the 'student' set"),
    ("student:softmax", "unknown component 'softmax'"),
])
def test_reset_rejects_what_it_cannot_restore(workspace, target, message):
    result = CliRunner().invoke(cli, ["reset", target])
    assert result.exit_code == UseSpecError.exit_code
    assert message in result.output and "Traceback" not in result.output


# --- undo and list -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["half", "finished"])
def test_undo_puts_back_what_reset_took_away(workspace, state):
    mine = workspace_in(workspace, state).read_text()
    CliRunner().invoke(cli, ["reset", "student:attention"])
    assert is_pristine("attention")
    result = CliRunner().invoke(cli, ["reset", "--undo", "student:attention"])
    assert result.exit_code == 0, result.output
    assert (workspace / "attention.py").read_text() == mine
    [backup] = list_backups("attention")
    assert f"Restored  {workspace / 'attention.py'} from {backup.path}" in result.output
    assert "Backed up" not in result.output  # the skeleton it replaced is not worth a backup


def test_undo_keeps_the_file_it_replaces_and_steps_back_through_the_backups(workspace):
    path = workspace / "mlp.py"
    for version in ("# v1\n", "# v2\n"):
        path.write_text(version)
        reset_components(["mlp"])
    path.write_text("# v3, not saved anywhere yet\n")
    undo_1 = undo_reset("mlp")  # v3 is kept, v2 comes back
    assert path.read_text() == "# v2\n" and undo_1.kept is not None
    assert undo_1.kept.read_text() == "# v3, not saved anywhere yet\n"
    undo_2 = undo_reset("mlp")  # one further back; v2 is a backup already, so no new one
    assert path.read_text() == "# v1\n" and undo_2.kept is None
    undo_3 = undo_reset("mlp")  # nothing older
    assert undo_3.source is None and path.read_text() == "# v1\n"
    assert sorted(b.path.read_text() for b in list_backups("mlp")) == ["# v1\n", "# v2\n",
                                                                     "# v3, not saved anywhere yet\n"]


def test_backups_are_listed_newest_first_even_past_nine_in_one_second(workspace):
    for n in range(12):
        (workspace / "norm.py").write_text(f"# v{n}\n")
        reset_components(["norm"], now=1_700_000_000)
    backups = list_backups("norm")
    assert [b.path.read_text() for b in backups] == [f"# v{n}\n" for n in reversed(range(12))]
    assert undo_reset("norm").source == backups[0]


def test_list_shows_every_backup_and_which_one_is_the_file(workspace):
    (workspace / "mlp.py").write_text("# my mlp\n")
    (workspace / "block.py").write_text("# my block\n")
    reset_components(["mlp", "block"])
    undo_reset("block")
    result = CliRunner().invoke(cli, ["reset", "--list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if ".backups" in line]
    assert len(rows) == 2
    assert "= your file now" in next(r for r in rows if "block" in r)
    assert "= your file now" not in next(r for r in rows if "mlp" in r)
    only = CliRunner().invoke(cli, ["reset", "--list", "student:mlp"], env={"COLUMNS": "200"})
    assert "block" not in only.output and "mlp.py." in only.output


def test_undo_of_the_whole_set_restores_only_components_with_backups(workspace):
    (workspace / "mlp.py").write_text("# my mlp\n")
    reset_components(None)
    result = CliRunner().invoke(cli, ["reset", "--undo", "student"])
    assert result.exit_code == 0, result.output
    assert (workspace / "mlp.py").read_text() == "# my mlp\n"
    assert all(is_pristine(c) for c in COMPONENT_NAMES if c != "mlp")
    assert result.output.count("Restored") == 1


@pytest.mark.parametrize("args, code, message", [
    (["reset", "--undo", "student:attention"], 2, "there is no backup of attention in"),
    (["reset"], 2, "reset needs a target"),
    (["reset", "--undo", "--list", "student"], 2, "--undo and --list do different things"),
    (["reset", "--undo", "reference:mlp"], 2, "only the 'student' set"),
])
def test_undo_and_list_mistakes_are_one_line(workspace, args, code, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_list_with_no_backups_says_how_to_make_one(workspace):
    result = CliRunner().invoke(cli, ["reset", "--list"])
    assert result.exit_code == 0 and "No backups in" in result.output
