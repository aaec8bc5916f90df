"""docs/reliability.md promises a test for every row: each test it names must exist, so a renamed or deleted test
cannot leave the table pointing at nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
DOC = TESTS.parent / "docs" / "reliability.md"
# `test_file.py::test_name[param]`, and the `::test_name` / `[param]` shorthands that follow one in the same cell
NAME = re.compile(r"`(?:(test_\w+\.py))?(?:::(test_\w+))?(\[[^`]*\])?`")


def cited() -> list[tuple[str, str | None]]:
    """(file, test function or None) for every test the table cites, shorthands resolved to the last full name."""
    found = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| ") or line.startswith(("| row", "| exit")):
            continue
        cells = line.split(" | ")
        if len(cells) < 3:
            continue
        file = function = None
        for m in NAME.finditer(cells[1]):
            file = m.group(1) or file
            function = m.group(2) or (function if not m.group(1) else None)
            if file:
                found.append((file, function))
    return found


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_every_row_cites_a_test():
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith(("| row", "| exit", "| 0 ", "| 1 ", "| 2 ", "| 3 ",
                                                                 "| 4 ", "| 130 ", "| 143 "))]
    assert len(rows) >= 45
    for row in rows:
        assert NAME.search(row.split(" | ")[1]), f"no test named in: {row}"


def test_every_cited_test_exists():
    names = cited()
    assert len(names) >= 60
    for file, function in names:
        path = TESTS / file
        assert path.is_file(), f"docs/reliability.md cites {file}, which does not exist"
        if function:
            assert function in functions_in(path), f"docs/reliability.md cites {file}::{function}, which does not exist"
