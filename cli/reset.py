"""`nanogpt reset student:attention` (or `nanogpt reset student`): restore pristine skeletons, keeping a backup."""

from __future__ import annotations

from pathlib import Path

import click

from nanogpt_core.errors import UseSpecError
from nanogpt_core.learn.workspace import SKELETON_ENTRIES, STUDENT_SET, reset_components


def parse_targets(target: str) -> list[str] | None:
    """Map `student` to None (every component) and `student:attention,student:mlp` to ["attention", "mlp"]."""
    components: list[str] = []
    for item in (part.strip() for part in target.split(",")):
        impl_set, _, component = item.partition(":")
        if impl_set != STUDENT_SET:
            raise UseSpecError(f"only the {STUDENT_SET!r} set has pristine skeletons to restore; got {item!r} "
                               f"(write e.g. 'student:attention' or 'student').")
        if not component:
            return None
        if component not in SKELETON_ENTRIES:
            raise UseSpecError(f"unknown component {component!r}; components are: {', '.join(SKELETON_ENTRIES)}.")
        components.append(component)
    return components


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@click.command("reset")
@click.argument("target", metavar="student[:COMPONENT,...]")
def reset_command(target: str) -> None:
    """Restore student skeletons from the pristine copies; your current file is backed up first.

    Examples: `nanogpt reset student:attention`, `nanogpt reset student` (every component).
    """
    for result in reset_components(parse_targets(target)):
        if result.backup is not None:
            click.echo(f"Backed up {_show(result.restored)} -> {_show(result.backup)}")
        else:
            click.echo(f"{_show(result.restored)} was already the skeleton (nothing to back up)")
        click.echo(f"Restored  {_show(result.restored)} from the pristine skeleton")
