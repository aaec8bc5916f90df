"""`--debug=inside`: the shapes *inside* your own code, line by line, from Python's tracing hook.

The component trace (`nanogpt_core.model.trace`) shows what goes into and out of each component. Shape mistakes
happen between those two points — q, k and v inside an attention — so this traces the learner's own methods
statement by statement, the first time each runs, and prints what every statement bound:

    attention.py:25  B, T, C = x.size()  -> B=1, T=512, C=256
    attention.py:26  q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  -> q (1, 512, 2, 128) float32

It is built on `sys.settrace`, so the learner's code needs no print statements. The hook only follows frames whose
code lives in one of the given files (the implementations the run swapped in); every other call costs one lookup.
A tracer already installed (a debugger, coverage) keeps seeing everything else: frames that are not ours are
handed to it. A statement is the unit (a multi-line call is one line of output); a loop's statements are shown on
their first pass, with a count of the passes left out.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

MAX_STATEMENTS = 200  # per traced call: a method that runs more distinct statements than this is cut short, said so
MAX_TEXT = 90  # characters of a statement's source shown


# --- describing values ---------------------------------------------------------------------------------------------


def describe_tensor(t: torch.Tensor, stats: bool) -> str:
    """`(1, 512, 2, 128) float32`, with the device when it is not the CPU, and with `stats` the value range."""
    text = f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
    if t.device.type != "cpu":
        text += f" {t.device}"
    if stats and not t.is_meta and t.numel():
        with torch.no_grad():
            f = t.detach().float()
            finite = f[torch.isfinite(f)]
            if finite.numel():
                text += f" range [{finite.min().item():.4g}, {finite.max().item():.4g}]"
            bad = f.numel() - finite.numel()
            if bad:
                text += f" NaN={int(torch.isnan(f).sum())} Inf={int(torch.isinf(f).sum())}"
    return text


def describe_value(name: str, value: Any, stats: bool) -> str | None:
    """One binding as the trace shows it; None for values the trace leaves out (strings, configs, None, ...)."""
    if isinstance(value, torch.Tensor):
        return f"{name} {describe_tensor(value, stats)}"
    if isinstance(value, bool) or value is None:
        return f"{name}={value}"
    if isinstance(value, (int, float)):
        return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        shapes = ", ".join(str(tuple(v.shape)) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in value})
        return f"{name} ({shapes}) {'/'.join(dtypes)}"
    if isinstance(value, nn.Linear):
        return f"{name} Linear({value.in_features} -> {value.out_features}{', bias' if value.bias is not None else ''})"
    if isinstance(value, nn.Module):
        return f"{name} {type(value).__name__}"
    if isinstance(value, type):
        return f"{name}={value.__name__}"
    return None


def _attributes(obj: Any) -> dict[str, Any]:
    """What `self.x = ...` can bind on an object: for a module its submodules, parameters and buffers too."""
    try:
        found = {k: v for k, v in vars(obj).items() if not k.startswith("_") and k != "training"}
    except TypeError:
        return {}
    if isinstance(obj, nn.Module):
        for store in ("_modules", "_parameters", "_buffers"):
            found.update(vars(obj).get(store) or {})
    return found


# --- statements of a file ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    line: int  # the first line
    text: str  # its source on one line (a compound statement: its header only)


def _statements(path: str) -> dict[int, Statement]:
    """Each source line of `path` mapped to the innermost statement it belongs to."""
    source = "".join(linecache.getlines(path))
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    lines = source.splitlines()
    found: dict[int, Statement] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        end = node.end_lineno or node.lineno
        compound = isinstance(getattr(node, "body", None), list) and bool(node.body)
        if compound:  # its header: up to the first statement of its body
            end = max(node.lineno, node.body[0].lineno - 1)
            text = " ".join(line.strip() for line in lines[node.lineno - 1:end])
            text = text[: _header_end(text)]
        else:  # the code without its comments, on one line
            text = " ".join((ast.get_source_segment(source, node) or lines[node.lineno - 1]).split())
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        statement = Statement(node.lineno, text)
        for line in range(node.lineno, end + 1):
            if line not in found or found[line].line <= node.lineno:  # nested statements win over their parents
                found[line] = statement
    return found


def _header_end(text: str) -> int:
    """Where a compound statement's header ends (its last ':' before a comment)."""
    cut = text.find("#")
    head = text if cut < 0 else text[:cut]
    return head.rstrip().rfind(":") + 1 or len(text)


# --- the tracer ----------------------------------------------------------------------------------------------------


@dataclass
class _Call:
    """One traced call of a learner's function: where it is and what it has bound so far."""

    code: types.CodeType
    depth: int
    statements: dict[int, Statement]
    current: Statement | None = None
    before: dict[str, Any] = field(default_factory=dict)
    shown: set[int] = field(default_factory=set)
    repeats: int = 0
    printed: int = 0
    raised: str | None = None


