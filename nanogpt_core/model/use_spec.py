"""Parsing `--use`: which implementation set provides each component.

    "student:attention,student:mlp"   two components from `student`, the rest from `reference`
    "student"                          every component `student` provides
    "student,reference:generate"       all of student's, but generate from reference
    {"attention": "student"}           the same as "student:attention"
"""

from __future__ import annotations

from collections.abc import Mapping

from nanogpt_core.errors import UseSpecError
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import implementation_sets, registrations

DEFAULT_SET = "reference"
UseSpec = str | Mapping[str, str] | None


def parse_use(spec: UseSpec) -> tuple[list[str], dict[str, str]]:
    """Split a spec into whole sets and per-component choices, checking only the syntax."""
    if spec is None:
        return [], {}
    if isinstance(spec, Mapping):
        return [], {str(k).strip(): str(v).strip() for k, v in spec.items()}
    if not isinstance(spec, str):
        raise UseSpecError(f"--use must be a string like 'student:attention' or a dict, got {type(spec).__name__}.")
    if not spec.strip():
        raise UseSpecError("--use is empty; write e.g. 'student:attention,student:mlp' or 'student'.")
    whole_sets: list[str] = []
    per_component: dict[str, str] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise UseSpecError(f"--use {spec!r} has an empty item; separate 'set:component' pairs with single commas.")
        if item.count(":") > 1:
            raise UseSpecError(f"--use item {item!r} has more than one ':'; write 'set:component'.")
        if ":" not in item:
            if item in whole_sets:
                raise UseSpecError(f"--use names {item!r} twice.")
            whole_sets.append(item)
            continue
        impl_set, component = (part.strip() for part in item.split(":"))
        if not impl_set or not component:
            raise UseSpecError(
                f"--use item {item!r} is incomplete; write 'set:component' such as 'student:attention'."
            )
        if component in per_component:
            raise UseSpecError(f"--use names component {component!r} twice ({per_component[component]}:{component} "
                               f"and {item}); name each component once.")
        per_component[component] = impl_set
    return whole_sets, per_component


def resolve_use(spec: UseSpec = None) -> dict[str, str]:
    """Return {component: impl_set} for every component, defaulting to `reference`; raise on unknown names."""
    whole_sets, per_component = parse_use(spec)
    regs = registrations()
    known_sets = implementation_sets()
    for impl_set in [*whole_sets, *per_component.values()]:
        if impl_set not in known_sets:
            raise UseSpecError(f"unknown implementation set {impl_set!r}; available: {', '.join(known_sets)}.")
    for component in per_component:
        if component not in COMPONENT_NAMES:
            raise UseSpecError(f"unknown component {component!r}; components are: {', '.join(COMPONENT_NAMES)}.")
    chosen = dict.fromkeys(COMPONENT_NAMES, DEFAULT_SET)
    for impl_set in whole_sets:
        for component in COMPONENT_NAMES:
            if (impl_set, component) in regs:
                chosen[component] = impl_set
    for component, impl_set in per_component.items():
        if (impl_set, component) not in regs:
            providers = sorted(s for s, c in regs if c == component)
            raise UseSpecError(f"implementation set {impl_set!r} has no {component!r}; "
                               f"{component} is provided by: {', '.join(providers)}.")
        chosen[component] = impl_set
    return chosen


def format_use(chosen: Mapping[str, str]) -> str:
    """The shortest spec that reproduces `chosen`: only the non-reference components, or 'reference'."""
    parts = [f"{s}:{c}" for c, s in chosen.items() if s != DEFAULT_SET]
    return ",".join(parts) or DEFAULT_SET
