"""How the CLI reports failures: one clear line for a user's mistake, the traceback only behind `--debug`.

An exception from component code gets a short panel instead (see `nanogpt_core.learn.diagnose`): which component and
method, the TODO text or the kind of bug, the contract's shapes, the reference file to read and the command to run
again. A skeleton's TODO exits with 3, any other error inside a component with 4.
"""

from __future__ import annotations

import re
import shlex
import traceback
from dataclasses import dataclass, field

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nanogpt_core.errors import NanoGPTError
from nanogpt_core.learn.diagnose import Diagnosis, diagnose
from nanogpt_core.model.use_spec import resolve_use

_REFERENCE_TAIL = re.compile(r"\s*Reference:\s*\S+\s*$")
EXIT_INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT


@dataclass
class Invocation:
    """What error reporting needs to know of the command line, filled in by click as it parses the options (the
    root context's `obj`): the `--use` spec (so a diagnosis can name the swapped-in suspects) and `--debug`."""

    argv: list[str] = field(default_factory=list)
    use: str | None = None
    debug: bool = False


def remember_use(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Option callback for every `--use`: record the spec for error reporting, pass the value on unchanged."""
    if value is not None and isinstance(ctx.obj, Invocation):
        ctx.obj.use = value
    return value


def remember_debug(ctx: click.Context, param: click.Parameter, value) -> object:
    """Option callback for every `--debug`: any value but off shows tracebacks."""
    if value and isinstance(ctx.obj, Invocation):
        ctx.obj.debug = True
    return value


def debug_option(command):
    """`--debug` on a command that has no trace of its own: the full traceback of an error."""
    return click.option("--debug", is_flag=True, expose_value=False, callback=remember_debug, is_eager=True,
                        help="Show the full traceback of an error.")(command)


def invocation_debug() -> bool:
    """Whether the running command was given --debug (read from the root context's Invocation)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(Invocation) if ctx is not None else None
    return bool(obj and obj.debug)


def rerun_command(argv: list[str]) -> str:
    """The command the user ran, to copy and run again."""
    return "nanogpt " + shlex.join(argv) if argv else "nanogpt"


def _chosen_use(spec: str | None) -> dict[str, str] | None:
    """{component: impl_set} of the command's `--use`, so a diagnosis can name the swapped-in suspects."""
    if spec is None:
        return None
    try:
        return resolve_use(spec)
    except NanoGPTError:
        return None


def render_diagnosis(d: Diagnosis, command: str, console: Console | None = None) -> None:
    """Print the panel for one diagnosis (to stderr by default)."""
    console = console or Console(stderr=True, width=max(100, Console(stderr=True).width), highlight=False)
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold")
    rows.add_column(overflow="fold")
    if d.kind == "todo":
        title = f"Not implemented yet: {d.where}" + (f" ({d.impl_set})" if d.impl_set else "")
        todo = _REFERENCE_TAIL.sub("", d.message).removeprefix("TODO: ").strip()  # the reference has its own row
        rows.add_row("TODO", Text(todo))
    else:
        title = f"Error in {d.where}" + (f" ({d.impl_set})" if d.impl_set else "")
        rows.add_row("error", Text(d.error))
    if d.file:
        rows.add_row("your code", Text(f"{d.file}:{d.line}" + (f"  in {d.qualname}" if d.qualname else "")))
    if d.reference_file:
        rows.add_row("reference", Text(d.reference_file))
    if d.signature:
        rows.add_row("contract", Text(d.signature))
    if d.shapes:
        rows.add_row("shapes", Text(d.shapes))
    if d.actual and d.kind != "todo":
        rows.add_row("tensors here", Text("\n".join(d.actual)))
    if d.suspects:
        rows.add_row("suspects", ", ".join(d.suspects))
    rows.add_row("hint", Text(d.hint))
    rows.add_row("run again", Text(command, style="bold cyan"))
    if d.component:
        rows.add_row("check it", Text(f"nanogpt check {d.impl_set or 'student'}:{d.component}", style="cyan"))
    style = "yellow" if d.kind == "todo" else "red"
    console.print(Panel(rows, title=Text(title), title_align="left", border_style=style, expand=False))
    if d.kind != "todo" and "--debug" not in command:
        console.print("(run again with --debug for the full traceback)")


def report_exception(exc: BaseException, invocation: Invocation) -> int:
    """Print what went wrong and return the exit code."""
    debug = invocation.debug
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    if isinstance(exc, NanoGPTError):
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    try:
        diagnosis = diagnose(exc, _chosen_use(invocation.use))
    except Exception:  # a failing diagnosis must never hide the original error
        diagnosis = None
    if diagnosis is not None:
        render_diagnosis(diagnosis, rerun_command(invocation.argv))
        return diagnosis.exit_code
    hint = "" if debug else " (run again with --debug for the traceback)"
    click.echo(f"Error: {type(exc).__name__}: {exc}{hint}", err=True)
    return 1
