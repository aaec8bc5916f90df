"""How the CLI reports failures: one clear line for a user's mistake, the traceback only behind `--debug`."""

from __future__ import annotations

import sys
import traceback

import click

from nanogpt_core.errors import NanoGPTError

EXIT_INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT


def debug_requested(argv: list[str] | None = None) -> bool:
    """`--debug` anywhere on the command line (also `--debug=stats`) shows tracebacks."""
    args = sys.argv[1:] if argv is None else argv
    return any(a == "--debug" or a.startswith("--debug=") for a in args)


def report_exception(exc: BaseException, debug: bool) -> int:
    """Print what went wrong and return the exit code."""
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    if isinstance(exc, NanoGPTError):
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    hint = "" if debug else " (run again with --debug for the traceback)"
    click.echo(f"Error: {type(exc).__name__}: {exc}{hint}", err=True)
    return 1
