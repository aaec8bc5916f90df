"""The plugin hooks. A plugin is any module or object with functions marked `@nanogpt_core.hookimpl`.

Third-party packages expose one through the `nanogpt` entry-point group:

    [project.entry-points.nanogpt]
    variants = "nanogpt_variants"

and implement:

    @hookimpl
    def register_components(register):
        register("variants", "mlp", SwiGLU, description="SwiGLU feed-forward")
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

hookspec = pluggy.HookspecMarker("nanogpt")
hookimpl = pluggy.HookimplMarker("nanogpt")


class Register(Protocol):
    def __call__(self, impl_set: str, component: str, implementation: Any, *, description: str | None = None) -> None:
        ...


@hookspec
def register_components(register: Register) -> None:
    """Register implementations: `register(impl_set, component, implementation, description=...)`.

    `impl_set` names the family of implementations (what a user writes before the colon in `--use`), `component`
    is one of `nanogpt_core.model.contracts.COMPONENT_NAMES`, and `implementation` provides the members its
    contract lists.
    """
