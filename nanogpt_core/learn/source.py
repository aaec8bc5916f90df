"""The source of one component, or of one of its methods, in any implementation set: what `show` and `diff` print.

The seed says "open the reference side by side"; a whole file is more than a learner needs at a TODO. Here a
method is cut out of its file by the file's syntax tree (`ast`), decorators included, with its line numbers, so
`nanogpt show reference:attention.forward` prints just that method. The learner's file is read from the workspace
(`nanogpt_core.learn.workspace.student_file`), any other set's from the file its implementation was defined in.
A half-written file that does not parse still shows: the method is then cut out by its indentation.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from nanogpt_core.errors import WorkspaceError
from nanogpt_core.files import display_path
from nanogpt_core.learn.workspace import pristine_text, student_file, student_text
from nanogpt_core.model.code_objects import implementation_file
from nanogpt_core.model.contracts import BY_NAME
from nanogpt_core.model.registry import STUDENT_SET, get_implementation
from nanogpt_core.model.use_spec import known_component, known_set

PRISTINE = "pristine"  # the skeleton as shipped, for `diff --against pristine`


@dataclass(frozen=True)
class SourceFile:
    impl_set: str  # "student", "reference", ... or "pristine"
    component: str
    label: str  # where it is, as the user can open it
    text: str


@dataclass(frozen=True)
class Snippet:
    """A part of a file: one method, one function or the component's class."""

    name: str  # "CausalSelfAttention.forward", "generate", "CausalSelfAttention"
    start: int  # first line, 1-based (the first decorator's)
    end: int  # last line
    text: str
    parsed: bool = True  # False: the file has a syntax error and the part was found by its indentation


def component_source(impl_set: str, component: str, directory: Path | None = None) -> SourceFile:
    """The file that holds `impl_set`'s `component`: the workspace's for the learner, the skeleton for "pristine"."""
    known_component(component)
    if impl_set == PRISTINE:
        return SourceFile(PRISTINE, component, f"the pristine skeleton of {component}", pristine_text(component))
    if impl_set == STUDENT_SET:
        path = student_file(component, directory)
        return SourceFile(STUDENT_SET, component, display_path(path), student_text(component, directory))
    known_set(impl_set)
    implementation = get_implementation(impl_set, component)
    doc = getattr(implementation, "__doc__", "") or ""
    if doc.startswith("(broken) "):  # a component file that does not import: its placeholder says why
        raise WorkspaceError(doc.removeprefix("(broken) "))
    path = implementation_file(implementation)
    if path is None or not Path(path).is_file():
        raise WorkspaceError(f"{impl_set}:{component} has no source file to show ({implementation!r}).")
    return SourceFile(impl_set, component, display_path(path), Path(path).read_text(encoding="utf-8"))


def find_part(source: SourceFile, method: str | None) -> Snippet:
    """The component's entry (class or function) when `method` is None; else that method of the entry, or a
    module-level function of that name (a helper such as generate's `sample_next_token`)."""
    entry = BY_NAME[source.component].entry
    if method in ("__call__", entry) and BY_NAME[source.component].kind == "function":
        method = None  # a function component: its method is the function itself
    try:
        tree = ast.parse(source.text)
    except SyntaxError as exc:
        return _by_indentation(source, entry, method, exc)
    top = {node.name: node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef,
                                                                       ast.AsyncFunctionDef))}
    node = top.get(entry)
    if node is None:
        raise WorkspaceError(f"{source.label} defines no {entry}, which the {source.component} contract needs.")
    name = entry
    if method is not None:
        inner = {n.name: n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))} \
            if isinstance(node, ast.ClassDef) else {}
        if method in inner:
            node, name = inner[method], f"{entry}.{method}"
        elif method in top:
            node, name = top[method], method
        else:
            where = f"{entry}.{method}" if isinstance(node, ast.ClassDef) else f"function {method}"
            others = [f"{entry}.{n}" for n in inner] + [n for n in top if n != entry or not inner]
            raise WorkspaceError(f"{source.label} defines no {where}; it has: {', '.join(others)}.")
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = source.text.splitlines()
    return Snippet(name, start, node.end_lineno or start, "\n".join(lines[start - 1:node.end_lineno]))


