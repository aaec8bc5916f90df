"""`nanogpt hint`: three levels per method (the idea, the torch API, the shape recipe), one more per call, covering
every TODO the skeletons have, never the solution; `nanogpt status` counts them. Always on a temporary workspace
(NANOGPT_STUDENT_DIR), never the real student folder."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from learner_files import FINISHED_ATTENTION, half_written, workspace_in
from test_learner_support import _one_thread, skel  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.errors import UseSpecError, WorkspaceError
from nanogpt_core.learn.hints import HINTS, LEVELS, take_hint
from nanogpt_core.learn.source import component_source, find_part
from nanogpt_core.learn.status import LEARNING_PATH, learner_status
from nanogpt_core.learn.workspace import HINT_LOG, STUDENT_DIR_ENV, pristine_text, todo_methods
from nanogpt_core.model.contracts import COMPONENT_NAMES

SKELETON_TODOS = [todo for component in COMPONENT_NAMES for todo in todo_methods(pristine_text(component))]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    workspace_in(tmp_path, "pristine")
    monkeypatch.setenv(STUDENT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal's width: keep each hint on few lines
    return tmp_path


def hint(*args: str):
    return CliRunner().invoke(cli, ["hint", *args])


# --- the table -----------------------------------------------------------------------------------------------------


def test_every_skeleton_todo_has_hints_and_every_hint_a_todo():
    """Read from the skeletons themselves, so a new component's TODOs fail here until its hints are written."""
    assert len(SKELETON_TODOS) >= len(LEARNING_PATH)
    assert set(SKELETON_TODOS) == set(HINTS), (
        f"TODOs without hints: {sorted(set(SKELETON_TODOS) - set(HINTS))}; "
        f"hints without a TODO: {sorted(set(HINTS) - set(SKELETON_TODOS))}")
    for key, h in HINTS.items():
        levels = [h.level(n) for n in range(1, len(LEVELS) + 1)]
        assert all(len(text) > 60 for text in levels) and len(set(levels)) == 3, key


def _code_lines(component: str, method: str) -> list[str]:
    """The reference method's statements, without whitespace: what a hint must never contain."""
    part = find_part(component_source("reference", component), method)
    body = part.text.split(":\n", 1)[1] if part.text.lstrip().startswith(("def ", "@")) else part.text
    lines = []
    for line in body.splitlines():
        code = re.sub(r"\s+", "", line.split("#", 1)[0])
        if len(code) >= 12 and not code.startswith(('"""', "@", "def", "return[", "raise")):
            lines.append(code)
    return lines


def leaked(text: str, code_lines: list[str]) -> list[str]:
    squeezed = re.sub(r"\s+", "", text)
    return [line for line in code_lines if line in squeezed]


def test_no_hint_contains_a_line_of_the_reference():
    lines = {key: _code_lines(*key) for key in HINTS}
    assert sum(map(len, lines.values())) > 40  # the check has something to find
    for key, h in HINTS.items():
        for n in range(1, len(LEVELS) + 1):
            assert not leaked(h.level(n), lines[key]), f"{key} level {n} gives away: {leaked(h.level(n), lines[key])}"


def test_the_leak_check_finds_a_pasted_line():
    """The check above can fail: a hint quoting one reference statement is caught."""
    lines = _code_lines("mlp", "forward")
    assert leaked("then write x = F.relu(x).square() and project", lines) == ["x=F.relu(x).square()"]


# --- one more per call ---------------------------------------------------------------------------------------------


def test_pristine_workspace_gets_the_first_todo_of_a_run_one_level_per_call(workspace):
    first = "{}.{}".format(*LEARNING_PATH[0])
    h = HINTS[LEARNING_PATH[0]]
    outputs = [hint() for _ in range(4)]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    for n, result in enumerate(outputs[:3], start=1):
        assert f"Hint {n} of 3 for {first}: {LEVELS[n - 1]}" in result.output
        assert h.level(n)[:50] in result.output
    assert h.level(2)[:50] not in outputs[0].output  # level 1 gives only the idea
    assert "Hint 3 of 3" in outputs[3].output and "That was the last hint" in outputs[3].output
    assert f"nanogpt show reference:{first}" in outputs[3].output
    assert json.loads((workspace / HINT_LOG).read_text()) == {first: 3}


