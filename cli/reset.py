"""`nanogpt reset student:attention` (or `nanogpt reset student`): restore pristine skeletons, keeping a backup.

    nanogpt reset student:attention          # back up your file, restore the skeleton
    nanogpt reset --undo student:attention   # put the newest backup back (again: the one before it)
    nanogpt reset --list                     # every backup, newest first
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nanogpt_cli.errors import debug_option
from nanogpt_core.errors import UseSpecError
from nanogpt_core.files import display_path
from nanogpt_core.learn.workspace import (
    BACKUP_DIR,
    list_backups,
    reset_components,
    student_dir,
    student_file,
    undo_reset,
)
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import STUDENT_SET
from nanogpt_core.model.use_spec import one_set, parse_targets


def parse_reset_target(target: str) -> list[str] | None:
    """`student` -> None (every component); `student:attention,student:mlp` -> ["attention", "mlp"]."""
    if any(t.impl_set != STUDENT_SET for t in parse_targets(target, "reset target")):
        raise UseSpecError(f"only the {STUDENT_SET!r} set has pristine skeletons to restore; got {target!r} "
                           f"(write e.g. 'student:attention' or 'student').")
    return one_set(target, "reset target")[1]


def _undo(components: list[str] | None) -> None:
    named = components is not None
    for component in components or list(COMPONENT_NAMES):
        if not named and not list_backups(component):
            continue  # `--undo student`: only the components that have backups
        result = undo_reset(component)
        path = display_path(result.restored)
        if result.source is None:
            click.echo(f"{path} is already the oldest backup of {component}; there is nothing older to restore "
                       f"(`nanogpt reset --list student:{component}` shows them).")
            continue
        if result.kept is not None:
            click.echo(f"Backed up {path} -> {display_path(result.kept)}")
        saved = result.source.saved_at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"Restored  {path} from {display_path(result.source.path)} (saved {saved})")
    if not named and not list_backups():
        click.echo(f"There are no backups in {display_path(student_dir() / BACKUP_DIR)} yet; `nanogpt reset "
                   f"student:COMPONENT` makes one before it restores a skeleton.")


def _list(components: list[str] | None) -> None:
    backups = [b for c in components or [None] for b in list_backups(c)]
    if not backups:
        click.echo(f"No backups in {display_path(student_dir() / BACKUP_DIR)} yet; `nanogpt reset "
                   f"student:COMPONENT` makes one before it restores a skeleton.")
        return
    table = Table(title="Backups, newest first", title_justify="left")
    for column in ("component", "saved", "lines", "file", ""):
        table.add_column(column, overflow="fold")
    current = {c: student_file(c).read_bytes() if student_file(c).is_file() else None
               for c in {b.component for b in backups}}
    for b in backups:
        same = "= your file now" if b.path.read_bytes() == current[b.component] else ""
        table.add_row(b.component, b.saved_at.strftime("%Y-%m-%d %H:%M:%S"), str(b.lines()),
                      escape(display_path(b.path)), same)
    console = Console(width=max(100, Console().width), highlight=False)
    console.print(table)
    console.print("`nanogpt reset --undo student:COMPONENT` puts the newest back (again: the one before it).",
                  soft_wrap=True, markup=False)


@click.command("reset")
@click.argument("target", required=False, metavar="student[:COMPONENT,...]")
@click.option("--undo", is_flag=True, help="Restore the newest backup instead of the skeleton (your current file is "
              "backed up first); again, and it steps one backup further back.")
@click.option("--list", "list_", is_flag=True, help="List the backups (of the target's components, or all).")
@debug_option
def reset_command(target: str | None, undo: bool, list_: bool) -> None:
    """Restore student skeletons from the pristine copies; your current file is backed up first.

    Examples: `nanogpt reset student:attention`, `nanogpt reset student` (every component),
    `nanogpt reset --undo student:attention`, `nanogpt reset --list`.
    """
    if undo and list_:
        raise UseSpecError("--undo and --list do different things; use one of them.")
    if target is None and not list_:
        raise UseSpecError("reset needs a target: 'student:COMPONENT' (e.g. student:attention) or 'student' "
                           "for every component.")
    components = parse_reset_target(target) if target is not None else None
    if list_:
        return _list(components)
    if undo:
        return _undo(components)
    for result in reset_components(components):
        if result.backup is not None:
            click.echo(f"Backed up {display_path(result.restored)} -> {display_path(result.backup)}")
        else:
            click.echo(f"{display_path(result.restored)} was already the skeleton (nothing to back up)")
        click.echo(f"Restored  {display_path(result.restored)} from the pristine skeleton")