def methods_of(source: SourceFile) -> list[str]:
    """The names of the functions the component's entry defines (a function component: the function itself)."""
    try:
        tree = ast.parse(source.text)
    except SyntaxError:
        return []
    entry = BY_NAME[source.component].entry
    for node in tree.body:
        if getattr(node, "name", None) == entry:
            if isinstance(node, ast.ClassDef):
                return [n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            return [entry]
    return []


def _by_indentation(source: SourceFile, entry: str, method: str | None, error: SyntaxError) -> Snippet:
    """A method of a file that does not parse: from its `def` line to the next line indented no deeper."""
    name = method or entry
    lines = source.text.splitlines()
    pattern = re.compile(rf"^(\s*)(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b")
    for i, line in enumerate(lines):
        m = pattern.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        start = i
        while start > 0 and lines[start - 1].strip().startswith("@"):
            start -= 1
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():
            end -= 1
        return Snippet(name if method is None else f"{entry}.{method}", start + 1, end,
                       "\n".join(lines[start:end]), parsed=False)
    raise WorkspaceError(f"{source.label} does not parse (SyntaxError: {error.msg}, line {error.lineno}) and no "
                         f"`def {name}` was found in it; fix the line, or restore the skeleton with "
                         f"`nanogpt reset student:{source.component}`.")


def strip_module_docstring(text: str) -> tuple[str, int]:
    """The text without its leading module docstring, and how many lines were cut (to keep line numbers right)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text, 0
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines = text.splitlines(keepends=True)
        cut = first.end_lineno or 0
        while cut < len(lines) and not lines[cut].strip():
            cut += 1
        return "".join(lines[cut:]), cut
    return text, 0


# --- what changed ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceDiff:
    old: SourceFile
    new: SourceFile
    part: str | None  # the method compared, or None for the whole file
    text: str  # a unified diff whose hunk headers carry the files' own line numbers; "" when equal
    added: int
    removed: int


_HUNK_RE = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def diff_sources(old: SourceFile, new: SourceFile, method: str | None = None, context: int = 3) -> SourceDiff:
    """`new` against `old`: one method of each, or the whole files (without their module docstrings unless `old`
    is the skeleton, whose docstring the learner's file shares)."""
    if method is not None:
        (a, a_start), (b, b_start) = _part_or_nothing(old, method), _part_or_nothing(new, method)
    else:
        a, b = old.text, new.text
        a_start = b_start = 1
        if old.impl_set != PRISTINE:
            (a, a_cut), (b, b_cut) = strip_module_docstring(a), strip_module_docstring(b)
            a_start, b_start = a_cut + 1, b_cut + 1
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), fromfile=_diff_label(old, method),
                                      tofile=_diff_label(new, method), n=context, lineterm=""))
    added = sum(1 for line in lines[2:] if line.startswith("+"))
    removed = sum(1 for line in lines[2:] if line.startswith("-"))
    shifted = [_shift_hunk(line, a_start - 1, b_start - 1) for line in lines]
    return SourceDiff(old, new, method, "\n".join(shifted), added, removed)


def _part_or_nothing(source: SourceFile, method: str) -> tuple[str, int]:
    try:
        part = find_part(source, method)
    except WorkspaceError:
        return "", 1  # the method is new on the other side: all of it is added (or removed)
    return part.text, part.start


def _diff_label(source: SourceFile, method: str | None) -> str:
    where = f"{source.impl_set}:{source.component}" + (f".{method}" if method else "")
    return f"{where} ({source.label})"


def _shift_hunk(line: str, old_offset: int, new_offset: int) -> str:
    m = _HUNK_RE.match(line)
    if not m:
        return line
    old_start, new_start = int(m.group(1)) + old_offset, int(m.group(3)) + new_offset
    return f"@@ -{old_start}{m.group(2) or ''} +{new_start}{m.group(4) or ''} @@" + line[m.end():]
