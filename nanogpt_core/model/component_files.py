"""Component files imported as implementations, so that one broken file never takes the others down.

A learner's file is half-written most of the time: a syntax error, a name not defined yet. Imported the plain way,
one such file would make the whole implementation set (and with it the registry, and every command) fail. Here:

- `load_component_files(folder)` imports `folder/<component>.py` for every component (each under a private module
  name, so a workspace never collides with an installed package) and returns {component: its entry, the class or
  function the contract names}; a file that does not import, or lacks a member the contract needs, gives a
  placeholder that satisfies the contract's members and raises a one-line `ComponentImportError` naming the file
  (as it is on disk, relative to the current folder when under it) when the component is used. The student set is
  loaded this way from its workspace (`impls/student/__init__.py`, `model/workspace_location.py`);
- `load_set_from_dir("mine", folder)` registers such files as an implementation set of their own. Register the
  plugin it returns with `nanogpt_core.model.registry.register_plugin(plugin, name=...)`;
- `import_component("some_package.attention", "attention")` does the same for a module of an installed package.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

from nanogpt_core.errors import ComponentImportError
from nanogpt_core.files import display_path
from nanogpt_core.model.contracts import BY_NAME, COMPONENT_NAMES, missing_members
from nanogpt_core.model.hookspecs import hookimpl


def _placeholder(component: str, where: str, problem: str) -> Any:
    """An object that satisfies the component's members and raises a one-line error when used."""
    message = (f"{where} does not import ({problem}); fix it, or restore the skeleton with "
               f"`nanogpt reset student:{component}` (your file is backed up first).")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ComponentImportError(message)

    contract = BY_NAME[component]
    if contract.kind == "function":
        fail.__name__ = contract.entry
        fail.__doc__ = f"(broken) {message}"
        return fail
    members = {m: staticmethod(fail) if contract.kind == "functions" else fail for m in contract.members}
    members["__doc__"] = f"(broken) {message}"
    if contract.kind == "module":
        import torch.nn as nn

        return type(contract.entry, (nn.Module,), members)
    return type(contract.entry, (), members)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}, line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    line = f", line {frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{line}"


def _checked(component: str, module: Any, where: str) -> Any:
    """The module's entry for `component`, or a placeholder saying what is wrong with it."""
    entry = BY_NAME[component].entry
    if not hasattr(module, entry):
        return _placeholder(component, where, f"it defines no {entry!r}")
    implementation = getattr(module, entry)
    missing = missing_members(component, implementation)
    if missing:  # the registry would reject it, and with it every other set: fail this component alone
        return _placeholder(component, where, f"{entry} lacks {', '.join(missing)}, which the contract needs")
    return implementation


def import_component(module_name: str, component: str) -> Any:
    """Import the entry of `component` from `module_name`; on any failure, a placeholder that explains it when the
    component is used."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):  # a parent package that does not import
        spec = None
    where = display_path(spec.origin) if spec is not None and spec.origin else f"module {module_name}"
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # sys.exit() at import is that file's failure, not the program's end
        return _placeholder(component, where, _problem(exc))
    return _checked(component, module, where)


def load_component_files(directory: Path, impl_set: str = "student",
                         components: list[str] | None = None) -> dict[str, Any]:
    """{component: implementation} of `<directory>/<component>.py`, each file imported on its own (see above)."""
    directory = Path(directory).resolve()
    digest = hashlib.sha1(str(directory).encode()).hexdigest()[:8]
    loaded: dict[str, Any] = {}
    for component in components or list(COMPONENT_NAMES):
        path = directory / f"{component}.py"
        module_name = f"_nanogpt_{impl_set}_{digest}_{component}".replace("-", "_")
        where = display_path(path)
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            if isinstance(exc, FileNotFoundError) and not path.exists():
                problem = "the file is missing"
            else:
                problem = _problem(exc)
            loaded[component] = _placeholder(component, where, problem)
        else:
            loaded[component] = _checked(component, module, where)
    return loaded


def load_set_from_dir(impl_set: str, directory: Path, components: list[str] | None = None) -> object:
    """A plugin registering `<directory>/<component>.py` files as implementation set `impl_set`."""
    loaded = load_component_files(directory, impl_set, components)

    class DirectoryPlugin:
        @hookimpl
        def register_components(self, register):
            for component, implementation in loaded.items():
                register(impl_set, component, implementation)

    return DirectoryPlugin()
