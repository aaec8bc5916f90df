"""`nanogpt reset`: restores pristine skeletons and keeps the learner's file. Always on a temporary copy of the
student folder (NANOGPT_STUDENT_DIR), never the real one."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nanogpt_cli.main import cli
from nanogpt_core.errors import UseSpecError
from nanogpt_core.learn.workspace import (
    BACKUP_DIR,
    STUDENT_DIR_ENV,
    is_pristine,
    pristine_text,
    reset_components,
    student_dir,
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
