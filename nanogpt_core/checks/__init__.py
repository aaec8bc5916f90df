"""Component checks: the contract checks every implementation must pass, and the comparison with the reference.

    from nanogpt_core.checks import run_checks, matches_reference
    for r in run_checks("student", ["attention"]):
        print(r.component, r.name, r.status, r.detail, r.diagnosis, r.hint)

`run_checks` needs no reference output (any correct design passes); `matches_reference` loads the reference's
weights into the candidate and compares outputs and gradients. A failing result names the classic bug it points to
in `diagnosis` (see `DIAGNOSES`).
"""

from nanogpt_core.checks.harness import default_check_config
from nanogpt_core.checks.isolation import TOLERANCES, matches_reference
from nanogpt_core.checks.result import DIAGNOSES, CheckResult, TensorDiff, diff_tensors
from nanogpt_core.checks.runner import checks_for, run_checks, run_component_checks

__all__ = [
    "DIAGNOSES",
    "TOLERANCES",
    "CheckResult",
    "TensorDiff",
    "checks_for",
    "default_check_config",
    "diff_tensors",
    "matches_reference",
    "run_checks",
    "run_component_checks",
]
