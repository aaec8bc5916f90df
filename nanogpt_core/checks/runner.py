"""Running the checks of an implementation set: one definition of each check, used by `nanogpt check`, `nanogpt
status`, `pytest --impl SET` and `nanogpt compare`; and, when something fails, the component's diagnosis ladder to
name the cause (`find_cause`), which the caller shows first."""

from __future__ import annotations

import dataclasses
import inspect
import traceback

import torch

from nanogpt_core.checks.harness import Bench, default_check_config, fault_location, one_thread, seeded
from nanogpt_core.checks.isolation import NAME as ISOLATION
from nanogpt_core.checks.isolation import compare_component
from nanogpt_core.checks.ladder import LADDERS
from nanogpt_core.checks.modules import MODULE_CHECKS, Check
from nanogpt_core.checks.result import DIAGNOSIS_METHOD, CheckResult
from nanogpt_core.checks.whole_model import IN_MODEL_CHECKS, MODEL_CHECKS
from nanogpt_core.files import display_path
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import REFERENCE_SET, get_implementation, registrations
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


def error_result(bench: Bench, name: str, exc: Exception) -> CheckResult:
    """A crash in the component is a failed check, not a crash of the checker: the error, the line it raised in
    (the innermost frame in the implementation's own file) and, for --debug, the traceback."""
    where, method = raising_line(bench, exc)
    detail = f"{type(exc).__name__}: {exc}" + (f" (raised at {where})" if where else "")
    return CheckResult(bench.component, name, False, detail, {"exception": type(exc).__name__}, "raised an error",
                       method=method, where=where, traceback="".join(traceback.format_exception(exc)))


def raising_line(bench: Bench, exc: BaseException) -> tuple[str, str]:
    """('impls/student/norm.py:17 (RMSNorm.forward)', 'forward') of the innermost traceback frame in the file of the
    implementation under test (for a probe of the whole model: of any swapped-in one); ('', '') when the error did
    not pass through one."""
    if bench.component in COMPONENT_NAMES:
        suspects = [(bench.impl_set, bench.component)]
    else:
        suspects = [(s, c) for c, s in (bench.use or {}).items() if s != REFERENCE_SET]
    sources = set()
    for impl_set, component in suspects:
        try:
            sources.add(inspect.getsourcefile(_unwrap(get_implementation(impl_set, component))))
        except (TypeError, OSError, KeyError):
            continue
    for frame, line in reversed(list(traceback.walk_tb(exc.__traceback__))):
        if frame.f_code.co_filename in sources:
            qualname = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
            return f"{display_path(frame.f_code.co_filename)}:{line} ({qualname})", frame.f_code.co_name
    return "", ""


def _unwrap(implementation):
    return implementation if isinstance(implementation, type) or callable(implementation) else type(implementation)


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
        except Exception as exc:
            r = error_result(bench, check.__name__, exc)
        if r.name not in skip:
            results.append(locate(bench, dataclasses.replace(r, component=component)))
    return results


def locate(bench: Bench, r: CheckResult) -> CheckResult:
    """Fill in `where` (file and line of the method at fault) for a failed result that does not have it."""
    if r.passed is False and not r.where and bench.component in COMPONENT_NAMES:
        r.where = fault_location(bench.impl_set, bench.component, r.method or DIAGNOSIS_METHOD.get(r.diagnosis))
    return r


def find_cause(bench: Bench, skip: frozenset[str] = frozenset()) -> CheckResult | None:
    """The first probe of the component's ladder that finds its cause, or None. A probe that raises (it could not
    set up its experiment on this implementation) is passed over: the contract checks report the error itself."""
    for probe in LADDERS.get(bench.component, ()):
        try:
            with seeded(SEED):
                r = probe(bench)
        except Exception:
            continue
        if r.passed is False and r.diagnosis and r.name not in skip:
            return locate(bench, dataclasses.replace(r, component=bench.component))
    return None


def with_cause_first(bench: Bench, results: list[CheckResult], skip: frozenset[str] = frozenset()
                     ) -> list[CheckResult]:
    """`results`, and when any failed, the ladder's cause in front (the failing check itself if it is the cause)."""
    if not any(r.passed is False for r in results):
        return results
    cause = find_cause(bench, skip)
    if cause is None:
        return results
    same = next((r for r in results if r.passed is False and (r.name, r.diagnosis) == (cause.name, cause.diagnosis)),
                None)
    rest = [r for r in results if r is not same]
    return [dataclasses.replace(same or cause, cause=True), *rest]


def run_component_checks(impl_set: str, component: str, config: GPTConfig | None = None,
                         device: str | torch.device = "cpu") -> list[CheckResult]:
    """Every contract check of one component, the cause first when one fails; stops at the first
    NotImplementedError with one 'not implemented'."""
    if (impl_set, component) not in registrations():
        return [CheckResult(component, "provided", None, f"{impl_set!r} does not provide {component}", {},
                            "not provided")]
    bench = Bench(impl_set, component, config or default_check_config(), torch.device(device))
    return with_cause_first(bench, run_check_list(bench, component, checks_for(component)))


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


def isolation_result(bench: Bench, dtype: torch.dtype = torch.float32) -> CheckResult:
    """The isolation comparison alone (no cause): not implemented and errors reported as results."""
    try:
        return locate(bench, compare_component(bench, dtype))
    except NotImplementedError as exc:
        return CheckResult(bench.component, ISOLATION, None, str(exc), {}, "not implemented")
    except Exception as exc:
        return error_result(bench, ISOLATION, exc)


def matches_reference(impl_set: str, component: str, config: GPTConfig | None = None,
                      dtype: torch.dtype = torch.float32) -> CheckResult:
    """Compare one component of `impl_set` with the reference on identical weights and inputs, each tensor within
    its measured tolerance (`numbers['tensors']`); a mismatch names the ladder's cause as its diagnosis."""
    if (impl_set, component) not in registrations():
        return CheckResult(component, ISOLATION, None, f"{impl_set!r} does not provide {component}", {},
                           "not provided")
    bench = Bench(impl_set, component, config or default_check_config())
    with one_thread():
        result = isolation_result(bench, dtype)
        if result.passed is False:
            cause = find_cause(bench)
            if cause is not None:
                result = dataclasses.replace(result, diagnosis=cause.diagnosis, detail=f"{cause.name}: {cause.detail}"
                                             f" | {result.detail}", method=cause.method, where=cause.where)
    return result
