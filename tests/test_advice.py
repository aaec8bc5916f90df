"""No advice that cannot be followed: every command and option that a message, a panel, a skeleton or a doc page
tells the user to run exists, and `--help` of that command lists the option.

Commands are collected from the docs (README, docs/*.md, the example plugin's README: their code spans and blocks)
and from every string in the code (messages, hints, fixes, docstrings, f-strings with their placeholders blanked),
so a renamed option or a command that never existed fails here, not in front of a learner.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nanogpt_cli.main import cli
from nanogpt_core.learn.status import QUICK_TRAIN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "nanogpt-variants" / "README.md"]
CODE = [p for folder in ("nanogpt_core", "cli", "impls", "examples/nanogpt-variants/nanogpt_variants")
        for p in sorted((ROOT / folder).rglob("*.py"))] + sorted((ROOT / "impls" / "pristine").glob("*.py.txt"))
# `nanogpt <command> [<subcommand>] <rest of the command>`; the rest stops where a code span, a quote or a
# parenthesis ends the command
COMMAND = re.compile(r"(?:\bnanogpt|-m nanogpt_cli)[ \t]+([a-z][a-z-]*)((?:[ \t]+[^\s`\"'()]+)*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9_-]*)")
FENCE = re.compile(r"```.*?```", re.S)
SPAN = re.compile(r"`([^`\n]+)`")


def code_parts_of_markdown(text: str) -> list[str]:
    """What a doc tells the user to type: fenced blocks (lines joined where they continue with a backslash) and
    inline code spans."""
    blocks = [b.replace("\\\n", " ") for b in FENCE.findall(text)]
    return blocks + SPAN.findall(FENCE.sub("", text))


def strings_of_code(path: Path) -> list[str]:
    """Every string constant in a Python file, f-strings with each placeholder as '{}'."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
    # implicitly concatenated message strings are one Constant already; a message built from pieces is split
    return found


@functools.cache
def commands() -> dict[tuple[str, ...], click.Command]:
    """Every command path the CLI has: ('train',), ('data', 'download'), ..."""
    found: dict[tuple[str, ...], click.Command] = {}

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            found[(*prefix, name)] = command
            if isinstance(command, click.Group):
                walk(command, (*prefix, name))

    walk(cli, ())
    return found


@functools.cache
def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def advised() -> list[tuple[str, str]]:
    """(where, the command text) for every `nanogpt ...` the project tells a user to run."""
    found = []
    for doc in DOCS:
        for part in code_parts_of_markdown(doc.read_text(encoding="utf-8")):
            found += [(doc.name, m.group(0)) for m in COMMAND.finditer(part) if _is_command(m)]
    for path in CODE:
        for text in strings_of_code(path):
            found += [(path.name, m.group(0)) for m in COMMAND.finditer(text) if _is_command(m)]
    found.append(("learn/status.py QUICK_TRAIN_FLAGS", f"nanogpt train {QUICK_TRAIN_FLAGS}"))
    return found


def _is_command(match: re.Match) -> bool:
    """'nanogpt' is also a word of prose ("a nanogpt checkpoint", "nanogpt reads only safetensors"): a command is a
    known command word, or any word followed by what only a command line has (an option, a set:component)."""
    word, rest = match.group(1), match.group(2)
    return (word,) in commands() or bool(OPTION.search(rest) or re.search(r"\S:\S", rest))


def resolve(text: str) -> tuple[tuple[str, ...], list[str]]:
    """(the command path, the options given) of one advised command line; a shell comment (` # ...`) ends it."""
    words = re.sub(r"^(?:nanogpt|-m nanogpt_cli)\s+", "", re.split(r"\s#", text)[0]).split()
    path: tuple[str, ...] = ()
    while words and (*path, words[0]) in commands():
        path = (*path, words.pop(0))
    return path, [o.split("=")[0].split("[")[0] for w in words for o in OPTION.findall(w)]


ADVICE = advised()


def test_the_collection_finds_the_advice_we_know_of():
    texts = " ".join(text for _, text in ADVICE)
    for expected in ("nanogpt check", "nanogpt compare --use", "nanogpt train --use", "nanogpt status",
                     "nanogpt reset", "--debug"):
        assert expected in texts
    assert len(ADVICE) > 100


@pytest.mark.parametrize("where, text", ADVICE, ids=[f"{w}: {t[:60]}" for w, t in ADVICE])
def test_every_advised_command_and_option_exists(where, text):
    path, options = resolve(text)
    assert path, f"{where} tells the user to run {text!r}: no such command (`nanogpt --help` lists them)"
    command = commands()[path]
    if isinstance(command, click.Group):
        return  # `nanogpt data` alone: the group's help lists its commands
    shown = help_text(path)
    for option in options:
        spellings = {option, option.replace("_", "-")}
        assert any(re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", shown) for s in spellings), \
            f"{where} tells the user to run {text!r}, but `nanogpt {' '.join(path)} --help` has no {option}"