class LineTracer:
    """Follows the first call of every function defined in `files` (real paths) and reports each statement."""

    def __init__(self, files: set[str], emit: Callable[[str], None], stats: bool = False,
                 allowed: Callable[[], bool] = lambda: True) -> None:
        self.files = {os.path.realpath(f) for f in files}
        self.emit = emit
        self.stats = stats
        self.allowed = allowed  # e.g. "we are in the layer --debug-layer asks for"
        self.done: set[types.CodeType] = set()
        self._ours: dict[str, bool] = {}  # co_filename -> in self.files, so each file is resolved once
        self._calls: dict[types.FrameType, _Call] = {}
        self._statements: dict[str, dict[int, Statement]] = {}
        self._previous: Any = None

    def __enter__(self) -> LineTracer:
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self._previous)
        self._calls.clear()

    # -- the hooks Python calls --

    def _global(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        ours = self._ours.get(code.co_filename)
        if ours is None:
            ours = self._ours[code.co_filename] = os.path.realpath(code.co_filename) in self.files
        if ours and not code.co_name.startswith("<") and code not in self.done and self.allowed():
            self.done.add(code)
            return self._start(frame)
        previous = self._previous
        return previous(frame, event, arg) if previous is not None else None

    def _local(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        call = self._calls.get(frame)
        if call is None:
            return None
        if event == "line":
            statement = call.statements.get(frame.f_lineno) or Statement(frame.f_lineno, _line(frame))
            if statement != call.current:
                self._finish(call, frame)
                self._begin(call, statement, frame)
        elif event == "exception":
            call.raised = f"{arg[0].__name__}: {arg[1]}".splitlines()[0][:MAX_TEXT]
        elif event == "return":
            self._finish(call, frame, final=True, returned=arg)
            del self._calls[frame]  # a generator is followed to its first yield only
            return None
        return self._local

    # -- what they report --

    def _start(self, frame: types.FrameType) -> Any:
        code = frame.f_code
        path = code.co_filename
        if path not in self._statements:
            self._statements[path] = _statements(path)
        call = _Call(code, len(self._calls), self._statements[path])
        self._calls[frame] = call
        args = [d for name in _parameters(code) if name != "self"
                and (d := describe_value(name, frame.f_locals.get(name), self.stats)) is not None]
        line, header = _def_line(path, code)
        self._say(call, line, header + (f"  <- {', '.join(args)}" if args else ""))
        call.before = self._bindings(frame)
        return self._local

    def _begin(self, call: _Call, statement: Statement, frame: types.FrameType) -> None:
        call.current = statement
        call.before = self._bindings(frame)

    def _finish(self, call: _Call, frame: types.FrameType, final: bool = False, returned: Any = None) -> None:
        """Report the statement that just ran: what it bound (or raised, or returned). `final`: the call ends."""
        statement, raised = call.current, call.raised
        call.current = call.raised = None
        if statement is not None:
            again = statement.line in call.shown
            call.repeats += again
            if not again or raised or (final and returned is not None):
                call.shown.add(statement.line)
                self._say(call, statement.line, statement.text + self._outcome(call, frame, final, returned, raised))
        if final and call.repeats:
            self._say(call, None, f"(loops ran {call.repeats} more statements; only the first pass of each is shown)")

    def _outcome(self, call: _Call, frame: types.FrameType, final: bool, returned: Any, raised: str | None) -> str:
        after = self._bindings(frame)
        changed = [d for name, value in after.items()
                   if call.before.get(name, _MISSING) is not value
                   and (d := describe_value(name, value, self.stats)) is not None]
        if raised is not None:
            changed.append(f"!! {raised}")
        elif final and returned is not None:
            kind = "yields" if call.code.co_flags & inspect.CO_GENERATOR else "returns"
            changed.append(f"{kind} {_describe_result(returned, self.stats)}")
        return f"  -> {', '.join(changed)}" if changed else ""

    def _bindings(self, frame: types.FrameType) -> dict[str, Any]:
        found = dict(frame.f_locals)
        owner = found.get("self")
        if owner is not None:
            found.update({f"self.{k}": v for k, v in _attributes(owner).items()})
        return found

    def _say(self, call: _Call, line: int | None, text: str) -> None:
        if call.printed >= MAX_STATEMENTS:
            return
        call.printed += 1
        where = f"{Path(call.code.co_filename).name}:{line}  " if line is not None else ""
        self.emit("    " + "  " * call.depth + where + text)
        if call.printed == MAX_STATEMENTS:
            self.emit("    " + "  " * call.depth + f"(stopped after {MAX_STATEMENTS} statements)")


_MISSING = object()


def _describe_result(value: Any, stats: bool) -> str:
    """A returned (or yielded) value: `(1, 16, 32) float32`, `60`, or its type."""
    if isinstance(value, (bool, int, float)):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    shown = describe_value("", value, stats)
    return shown.strip() if shown else type(value).__name__


def _parameters(code: types.CodeType) -> list[str]:
    spec = inspect.getargs(code)
    return spec.args + [n for n in (spec.varargs, spec.varkw) if n]


def _line(frame: types.FrameType) -> str:
    return linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()[:MAX_TEXT]


def _def_line(path: str, code: types.CodeType) -> tuple[int, str]:
    """The line number and text of a function's `def` (after its decorators), its parameters on one line."""
    lines = linecache.getlines(path)
    for i in range(code.co_firstlineno - 1, min(len(lines), code.co_firstlineno + 20)):
        text = lines[i].strip()
        if text.startswith(("def ", "async def ")):
            head = [text]
            j = i
            while not head[-1].rstrip().endswith(":") and j + 1 < len(lines) and j < i + 10:
                j += 1
                head.append(lines[j].strip())
            joined = " ".join(head).replace("( ", "(").replace(" )", ")")
            return i + 1, joined[:MAX_TEXT - 1] + "…" if len(joined) > MAX_TEXT else joined
    return code.co_firstlineno, f"def {code.co_name}(...)"
