"""The component registry: which implementation sets exist, and which plugin gave each (impl_set, component) pair.

Built-in sets (`reference`, `student`) are registered in code, like simonw/llm's default plugins, so they work from a
source checkout; third-party sets arrive through the `nanogpt` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

import pluggy

from nanogpt_core.errors import RegistryError
from nanogpt_core.model import hookspecs
from nanogpt_core.model.contracts import BY_NAME, COMPONENT_NAMES, missing_members

ENTRY_POINT_GROUP = "nanogpt"
REFERENCE_SET = "reference"  # nanochat's numerics: the default of every component, and what all is compared with
STUDENT_SET = "student"  # the skeletons a learner fills in
BUILTIN_PLUGINS = ("nanogpt_impls.reference", "nanogpt_impls.student")

pm = pluggy.PluginManager("nanogpt")
pm.add_hookspecs(hookspecs)


@dataclass(frozen=True)
class Registration:
    impl_set: str
    component: str
    implementation: Any
    plugin: str  # the plugin's name, for error messages and `nanogpt components`
    description: str


_loaded = False


def load_plugins() -> None:
    """Register the built-in sets and every installed entry-point plugin, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in BUILTIN_PLUGINS:
        if not pm.is_registered(module := importlib.import_module(module_name)):
            pm.register(module, name=module_name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    # A broken plugin must not take the whole tool down silently, nor end it with its own sys.exit("needs CUDA")
    # and no word of who said so.
    except (Exception, SystemExit) as exc:
        _loaded = False
        raise RegistryError(f"{_failed_entry_point()} failed to import ({type(exc).__name__}: {exc}); fix it, or "
                            f"uninstall it with pip to run without it.") from exc


def _failed_entry_point() -> str:
    """`plugin 'x' (module, from package y)`: the first entry point pluggy had not registered when loading stopped.

    pluggy loads entry points in `importlib.metadata.distributions()` order and skips the ones it already has, so the
    first one missing is the one that raised."""
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and pm.get_plugin(ep.name) is None and not pm.is_blocked(ep.name):
                return f"plugin {ep.name!r} ({ep.value}, from package {dist.metadata['name']})"
    return "a nanogpt plugin"


def _plugin_name(plugin: object) -> str:
    return pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))


def collect_registrations() -> dict[tuple[str, str], Registration]:
    """Ask every plugin to register; validate as we go so an error names the plugin that caused it."""
    load_plugins()
    found: dict[tuple[str, str], Registration] = {}
    for impl in pm.hook.register_components.get_hookimpls():
        plugin = _plugin_name(impl.plugin)

        def register(impl_set: str, component: str, implementation: Any, *, description: str | None = None,
                     _plugin: str = plugin) -> None:
            _validate(_plugin, impl_set, component, implementation)
            key = (impl_set, component)
            if key in found:
                raise RegistryError(
                    f"plugin {_plugin!r} registers {impl_set}:{component}, which plugin {found[key].plugin!r} "
                    f"already registered; rename one implementation set."
                )
            summary = description if description is not None else _first_line(implementation.__doc__)
            found[key] = Registration(impl_set, component, implementation, _plugin, summary)

        try:
            impl.function(register=register)
        except RegistryError:
            raise
        except (Exception, SystemExit) as exc:
            raise RegistryError(f"plugin {plugin!r} failed while registering components ({type(exc).__name__}: "
                                f"{exc}); fix its register_components hook, or uninstall it with pip.") from exc
    return found


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _validate(plugin: str, impl_set: str, component: str, implementation: Any) -> None:
    if component not in BY_NAME:
        raise RegistryError(
            f"plugin {plugin!r} registers unknown component {component!r}; components are: "
            f"{', '.join(COMPONENT_NAMES)}."
        )
    if not impl_set or not impl_set.replace("_", "").replace("-", "").isalnum():
        raise RegistryError(f"plugin {plugin!r} registers an invalid implementation set name {impl_set!r}; "
                            f"use letters, digits, '-' and '_'.")
    missing = missing_members(component, implementation)
    if missing:
        raise RegistryError(f"plugin {plugin!r}: {impl_set}:{component} lacks {', '.join(missing)} "
                            f"(contract: {BY_NAME[component].signature}).")


_cache: dict[tuple[str, str], Registration] | None = None


def registrations(refresh: bool = False) -> dict[tuple[str, str], Registration]:
    """All registrations, keyed by (impl_set, component). Cached; `refresh=True` after (un)registering a plugin."""
    global _cache
    if _cache is None or refresh:
        _cache = collect_registrations()
    return _cache


def implementation_sets() -> list[str]:
    sets = sorted({s for s, _ in registrations()})
    # reference first, student second: the order a learner thinks in
    return sorted(sets, key=lambda s: (s != REFERENCE_SET, s != STUDENT_SET, s))


def get_implementation(impl_set: str, component: str) -> Any:
    return registrations()[(impl_set, component)].implementation


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, notebooks). Undo with `unregister_plugin`."""
    load_plugins()
    pm.register(plugin, name=name)
    registrations(refresh=True)


def unregister_plugin(plugin: object | None = None, name: str | None = None) -> None:
    pm.unregister(plugin=plugin, name=name)
    registrations(refresh=True)
