"""`nanogpt diff student:attention`: what you wrote — your file against the pristine skeleton, or the reference.

    nanogpt diff student:attention                        # your file against the skeleton you started from
    nanogpt diff student:attention --against reference    # against the reference (module docstrings left out)
    nanogpt diff student:attention.forward --against reference   # one method
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.text import Text

from nanogpt_cli.errors import debug_option
from nanogpt_core.errors import UseSpecError
from nanogpt_core.learn.source import PRISTINE, component_source, diff_sources
from nanogpt_core.model.registry import STUDENT_SET
from nanogpt_core.model.use_spec import parse_method_target


def _line_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("@@"):
        return "cyan"
    return {"+": "green", "-": "red"}.get(line[:1], "")


@click.command("diff")
@click.argument("target", metavar="student:COMPONENT[.METHOD]")
@click.option("--against", default=PRISTINE, show_default=True, metavar="pristine|SET",
              help="What to compare with: the pristine skeleton, or an implementation set such as reference.")
@debug_option
def diff_command(target: str, against: str) -> None:
    """Show the lines you changed, as a unified diff: your file against the pristine skeleton (or --against SET).

    Line numbers in the hunk headers are the files' own, so you can jump to them in your editor.
    """
    chosen = parse_method_target(target, "diff target")
    if chosen.component is None:
        raise UseSpecError(f"diff compares one component (or method) at a time; name it, e.g. "
                           f"'{STUDENT_SET}:attention' or '{STUDENT_SET}:attention.forward'.")
    new = component_source(chosen.impl_set, chosen.component)
    old = component_source(against, chosen.component)
    result = diff_sources(old, new, chosen.method)
    console = Console(width=max(100, Console().width), highlight=False)
    what = new.label + (f" ({chosen.method})" if chosen.method else "")
    versus = "the pristine skeleton" if against == PRISTINE else f"{against}'s {chosen.component}"
    if not result.text:
        same = "is still the pristine skeleton: nothing written yet" if against == PRISTINE \
            else f"is the same as {versus}"
        console.print(Text(f"{what} {same}."))
        return
    for line in result.text.splitlines():  # never wrapped: a wrapped line would lose its +/- in front
        console.print(Text(line, style=_line_style(line)), soft_wrap=True)
    console.print(Text(f"{what} against {versus}: +{result.added} -{result.removed} lines"))
