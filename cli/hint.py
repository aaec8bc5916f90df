"""`nanogpt hint student:attention.forward`: one more hint per call — the idea, the torch API, the shape recipe.

    nanogpt hint                              # the next TODO a run meets, in your files
    nanogpt hint student:attention            # attention's next TODO
    nanogpt hint student:attention.forward    # that method; again for the next level
    nanogpt hint student:attention.forward --level 3
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nanogpt_cli.errors import debug_option
from nanogpt_core.errors import UseSpecError
from nanogpt_core.learn.hints import LEVELS, HintShown, take_hint
from nanogpt_core.model.registry import STUDENT_SET
from nanogpt_core.model.use_spec import parse_method_target


def render_hint(shown: HintShown, console: Console) -> None:
    """The levels taken so far, the newest in full colour, and what the next call gives."""
    where = f"{shown.component}.{shown.method}"
    if shown.note:
        console.print(Text(f"({shown.note})", style="dim"))
    rows = Table.grid(padding=(0, 2))
    rows.add_column(justify="right")
    rows.add_column(style="bold", no_wrap=True)
    rows.add_column(overflow="fold")
    for n in range(1, shown.level + 1):
        style = "" if n == shown.level else "dim"
        rows.add_row(Text(str(n), style=style), Text(LEVELS[n - 1], style=style), Text(shown.hint.level(n),
                                                                                      style=style))
    title = f"Hint {shown.level} of {len(LEVELS)} for {where}: {LEVELS[shown.level - 1]}"
    console.print(Panel(rows, title=Text(title), title_align="left", border_style="cyan", expand=False))
    if shown.last:
        console.print(Text(f"That was the last hint for {where}. Still stuck? `nanogpt show reference:{where}` "
                           f"shows the reference's method: read it, close it, then write yours."), soft_wrap=True)
    else:
        console.print(Text(f"Next: `nanogpt hint student:{where}` gives {LEVELS[shown.level]}."), soft_wrap=True)


@click.command("hint")
@click.argument("target", default=STUDENT_SET, metavar="[student[:COMPONENT[.METHOD]]]")
@click.option("--level", type=int, default=None, metavar="N",
              help="Show the hints up to level N (1 the idea, 2 the torch API, 3 the shape recipe) instead of one "
                   "more than last time.")
@debug_option
def hint_command(target: str, level: int | None) -> None:
    """A hint for a method you are writing, one level more per call: the idea, the torch API, the shape recipe.

    Without a method, the hint is for the next TODO a run meets in your files. Hints never give the solution;
    `nanogpt status` counts the ones you took.
    """
    chosen = parse_method_target(target, "hint target")
    if chosen.impl_set != STUDENT_SET:
        raise UseSpecError(f"hints are for the files you write: name them as '{STUDENT_SET}:COMPONENT[.METHOD]' "
                           f"(got {target!r}); `nanogpt show {target}` prints another set's code.")
    shown = take_hint(chosen.component, chosen.method, level)
    render_hint(shown, Console(width=max(100, Console().width), highlight=False))
