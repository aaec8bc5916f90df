"""`nanogpt show reference:attention.forward`: one method, syntax-highlighted, with its component's contract.

    nanogpt show reference:attention.forward                       # the reference's method
    nanogpt show reference:attention.forward --side-by-side student  # and yours beside it
    nanogpt show student:rotary                                    # your whole Rotary class
"""

from __future__ import annotations

import click
from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from nanogpt_cli.errors import debug_option
from nanogpt_core.errors import UseSpecError, WorkspaceError
from nanogpt_core.learn.source import Snippet, SourceFile, component_source, find_part
from nanogpt_core.model.contracts import BY_NAME
from nanogpt_core.model.use_spec import parse_method_target

THEME = "ansi_dark"  # the terminal's own colours, on its own background


def code_view(source: SourceFile, snippet: Snippet) -> Syntax:
    return Syntax(snippet.text, "python", theme=THEME, line_numbers=True, start_line=snippet.start,
                  word_wrap=True, background_color="default")


def _heading(source: SourceFile, snippet: Snippet) -> Text:
    text = Text(f"{source.impl_set}:{source.component}", style="bold")
    text.append(f"  {snippet.name}  {source.label}:{snippet.start}-{snippet.end}", style="dim")
    if not snippet.parsed:
        text.append("  (the file does not parse: cut out by indentation)", style="yellow")
    return text


def contract_panel(component: str) -> Panel:
    contract = BY_NAME[component]
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold", no_wrap=True)
    rows.add_column(overflow="fold")
    for label, value in (("contract", contract.signature), ("shapes", contract.shapes),
                         ("guarantees", contract.guarantees), ("why", contract.why)):
        if value:
            rows.add_row(label, Text(value))
    return Panel(rows, title=Text(f"{component}: {contract.summary}"), title_align="left", border_style="blue")


def _other_side(impl_set: str, component: str, method: str | None) -> tuple[SourceFile | None, Snippet | Text]:
    """The same part in another set, or a line saying why there is none (a skeleton without that helper)."""
    try:
        source = component_source(impl_set, component)
        return source, find_part(source, method)
    except WorkspaceError as exc:
        return None, Text(f"({impl_set}: {exc})", style="yellow")


@click.command("show")
@click.argument("target", metavar="SET:COMPONENT[.METHOD]")
@click.option("--side-by-side", "beside", default=None, metavar="SET",
              help="Put the same method of another set beside it, e.g. --side-by-side student.")
@debug_option
def show_command(target: str, beside: str | None) -> None:
    """Print one method of a component (or its whole class or function), highlighted, with the contract.

    Examples: `nanogpt show reference:attention.forward`, `nanogpt show reference:rotary.apply --side-by-side
    student`.
    """
    chosen = parse_method_target(target, "show target")
    if chosen.component is None:
        raise UseSpecError(f"show prints one component or method; name it, e.g. '{chosen.impl_set}:attention.forward'.")
    source = component_source(chosen.impl_set, chosen.component)
    snippet = find_part(source, chosen.method)
    console = Console(width=max(160 if beside else 100, Console().width), highlight=False)
    console.print(contract_panel(chosen.component))
    if beside is None:
        console.print(_heading(source, snippet))
        console.print(code_view(source, snippet))
        return
    other, part = _other_side(beside, chosen.component, chosen.method)
    table = Table(show_lines=False, expand=True, box=None, padding=(0, 1))
    table.add_column(_heading(source, snippet), ratio=1)
    table.add_column(_heading(other, part) if other is not None and isinstance(part, Snippet)
                     else Text(f"{beside}:{chosen.component}", style="bold"), ratio=1)
    table.add_row(code_view(source, snippet), code_view(other, part) if isinstance(part, Snippet) else Group(part))
    console.print(table)
