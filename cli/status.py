"""`nanogpt status`: how far each component of an implementation set is, and the next thing to do."""

from __future__ import annotations

import json
import re

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nanogpt_cli.errors import debug_option, remember_use
from nanogpt_core.learn.status import learner_status
from nanogpt_core.learn.workspace import without_reference_tail
from nanogpt_core.model.registry import STUDENT_SET

STATE_STYLE = {
    "not started": "dim",
    "raises TODO": "yellow",
    "raises an error": "red",
    "implemented": "cyan",
    "passes contract": "green",
    "matches reference": "bold green",
}


def _short(message: str) -> str:
    """A TODO without its 'TODO: Implement x.y — ' head and 'Reference: ...' tail (the table shows both)."""
    return without_reference_tail(re.sub(r"^TODO: Implement \S+ — ", "", message))


@click.command("status")
@click.option("--use", "impl_set", default=STUDENT_SET, show_default=True, metavar="SET", callback=remember_use,
              help="The implementation set to report on.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--no-checks", is_flag=True, help="Only the smoke run (faster): skip contract and reference checks.")
@debug_option
def status_command(impl_set: str, as_json: bool, no_checks: bool) -> None:
    """Show each component's state in the order a run meets it, and what to do next.

    States: not started, raises TODO, raises an error, implemented, passes contract, matches reference.
    """
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair on a shared machine
    report = learner_status(impl_set, with_checks=not no_checks)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    console = Console(width=max(100, Console().width), highlight=False)
    table = Table(title=f"nanogpt status: {impl_set}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("component", style="bold")
    table.add_column("state")
    table.add_column("checks", justify="right")
    table.add_column("hints", justify="right")
    table.add_column("detail", overflow="fold")
    for i, s in enumerate(report.components, 1):
        checks = f"{s.checks_passed}/{s.checks_total}" if s.checks_total else ""
        detail = (f"{s.method}: " if s.method else "") + _short(s.message)
        table.add_row(str(i), s.component, f"[{STATE_STYLE.get(s.state, '')}]{s.state}[/]", checks,
                      str(s.hints_taken) if s.hints_taken else "",
                      escape(detail[:120] + ("…" if len(detail) > 120 else "")))
    console.print(table)
    if report.workspace is not None:
        found = f", from {report.found_by}" if report.found_by else ""
        console.print(f"Your files: {escape(report.workspace)} (the {escape(report.impl_set)} set{escape(found)})")
    done = sum(s.done for s in report.components)
    taken = sum(s.hints_taken for s in report.components)
    console.print(f"{done}/{len(report.components)} components match the reference."
                  + (f" Hints taken: {taken} (`nanogpt hint` gives the next one)." if taken else ""))
    if report.next is not None:
        nxt = report.next
        console.print()
        console.print("[bold]Next:[/] " + escape(nxt.message))
        console.print(f"  run:   [bold cyan]{escape(nxt.command)}[/]")
        if nxt.check_command:
            console.print(f"  then:  [cyan]{escape(nxt.check_command)}[/]")
