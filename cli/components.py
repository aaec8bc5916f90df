"""`nanogpt components`: every component, its implementations and the plugin that provides each."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from nanogpt_cli.errors import debug_option
from nanogpt_core.model.contracts import COMPONENTS
from nanogpt_core.model.registry import STUDENT_SET, implementation_sets, registrations
from nanogpt_core.model.workspace_location import locate_student_set


@click.command("components")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
@debug_option
def components_command(as_json: bool) -> None:
    """List the components, their implementations and which plugin provides each."""
    regs = registrations()
    order = {s: i for i, s in enumerate(implementation_sets())}
    rows = []
    for component in COMPONENTS:
        impls = sorted((r for (s, c), r in regs.items() if c == component.name), key=lambda r: order[r.impl_set])
        rows.append((component, impls))
    if as_json:
        import json

        click.echo(json.dumps([
            {"component": c.name, "summary": c.summary, "signature": c.signature,
             "implementations": [{"set": r.impl_set, "plugin": r.plugin, "description": r.description} for r in impls]}
            for c, impls in rows
        ], indent=2))
        return
    table = Table(title="nanogpt components", show_lines=True)
    table.add_column("component", style="bold")
    table.add_column("implementations")
    table.add_column("plugin")
    table.add_column("description")
    for component, impls in rows:
        table.add_row(
            component.name,
            "\n".join(r.impl_set for r in impls),
            "\n".join(r.plugin for r in impls),
            component.summary,
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    if STUDENT_SET not in order:  # installed from a wheel, outside a workspace: say where the learner's set would be
        console.print(f"No {STUDENT_SET} set: {locate_student_set().problem}", markup=False, style="dim")
