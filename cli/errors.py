"""How the CLI reports failures: one clear line for a user's mistake, the traceback only behind `--debug`.

An exception from component code gets a short panel instead (see `nanogpt_core.learn.diagnose`): which component and
method, the TODO text or the kind of bug, your file and line as they are on disk, the reference's file where it is
installed and the `nanogpt show` command that prints the method to read, the contract's shapes and the command to
run again. A skeleton's TODO exits with 3, any other error inside a component with 4.
"""

from __future__ import annotations

import re
import shlex
import traceback
from dataclasses import dataclass, field

import click
import torch
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nanogpt_core.errors import NanoGPTError
from nanogpt_core.learn.diagnose import Diagnosis, diagnose
from nanogpt_core.learn.workspace import without_reference_tail
from nanogpt_core.model.registry import REFERENCE_SET
from nanogpt_core.model.use_spec import resolve_use

EXIT_INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT (SIGTERM: 143)


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
    """Option callback for every `--debug` (and `--debug-layer`): any value but off shows tracebacks."""
    if value is not None and value is not False and isinstance(ctx.obj, Invocation):
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
        todo = without_reference_tail(d.message).removeprefix("TODO: ").strip()  # the reference has its own rows
        rows.add_row("TODO", Text(todo))
    else:
        title = f"Error in {d.where}" + (f" ({d.impl_set})" if d.impl_set else "")
        rows.add_row("error", Text(d.error))
    if d.file:
        rows.add_row("your code", Text(f"{d.file}:{d.line}" + (f"  in {d.qualname}" if d.qualname else "")))
    if d.reference_file:
        rows.add_row("reference", Text(d.reference_file))
    if d.reference_command:
        rows.add_row("read it", Text(d.reference_command, style="cyan"))
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
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or a run stopped by SIGTERM (TrainingInterrupted says which)
        code = getattr(exc, "exit_code", EXIT_INTERRUPTED)
        click.echo("Interrupted." if code == EXIT_INTERRUPTED else "Terminated.", err=True)
        return code
    if isinstance(exc, NanoGPTError):
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    use = _chosen_use(invocation.use)
    try:
        diagnosis = diagnose(exc, use)
    except Exception:  # a failing diagnosis must never hide the original error
        diagnosis = None
    hint = "" if debug else " (run again with --debug for the traceback)"
    if is_out_of_memory(exc) and not _in_a_swapped_in_component(diagnosis, use):
        # the machine is too small for these settings; only a swapped-in component that allocates is suspect
        click.echo(f"Error: out of memory ({_first_line(exc)}); the model or the batch is too large for this "
                   f"device: use a smaller --depth or --device-batch-size, or another --device{hint}", err=True)
        return NanoGPTError.exit_code
    if diagnosis is not None:
        render_diagnosis(diagnosis, rerun_command(invocation.argv))
        return diagnosis.exit_code
    if isinstance(exc, SystemExit):
        click.echo(f"Error: something called sys.exit({exc.code!r}) in the middle of nanogpt's work, which stops it "
                   f"without saving or a word of why{hint}", err=True)
        return 1
    click.echo(f"Error: {type(exc).__name__}: {exc}{hint}", err=True)
    return 1


def _in_a_swapped_in_component(diagnosis: Diagnosis | None, use: dict[str, str] | None) -> bool:
    """Whether the error came from a non-reference implementation the model uses (no --use: all reference)."""
    if diagnosis is None or diagnosis.component is None or diagnosis.impl_set in (None, REFERENCE_SET):
        return False
    return (use or {}).get(diagnosis.component, REFERENCE_SET) == diagnosis.impl_set


_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|cannot allocate memory", re.I)


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (CUDA), or the CPU allocator's "can't allocate memory" RuntimeError."""
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and bool(_OUT_OF_MEMORY.search(str(exc))))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]