def test_level_shows_up_to_n_and_the_log_keeps_the_highest(workspace):
    result = hint("student:attention.forward", "--level", "2")
    assert result.exit_code == 0, result.output
    assert HINTS[("attention", "forward")].api[:40] in result.output
    assert HINTS[("attention", "forward")].shapes[:40] not in result.output
    hint("student:attention.forward", "--level", "1")
    assert json.loads((workspace / HINT_LOG).read_text()) == {"attention.forward": 2}
    assert "Hint 3 of 3" in hint("student:attention.forward").output  # one more than the highest taken


def test_a_half_written_file_gets_its_next_todo(workspace):
    (workspace / "attention.py").write_text(half_written("attention"))
    assert todo_methods((workspace / "attention.py").read_text()) == [("attention", "forward")]
    result = hint("student:attention")
    assert result.exit_code == 0 and "for attention.forward: the idea" in result.output


def test_a_finished_file_gets_the_hints_not_yet_taken_and_says_why(workspace):
    (workspace / "attention.py").write_text(FINISHED_ATTENTION)
    take_hint("attention", "__init__", level=3)
    result = hint("student:attention")
    assert result.exit_code == 0, result.output
    assert "attention has no TODO left, so this is attention.forward's hint" in result.output
    assert "name another method for its hints: student:attention.__init__" in result.output


def test_with_every_todo_written_a_bare_hint_says_what_to_do(workspace):
    for component in COMPONENT_NAMES:
        (workspace / f"{component}.py").write_text(component_source("reference", component).text)
    result = hint()
    assert result.exit_code == WorkspaceError.exit_code
    assert "every skeleton TODO in your files is written" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["student:norm.__init__"], "norm.__init__ has no hints: the skeleton writes it for you"),
    (["student:attention.attend"], "attention has no method 'attend' to fill in; hints exist for attention.__init__"),
    (["reference:attention.forward"], "hints are for the files you write"),
    (["student:softmax"], "unknown component 'softmax'"),
    (["student:attention.forward", "--level", "4"], "--level 4: hints have levels 1 to 3"),
    (["student:mlp,student:norm"], "names one component at a time"),
])
def test_bad_targets_are_one_line_errors(workspace, args, message):
    result = hint(*args)
    assert result.exit_code == UseSpecError.exit_code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_corrupt_hint_log_is_one_line_and_is_not_overwritten(workspace):
    (workspace / HINT_LOG).write_text("{not json")
    result = hint()
    assert result.exit_code == WorkspaceError.exit_code
    assert f"{HINT_LOG} is not a hint log" in result.output and "delete it" in result.output
    assert (workspace / HINT_LOG).read_text() == "{not json"


# --- status counts them --------------------------------------------------------------------------------------------


def test_status_counts_the_hints_taken(skel, workspace):  # noqa: F811
    take_hint("attention", "forward", level=2)
    take_hint("attention", "__init__", level=1)
    take_hint("mlp", "forward", level=3)
    report = learner_status(skel, directory=workspace, with_checks=False)
    taken = {s.component: s.hints_taken for s in report.components}
    assert taken["attention"] == 3 and taken["mlp"] == 3 and taken["norm"] == 0
    assert report.to_dict()["components"][0]["hints_taken"] == taken[report.components[0].component]


def test_status_command_shows_the_hints_column(workspace):
    take_hint("rotary", "precompute", level=2)
    result = CliRunner().invoke(cli, ["status", "--no-checks"])
    assert result.exit_code == 0, result.output
    assert "hints" in result.output and "Hints taken: 2" in result.output
    row = next(line for line in result.output.splitlines() if " rotary " in line)
    assert re.search(r"\b2\b", row), row
