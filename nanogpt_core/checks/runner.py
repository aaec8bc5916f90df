"""Running the contract checks of an implementation set: one definition of each check, used by `nanogpt check`,
`nanogpt status`, `pytest --impl SET` and `nanogpt compare`."""

from __future__ import annotations

import dataclasses

import torch

from nanogpt_core.checks.harness import Bench, default_check_config, one_thread, seeded
from nanogpt_core.checks.modules import MODULE_CHECKS, Check
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.whole_model import IN_MODEL_CHECKS, MODEL_CHECKS
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import registrations
from nanogpt_core.model.use_spec import known_component, known_set

SEED = 0


def checks_for(component: str) -> list[Check]:
    """The contract checks of one component, in the order they run."""
    if component in MODULE_CHECKS:
        return [*MODULE_CHECKS[component], *IN_MODEL_CHECKS]
    return list(MODEL_CHECKS[component])


def not_implemented(component: str, exc: NotImplementedError) -> CheckResult:
    message = str(exc) or f"{component} raises NotImplementedError"
    return CheckResult(component, "implemented", None, message, {}, "not implemented")


def error_result(component: str, check: Check, exc: Exception) -> CheckResult:
    return CheckResult(component, check.__name__, False, f"{type(exc).__name__}: {exc}",
                       {"exception": type(exc).__name__}, "raised an error")


def run_component_checks(impl_set: str, component: str, config: GPTConfig | None = None,
                         device: str | torch.device = "cpu") -> list[CheckResult]:
    """Every contract check of one component; stops at the first NotImplementedError with one 'not implemented'."""
    if (impl_set, component) not in registrations():
        return [CheckResult(component, "provided", None, f"{impl_set!r} does not provide {component}", {},
                            "not provided")]
    bench = Bench(impl_set, component, config or default_check_config(), torch.device(device))
    return run_check_list(bench, component, checks_for(component))


def run_check_list(bench: Bench, component: str, checks: list[Check], skip: frozenset[str] = frozenset()
                   ) -> list[CheckResult]:
    """Run `checks` on `bench`, each seeded; stop at the first NotImplementedError with one 'not implemented'.

    Results named in `skip` are dropped after running (a check's name is what it reports)."""
    results = []
    for check in checks:
        try:
            with seeded(SEED):
                r = check(bench)
        except NotImplementedError as exc:
            return [not_implemented(component, exc)]
        except Exception as exc:  # a crash in the component is a failed check, not a crash of the checker
            r = error_result(component, check, exc)
        if r.name not in skip:
            results.append(dataclasses.replace(r, component=component))
    return results


def run_checks(impl_set: str, components: list[str] | None = None, config: GPTConfig | None = None,
               device: str | torch.device = "cpu") -> list[CheckResult]:
    """The contract checks of each component `impl_set` provides (others reported as skipped, passed=None), each
    built inside a model whose other components are reference."""
    known_set(impl_set)
    for c in components or []:
        known_component(c)
    results: list[CheckResult] = []
    with one_thread():
        for component in components or COMPONENT_NAMES:
            results.extend(run_component_checks(impl_set, component, config, device))
    return results
