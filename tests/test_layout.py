"""The architecture, as the imports draw it: layers that point one way, no cycles, implementations that depend on the
model's contracts only (docs/architecture.md draws the same picture).

Imports are read from the source (every `import` and `from ... import`, at module level or inside a function), so a
late import inside a function cannot hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"nanogpt_core": ROOT / "nanogpt_core", "nanogpt_cli": ROOT / "cli", "nanogpt_impls": ROOT / "impls"}

# Each module's layer (by its package); a module may import its own package and any lower layer, nothing above.
LAYERS = {
    "nanogpt_core.errors": 0,
    "nanogpt_core.files": 1, "nanogpt_core.device": 1,
    "nanogpt_core.model": 2, "nanogpt_core.data": 2,
    "nanogpt_core.io": 3, "nanogpt_core.checks": 3, "nanogpt_core.evals": 3, "nanogpt_core.inspection": 3,
    "nanogpt_core.train": 4,
    "nanogpt_core.compare": 5, "nanogpt_core.learn": 5,
    "nanogpt_core": 6,  # the package's public API re-exports from every layer
    "nanogpt_cli": 7,
}
# the contracts, what they raise, and the device facts an implementation may adapt to (Muon's Newton-Schulz dtype)
IMPLS_MAY_IMPORT = ("nanogpt_core.model", "nanogpt_core.errors", "nanogpt_core.device")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports (resolving `from pkg import module` to the module)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(name.split(".")[:-node.level] + [node.module])
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _unit(module: str) -> str:
    """The entry of LAYERS a module belongs to (its package, or the module itself)."""
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def _layer(module: str) -> int:
    return LAYERS[_unit(module)]


def test_every_module_has_a_layer():
    core = [m for m in MODULES if m.startswith(("nanogpt_core", "nanogpt_cli"))]
    assert core and all(_layer(m) is not None for m in core)


def test_no_import_cycles():
    """Tarjan's strongly connected components: every one must be a single module."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_arrows_point_down_the_layers():
    upward = [(m, t) for m, targets in GRAPH.items() if not m.startswith("nanogpt_impls")
              for t in targets if not t.startswith("nanogpt_impls")
              and _unit(t) != _unit(m) and _layer(t) >= _layer(m)]
    assert not upward, upward


def test_implementations_import_only_the_model_contracts():
    wrong = [(m, t) for m, targets in GRAPH.items() if m.startswith("nanogpt_impls")
             for t in targets if t.startswith("nanogpt_core") and not t.startswith(IMPLS_MAY_IMPORT)]
    assert not wrong, wrong


def test_the_model_never_imports_a_workflow():
    workflows = ("nanogpt_core.train", "nanogpt_core.compare", "nanogpt_core.learn", "nanogpt_core.checks")
    wrong = [(m, t) for m, targets in GRAPH.items() if m.startswith("nanogpt_core.model")
             for t in targets if t.startswith(workflows)]
    assert not wrong, wrong


def test_the_graph_sees_late_imports():
    """The walk reads imports inside functions too (a cycle hidden in a late import would otherwise pass)."""
    assert "nanogpt_core.model.component_files" in GRAPH["nanogpt_impls.student"]
    assert "nanogpt_core.model.registry" in GRAPH["nanogpt_core.model.use_spec"]


@pytest.mark.parametrize("module", ["nanogpt_core", "nanogpt_cli.main"])
def test_importing_the_package_loads_each_module_once(module):
    """Importing runs every module exactly once, none imported again while it is still half-initialised (what a
    cycle does; a package's `__init__` is half-initialised while its own modules load, which is no cycle)."""
    probe = (
        "import builtins, sys\n"
        "reentered = []\n"
        "real = builtins.__import__\n"
        "def watch(name, globals=None, locals=None, fromlist=(), level=0):\n"
        "    mod = sys.modules.get(name)\n"
        "    spec = getattr(mod, '__spec__', None)\n"
        "    if name.startswith('nanogpt') and spec is not None and getattr(spec, '_initializing', False) \\\n"
        "            and not hasattr(mod, '__path__'):\n"
        "        reentered.append(name)\n"
        "    return real(name, globals, locals, fromlist, level)\n"
        "builtins.__import__ = watch\n"
        f"import {module}\n"
        "print(len([m for m in sys.modules if m.startswith('nanogpt')]), reentered)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    count, reentered = out.stdout.split(" ", 1)
    assert int(count) > 10 and reentered.strip() == "[]", out.stdout


def _doc_paths() -> list[tuple[str, str]]:
    """(document, path) for every source path the README and docs name, e.g. `compare/run.py`."""
    import re

    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for doc in docs:
        for path in re.findall(r"([\w./-]+/[\w.-]+\.py)\b", doc.read_text(encoding="utf-8")):
            found.append((doc.name, path.lstrip("./")))
    return found


@pytest.mark.parametrize(("doc", "path"), _doc_paths())
def test_every_source_path_the_docs_name_exists(doc, path):
    roots = [ROOT, ROOT / "nanogpt_core", ROOT / "examples" / "nanogpt-variants"]
    assert any((root / path).is_file() for root in roots), f"{doc} names {path}, which does not exist"
