"""`nanogpt show` (one method, its contract, a second set beside it) and `nanogpt diff` (what the learner wrote), on a
pristine, a half-written and a finished file in a temporary workspace (NANOGPT_STUDENT_DIR)."""

from __future__ import annotations

import inspect
import re

import pytest
from click.testing import CliRunner
from learner_files import FINISHED_ATTENTION, workspace_in

import nanogpt_impls.reference as ref
from nanogpt_cli.main import cli
from nanogpt_core.errors import UseSpecError, WorkspaceError
from nanogpt_core.learn.source import component_source, diff_sources, find_part, methods_of
from nanogpt_core.learn.workspace import STUDENT_DIR_ENV, pristine_text
from nanogpt_core.model.contracts import BY_NAME


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv(STUDENT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("COLUMNS", "240")  # wide enough that rich wraps no line of code
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def numbered(output: str) -> dict[int, str]:
    """{line number: code} from rich's line-numbered code (one column; the left one when side by side)."""
    found = {}
    for line in output.splitlines():
        m = re.match(r"^\s*(\d+) (.*?)\s*$", line)
        if m:
            found.setdefault(int(m.group(1)), m.group(2))
    return found


# --- show ----------------------------------------------------------------------------------------------------------


def test_show_prints_one_reference_method_with_its_line_numbers_and_contract(workspace):
    workspace_in(workspace, "pristine")
    result = invoke("show", "reference:attention.forward")
    assert result.exit_code == 0, result.output
    lines, first = inspect.getsourcelines(ref.CausalSelfAttention.forward)  # independent of the ast cut
    shown = numbered(result.output)
    assert sorted(shown) == list(range(first, first + len(lines)))
    assert [shown[first + i].strip() for i in range(len(lines))] == [line.strip() for line in lines]
    contract = BY_NAME["attention"]
    assert contract.signature.split(";")[0] in " ".join(result.output.split())
    assert "def attend" not in result.output and "def __init__" not in result.output  # that method only


def test_show_a_staticmethod_a_function_component_and_a_helper(workspace):
    workspace_in(workspace, "pristine")
    apply = invoke("show", "reference:rotary.apply")
    assert "@staticmethod" in apply.output and "def apply" in apply.output and "def precompute" not in apply.output
    init = invoke("show", "reference:init")
    assert "def init_weights(model" in init.output
    helper = invoke("show", "reference:generate.sample_next_token")
    assert "def sample_next_token" in helper.output and "def generate" not in helper.output


@pytest.mark.parametrize("state, student_line", [
    ("pristine", "TODO: Implement attention.forward"),
    ("half", "TODO: Implement attention.forward"),  # __init__ written, forward not yet
    ("finished", "grouped = self.n_head != self.n_kv_head"),
])
def test_side_by_side_puts_the_learners_method_beside_the_reference(workspace, state, student_line):
    workspace_in(workspace, state)
    result = invoke("show", "reference:attention.forward", "--side-by-side", "student")
    assert result.exit_code == 0, result.output
    assert "reference:attention" in result.output and "student:attention" in result.output
    assert student_line in result.output
    assert "q = self.c_q(x).view(B, T, self.n_head, self.head_dim)" in result.output  # the reference's side


@pytest.mark.parametrize("state", ["pristine", "half", "finished"])
def test_show_the_learners_own_init(workspace, state):
    workspace_in(workspace, state)
    result = invoke("show", "student:attention.__init__")
    assert result.exit_code == 0, result.output
    written = state != "pristine"
    assert ("self.c_q = nn.Linear" in result.output) is written
    assert ("TODO: Implement attention.__init__" in result.output) is not written


def test_a_file_that_does_not_parse_still_shows_the_method(workspace):
    path = workspace_in(workspace, "finished")
    path.write_text(FINISHED_ATTENTION.replace("        B, T, C = x.shape", "        B, T, C = x.shape(", 1))
    result = invoke("show", "student:attention.forward")
    assert result.exit_code == 0, result.output
    assert "the file does not parse" in result.output and "return self.c_proj(out)" in result.output
    assert "def __init__" not in result.output


def test_side_by_side_with_a_method_the_other_side_lacks(workspace, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the note names the temporary folder: keep it on one line
    workspace_in(workspace, "finished")
    result = invoke("show", "reference:attention.attend", "--side-by-side", "student")
    assert result.exit_code == 0, result.output
    assert "defines no CausalSelfAttention.attend" in result.output


@pytest.mark.parametrize("args, code, message", [
    (["show", "reference:attention.nope"], WorkspaceError.exit_code, "defines no CausalSelfAttention.nope; it has"),
    (["show", "reference"], UseSpecError.exit_code, "show prints one component or method"),
    (["show", "nosuch:mlp"], UseSpecError.exit_code, "unknown implementation set 'nosuch'"),
    (["show", "reference:mlp."], UseSpecError.exit_code, "names no method after '.'"),
])
def test_show_bad_targets_are_one_line(workspace, args, code, message):
    workspace_in(workspace, "pristine")
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_methods_of_and_find_part_agree_with_inspect():
    source = component_source("reference", "attention")
    assert methods_of(source) == ["__init__", "forward", "attend"]
    part = find_part(source, "attend")
    lines, first = inspect.getsourcelines(ref.CausalSelfAttention.attend)
    assert (part.start, part.end) == (first, first + len(lines) - 1)


# --- diff ----------------------------------------------------------------------------------------------------------


def check_hunks(diff_text: str, old: str, new: str) -> int:
    """Every hunk's lines must be the files' lines at the numbers its header gives; returns the hunk count."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    hunks = re.split(r"^(@@ .*)$", diff_text, flags=re.M)[1:]
    for header, body in zip(hunks[::2], hunks[1::2]):
        m = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", header)
        o, n = int(m.group(1)), int(m.group(3))
        body_lines = [line for line in body.split("\n")[1:] if line or body.endswith("\n")]
        olds = [line[1:] for line in body_lines if line[:1] in (" ", "-")]
        news = [line[1:] for line in body_lines if line[:1] in (" ", "+")]
        assert olds == old_lines[o - 1:o - 1 + len(olds)], header
        assert news == new_lines[n - 1:n - 1 + len(news)], header
    return len(hunks) // 2


def test_diff_of_a_pristine_file_says_nothing_is_written(workspace):
    workspace_in(workspace, "pristine")
    result = invoke("diff", "student:attention")
    assert result.exit_code == 0 and "is still the pristine skeleton: nothing written yet" in result.output


def test_diff_of_a_half_written_file_shows_what_was_written(workspace):
    path = workspace_in(workspace, "half")
    result = invoke("diff", "student:attention")
    assert result.exit_code == 0, result.output
    assert "+        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)" in result.output
    assert '-        raise NotImplementedError(' in result.output
    d = diff_sources(component_source("pristine", "attention"), component_source("student", "attention"))
    assert check_hunks(d.text, pristine_text("attention"), path.read_text()) >= 1
    assert f"+{d.added} -{d.removed} lines" in result.output and d.added > 5


def test_diff_against_the_reference_keeps_the_files_line_numbers(workspace):
    path = workspace_in(workspace, "finished")
    reference = component_source("reference", "attention")
    whole = diff_sources(reference, component_source("student", "attention"))
    assert check_hunks(whole.text, reference.text, path.read_text()) >= 1
    assert '"""attention, as a learner wrote it' not in whole.text  # module docstrings are left out
    method = diff_sources(reference, component_source("student", "attention"), "forward")
    assert check_hunks(method.text, reference.text, path.read_text()) >= 1
    assert "def __init__" not in method.text
    result = invoke("diff", "student:attention.forward", "--against", "reference")
    assert result.exit_code == 0 and "+        grouped = self.n_head != self.n_kv_head" in result.output


def test_diff_of_a_finished_copy_of_the_reference_is_empty(workspace):
    workspace_in(workspace, "pristine")
    (workspace / "mlp.py").write_text(component_source("reference", "mlp").text)
    result = invoke("diff", "student:mlp", "--against", "reference")
    assert result.exit_code == 0 and "is the same as reference's mlp" in result.output


def test_diff_needs_a_component(workspace):
    workspace_in(workspace, "pristine")
    result = invoke("diff", "student")
    assert result.exit_code == UseSpecError.exit_code and "diff compares one component" in result.output


def test_diff_of_a_missing_file_is_one_line(workspace):
    workspace_in(workspace, "pristine")
    (workspace / "mlp.py").unlink()
    result = invoke("diff", "student:mlp")
    assert result.exit_code == WorkspaceError.exit_code
    assert "mlp.py is missing; restore the skeleton with `nanogpt reset student:mlp`" in result.output
