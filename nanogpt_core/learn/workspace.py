"""The learner's workspace (`impls/student/`) and the pristine skeletons it started from.

The student files are meant to be edited, so the project keeps an untouched copy of each skeleton as package data
(`impls/pristine/<component>.py.txt`). From it:

- `reset_components(["attention"])` backs up the learner's file to `.backups/attention.py.<timestamp>` and restores
  the skeleton (`nanogpt reset student:attention`);
- `is_pristine("attention")` tells `nanogpt status` that a component is not started;
- `load_set_from_dir(...)` / `pristine_plugin(...)` import skeleton files as an implementation set of their own, so
  tests exercise the skeletons' behaviour without depending on what the learner has done to `impls/student`;
- `import_component(...)` lets `impls/student/__init__.py` survive a learner's file that does not import: the
  component is replaced by a placeholder that raises a one-line error naming the file, and everything else runs.

`NANOGPT_STUDENT_DIR` points the workspace elsewhere (tests use a temporary copy, never the real folder).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import importlib.util
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanogpt_core.errors import ComponentImportError, UseSpecError
from nanogpt_core.model.contracts import BY_NAME, COMPONENT_NAMES
from nanogpt_core.model.hookspecs import hookimpl

STUDENT_SET = "student"
STUDENT_DIR_ENV = "NANOGPT_STUDENT_DIR"
BACKUP_DIR = ".backups"
# component -> the name the skeleton file defines (the file is `<component>.py`)
SKELETON_ENTRIES: dict[str, str] = {
    "norm": "RMSNorm",
    "rotary": "Rotary",
    "attention": "CausalSelfAttention",
    "mlp": "MLP",
    "block": "Block",
    "init": "init_weights",
    "optimizer": "setup_optimizers",
    "generate": "generate",
}


def student_dir() -> Path:
    """The folder the learner edits: `$NANOGPT_STUDENT_DIR`, or the installed `nanogpt_impls/student`."""
    override = os.environ.get(STUDENT_DIR_ENV)
    if override:
        return Path(override)
    return Path(str(importlib.resources.files("nanogpt_impls.student")))


def student_file(component: str, directory: Path | None = None) -> Path:
    return (directory or student_dir()) / f"{component}.py"


def pristine_text(component: str) -> str:
    """The skeleton exactly as shipped."""
    _check_component(component)
    resource = importlib.resources.files("nanogpt_impls").joinpath("pristine", f"{component}.py.txt")
    return resource.read_text(encoding="utf-8")


def is_pristine(component: str, directory: Path | None = None) -> bool:
    """True when the learner's file is byte-for-byte the skeleton (not started)."""
    path = student_file(component, directory)
    return path.is_file() and path.read_text(encoding="utf-8") == pristine_text(component)


def _check_component(component: str) -> None:
    if component not in SKELETON_ENTRIES:
        raise UseSpecError(f"unknown component {component!r}; components are: {', '.join(COMPONENT_NAMES)}.")


# --- reset --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetResult:
    component: str
    restored: Path
    backup: Path | None  # None when there was nothing to keep (missing file, or already the skeleton)


def reset_components(components: list[str] | None = None, directory: Path | None = None,
                     now: float | None = None) -> list[ResetResult]:
    """Restore skeletons (all when `components` is None), backing up each learner file that differs first."""
    directory = directory or student_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    results = []
    for component in components or list(SKELETON_ENTRIES):
        _check_component(component)
        path = student_file(component, directory)
        skeleton = pristine_text(component)
        backup = None
        if path.is_file() and path.read_text(encoding="utf-8") != skeleton:
            backup_dir = directory / BACKUP_DIR
            backup_dir.mkdir(exist_ok=True)
            ignore = backup_dir / ".gitignore"  # backups are the learner's, not the project's
            if not ignore.exists():
                ignore.write_text("*\n", encoding="utf-8")
            backup = backup_dir / f"{component}.py.{stamp}"
            n = 1
            while backup.exists():  # two resets within a second keep both backups
                backup = backup_dir / f"{component}.py.{stamp}-{n}"
                n += 1
            backup.write_bytes(path.read_bytes())
        path.write_text(skeleton, encoding="utf-8")
        results.append(ResetResult(component, path, backup))
    return results


# --- importing component files ------------------------------------------------------------------------------------


def _placeholder(component: str, where: str, problem: str) -> Any:
    """An object that satisfies the component's members and raises a one-line error when used."""
    message = (f"{where} does not import ({problem}); fix it, or restore the skeleton with "
               f"`nanogpt reset student:{component}` (your file is backed up first).")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ComponentImportError(message)

    kind = BY_NAME[component].kind
    if kind == "function":
        fail.__name__ = SKELETON_ENTRIES.get(component, component)
        fail.__doc__ = f"(broken) {message}"
        return fail
    members = {m: staticmethod(fail) if kind == "functions" else fail for m in BY_NAME[component].members}
    members["__doc__"] = f"(broken) {message}"
    if kind == "module":
        import torch.nn as nn

        return type(SKELETON_ENTRIES.get(component, component), (nn.Module,), members)
    return type(SKELETON_ENTRIES.get(component, component), (), members)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}, line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    line = f", line {frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{line}"


def import_component(module_name: str, attribute: str, component: str) -> Any:
    """Import `module_name.attribute`; on any failure, a placeholder that explains it when the component is used."""
    where = module_name.replace("nanogpt_impls.", "impls/").replace(".", "/") + ".py"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return _placeholder(component, where, _problem(exc))
    if not hasattr(module, attribute):
        return _placeholder(component, where, f"it defines no {attribute!r}")
    implementation = getattr(module, attribute)
    missing = _missing_members(component, implementation)
    if missing:  # the registry would reject it, and with it every other set: fail this component alone
        return _placeholder(component, where, f"{attribute} lacks {', '.join(missing)}, which the contract needs")
    return implementation


def _missing_members(component: str, implementation: Any) -> list[str]:
    return [m for m in BY_NAME[component].members
            if not (callable(implementation) if m == "__call__" else hasattr(implementation, m))]


def load_set_from_dir(impl_set: str, directory: Path, components: list[str] | None = None) -> object:
    """A plugin registering `<directory>/<component>.py` files as implementation set `impl_set`.

    Each file is imported under a private module name, so a skeleton loaded this way never collides with the
    installed student package. Register it with `nanogpt_core.model.registry.register_plugin(plugin, name=...)`."""
    loaded: dict[str, Any] = {}
    digest = hashlib.sha1(str(Path(directory).resolve()).encode()).hexdigest()[:8]
    for component in components or list(SKELETON_ENTRIES):
        path = Path(directory) / f"{component}.py"
        module_name = f"_nanogpt_{impl_set}_{digest}_{component}".replace("-", "_")
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
            spec.loader.exec_module(module)
            loaded[component] = getattr(module, SKELETON_ENTRIES[component])
            missing = _missing_members(component, loaded[component])
            if missing:
                loaded[component] = _placeholder(component, str(path), f"lacks {', '.join(missing)}")
        except Exception as exc:
            loaded[component] = _placeholder(component, str(path), _problem(exc))

    class DirectoryPlugin:
        @hookimpl
        def register_components(self, register):
            for component, implementation in loaded.items():
                register(impl_set, component, implementation)

    return DirectoryPlugin()


def write_pristine_dir(directory: Path) -> Path:
    """Write every skeleton to `directory/<component>.py` (a fresh workspace for tests and `status`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for component in SKELETON_ENTRIES:
        (directory / f"{component}.py").write_text(pristine_text(component), encoding="utf-8")
    return directory
