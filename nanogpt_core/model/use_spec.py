"""The `set:component` grammar: which implementation set provides each component.

One grammar for every command that names implementations (`--use`, `nanogpt check`, `nanogpt reset`, ...):

    "student:attention,student:mlp"   two components from `student`, the rest from `reference`
    "student"                          every component `student` provides
    "student,reference:generate"       all of student's, but generate from reference
    "student:attention.forward"        one method (`parse_method_target`: hint, show, diff)
    {"attention": "student"}           the same as "student:attention" (library callers)

`parse_targets` reads the syntax; `known_set` and `known_component` are the one place that says a name is unknown
and what the names are; `resolve_use` turns a spec into {component: impl_set} for every component.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nanogpt_core.errors import UseSpecError
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import REFERENCE_SET, STUDENT_SET, implementation_sets, registrations
from nanogpt_core.model.workspace_location import locate_student_set

DEFAULT_SET = REFERENCE_SET  # what a component not named in a spec comes from
UseSpec = str | Mapping[str, str] | None


@dataclass(frozen=True)
class Target:
    """One item of a spec: `impl_set:component`, or a whole set (`component` None)."""

    impl_set: str
    component: str | None = None

    def __str__(self) -> str:
        return self.impl_set if self.component is None else f"{self.impl_set}:{self.component}"


def parse_targets(spec: str, what: str = "--use") -> list[Target]:
    """Split `spec` into its items, checking only the syntax; `what` names the spec in messages."""
    if not isinstance(spec, str):
        raise UseSpecError(f"{what} must be a string like 'student:attention' or a dict, got {type(spec).__name__}.")
    if not spec.strip():
        raise UseSpecError(f"{what} is empty; write e.g. 'student:attention,student:mlp' or 'student'.")
    targets: list[Target] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise UseSpecError(f"{what} {spec!r} has an empty item; separate 'set:component' pairs with single commas.")
        if item.count(":") > 1:
            raise UseSpecError(f"{what} item {item!r} has more than one ':'; write 'set:component'.")
        impl_set, colon, component = (part.strip() for part in item.partition(":"))
        if not impl_set or (colon and not component):
            raise UseSpecError(f"{what} item {item!r} is incomplete; write 'set:component' such as "
                               f"'student:attention'.")
        target = Target(impl_set, component or None)
        if target.component is None and target in targets:
            raise UseSpecError(f"{what} names {item!r} twice.")
        targets.append(target)
    return targets


def known_set(impl_set: str) -> str:
    """`impl_set`, or the one message for a set nobody registered (for `student` outside a workspace: how to make
    one)."""
    sets = implementation_sets()
    if impl_set == STUDENT_SET and impl_set not in sets:
        locate_student_set().require()
    if impl_set not in sets:
        raise UseSpecError(f"unknown implementation set {impl_set!r}; available: {', '.join(sets)}.")
    return impl_set


def known_component(component: str) -> str:
    """`component`, or the one message for a name that is not a component."""
    if component not in COMPONENT_NAMES:
        raise UseSpecError(f"unknown component {component!r}; components are: {', '.join(COMPONENT_NAMES)}.")
    return component


def parse_use(spec: UseSpec) -> tuple[list[str], dict[str, str]]:
    """Split a spec into whole sets and per-component choices, checking only the syntax."""
    if spec is None:
        return [], {}
    if isinstance(spec, Mapping):
        return [], {str(k).strip(): str(v).strip() for k, v in spec.items()}
    whole_sets: list[str] = []
    per_component: dict[str, str] = {}
    for target in parse_targets(spec):
        if target.component is None:
            whole_sets.append(target.impl_set)
        elif target.component in per_component:
            raise UseSpecError(f"--use names component {target.component!r} twice "
                               f"({per_component[target.component]}:{target.component} and {target}); name each "
                               f"component once.")
        else:
            per_component[target.component] = target.impl_set
    return whole_sets, per_component


def resolve_use(spec: UseSpec = None) -> dict[str, str]:
    """Return {component: impl_set} for every component, defaulting to `reference`; raise on unknown names."""
    whole_sets, per_component = parse_use(spec)
    regs = registrations()
    for impl_set in [*whole_sets, *per_component.values()]:
        known_set(impl_set)
    for component in per_component:
        known_component(component)
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


def one_set(spec: str, what: str) -> tuple[str, list[str] | None]:
    """`student` -> ("student", None); `student:attention,student:mlp` -> ("student", ["attention", "mlp"]): a spec
    that names one implementation set, as `nanogpt check` and `nanogpt reset` take."""
    targets = parse_targets(spec, what)
    sets = sorted({t.impl_set for t in targets})
    if len(sets) != 1:
        raise UseSpecError(f"{what} names one implementation set at a time; got {', '.join(sets)}.")
    components = [known_component(t.component) for t in targets if t.component is not None]
    whole = any(t.component is None for t in targets)
    return known_set(sets[0]), None if whole else components


@dataclass(frozen=True)
class MethodTarget:
    """`set[:component[.method]]`, as `nanogpt hint`, `show` and `diff` take: one set, at most one component."""

    impl_set: str
    component: str | None = None
    method: str | None = None

    def __str__(self) -> str:
        text = self.impl_set if self.component is None else f"{self.impl_set}:{self.component}"
        return text if self.method is None else f"{text}.{self.method}"


def parse_method_target(spec: str, what: str) -> MethodTarget:
    """`student:attention.forward` -> MethodTarget("student", "attention", "forward"); the component is checked
    (`known_component`), the set and the method are the caller's to check."""
    targets = parse_targets(spec, what)
    if len(targets) != 1:
        raise UseSpecError(f"{what} names one component at a time, e.g. 'student:attention.forward'; got {spec!r}.")
    [target] = targets
    if target.component is None:
        return MethodTarget(target.impl_set)
    component, dot, method = target.component.partition(".")
    if dot and not method.isidentifier():
        raise UseSpecError(f"{what} {spec!r} names no method after '.'; write e.g. "
                           f"'{target.impl_set}:{component}.forward'.")
    return MethodTarget(target.impl_set, known_component(component), method or None)


def format_use(chosen: Mapping[str, str]) -> str:
    """The shortest spec that reproduces `chosen`: only the non-reference components, or 'reference'."""
    parts = [f"{s}:{c}" for c, s in chosen.items() if s != DEFAULT_SET]
    return ",".join(parts) or DEFAULT_SET
