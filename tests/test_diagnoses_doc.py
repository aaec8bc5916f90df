"""docs/diagnoses.md is the list of every diagnosis: one row per name in the code, with the fix the code prints, and
a mutant that must get exactly that name first (tests/test_compare.py runs each one through `compare`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from plugins.wrong_impls import BUGS

from nanogpt_core.checks import DIAGNOSES, LADDERS

TESTS = Path(__file__).parent
DOC = TESTS.parent / "docs" / "diagnoses.md"
CITED_TEST = re.compile(r"`(test_\w+\.py)::(test_\w+)`")


def rows() -> dict[str, list[str]]:
    """name -> the row's cells, for the table under '## Every diagnosis'."""
    text = DOC.read_text(encoding="utf-8").split("## Every diagnosis", 1)[1]
    found = {}
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| diagnosis |"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 5, line
        assert cells[0] not in found, f"two rows for {cells[0]!r}"
        found[cells[0]] = cells
    return found


def test_one_row_per_diagnosis_with_the_fix_the_code_prints():
    table = rows()
    assert set(table) == set(DIAGNOSES), set(table) ^ set(DIAGNOSES)
    for name, (_, detects, probe, fix, _) in table.items():
        assert detects and probe, name
        assert fix == DIAGNOSES[name], f"docs/diagnoses.md's fix for {name!r} is not the one the code prints"


def _functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.FunctionDef)}


def test_every_row_names_a_mutant_that_gets_exactly_that_diagnosis_first():
    for name, cells in rows().items():
        mutants = re.findall(r"`(bug-[\w-]+)`", cells[4])
        cited = CITED_TEST.findall(cells[4])
        assert mutants or cited, f"no mutant or test for {name!r}"
        for mutant in mutants:
            assert mutant in BUGS and BUGS[mutant][2] == name, (name, mutant)
        for file, function in cited:
            assert function in _functions(TESTS / file), f"{file}::{function} does not exist"
    named = {m for cells in rows().values() for m in re.findall(r"`(bug-[\w-]+)`", cells[4])}
    assert named == set(BUGS), set(BUGS) - named  # every mutant is in the table, under its diagnosis


def test_the_suite_holds_at_least_45_distinct_mutants():
    assert len(BUGS) >= 45 and len({id(implementation) for _, implementation, _ in BUGS.values()}) == len(BUGS)


def test_the_ladder_table_lists_every_probe_of_every_component():
    text = DOC.read_text(encoding="utf-8")
    for component, probes in LADDERS.items():
        line = next(line for line in text.splitlines() if line.startswith(f"| {component} | "))
        listed = [p.strip() for p in line.split(" | ")[1].rstrip(" |").split(",")]
        assert len(listed) == len(probes), (component, listed, [p.__name__ for p in probes])
