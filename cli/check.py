"""`nanogpt check student:attention` (or `nanogpt check student`): run the contract checks, print pass/fail."""

from __future__ import annotations

import json

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from nanogpt_cli.errors import debug_option, invocation_debug
from nanogpt_core.checks import run_checks
from nanogpt_core.model.use_spec import one_set

STATUS_STYLE = {"pass": "green", "fail": "bold red", "not implemented": "yellow", "skipped": "dim"}


def _numbers(numbers: dict) -> str:
    parts = []
    for key, value in numbers.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.3g}")
        elif isinstance(value, (int, str, bool)):
            parts.append(f"{key}={value}")
    return ", ".join(parts)


@click.command("check")
@click.argument("target", metavar="SET[:COMPONENT,...]")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--device", default="cpu", show_default=True, help="Device to run the checks on.")
@debug_option
def check_command(target: str, as_json: bool, device: str) -> int:
    """Run the contract checks of one implementation set (or some of its components).

    Each check prints pass/fail with its numbers; a failing check names the likely bug and what to look at next.
    A component whose skeleton still raises NotImplementedError is reported as "not implemented". Exit code 0 when
    everything checked passes, 1 when a check fails or a component is not implemented.
    """
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair on a shared machine
    impl_set, components = one_set(target, "check target")
    results = run_checks(impl_set, components, device=device)
    checked = [r for r in results if r.status != "skipped"]
    ok = bool(checked) and all(r.status == "pass" for r in checked)
    if as_json:
        click.echo(json.dumps({"impl_set": impl_set, "passed": ok, "results": [r.to_dict() for r in results]},
                              indent=2))
        return 0 if ok else 1
    console = Console(width=max(110, Console().width), highlight=False)
    table = Table(title=f"nanogpt check {escape(target)}", title_justify="left")
    table.add_column("component", style="bold")
    table.add_column("check")
    table.add_column("result")
    table.add_column("numbers / detail", overflow="fold")
    for r in results:
        if r.status == "skipped" and components is None:
            continue  # a set that does not provide a component: nothing to say in a whole-set check
        detail = r.detail if r.status != "pass" else (_numbers(r.numbers) or r.detail)
        if r.status == "fail":
            numbers = _numbers(r.numbers)
            detail = (f"{r.diagnosis}: " if r.diagnosis else "") + r.detail + (f"\n[{numbers}]" if numbers else "") \
                + (f"\nwhere: {r.where}" if r.where else "") + (f"\n-> {r.hint}" if r.hint else "")
        if r.status == "not implemented":
            detail = f"{r.detail}\n-> implement it, then run `nanogpt check {impl_set}:{r.component}` again."
        style = STATUS_STYLE.get(r.status, "")
        table.add_row(Text(r.component), Text(("cause → " if r.cause else "") + r.name), Text(r.status, style=style),
                      Text(detail))
    console.print(table)
    if invocation_debug():
        for r in results:
            if r.traceback:
                console.print(Text(f"{r.component} / {r.name}:\n{r.traceback}"))
    counts = {s: sum(r.status == s for r in checked) for s in ("pass", "fail", "not implemented")}
    console.print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['not implemented']} not implemented.")
    return 0 if ok else 1
