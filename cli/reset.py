"""`nanogpt reset student:attention` (or `nanogpt reset student`): restore pristine skeletons, keeping a backup."""

from __future__ import annotations

from pathlib import Path

import click

from nanogpt_cli.errors import debug_option
from nanogpt_core.errors import UseSpecError
from nanogpt_core.learn.workspace import reset_components
from nanogpt_core.model.registry import STUDENT_SET
from nanogpt_core.model.use_spec import one_set, parse_targets


def parse_reset_target(target: str) -> list[str] | None:
    """`student` -> None (every component); `student:attention,student:mlp` -> ["attention", "mlp"]."""
    if any(t.impl_set != STUDENT_SET for t in parse_targets(target, "reset target")):
        raise UseSpecError(f"only the {STUDENT_SET!r} set has pristine skeletons to restore; got {target!r} "
                           f"(write e.g. 'student:attention' or 'student').")
    return one_set(target, "reset target")[1]


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@click.command("reset")
@click.argument("target", metavar="student[:COMPONENT,...]")
@debug_option
def reset_command(target: str) -> None:
    """Restore student skeletons from the pristine copies; your current file is backed up first.

    Examples: `nanogpt reset student:attention`, `nanogpt reset student` (every component).
    """
    for result in reset_components(parse_reset_target(target)):
        if result.backup is not None:
            click.echo(f"Backed up {_show(result.restored)} -> {_show(result.backup)}")
        else:
            click.echo(f"{_show(result.restored)} was already the skeleton (nothing to back up)")
        click.echo(f"Restored  {_show(result.restored)} from the pristine skeleton")
