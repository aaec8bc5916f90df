"""Component checks: the contract checks every implementation must pass, the comparison with the reference, and the
diagnosis ladder that names the cause when either fails.

    from nanogpt_core.checks import run_checks, matches_reference
    for r in run_checks("student", ["attention"]):
        print(r.component, r.name, r.status, r.detail, r.diagnosis, r.hint)

`run_checks` needs no reference output (any correct design passes); `matches_reference` loads the reference's
weights into the candidate and compares outputs and gradients within tolerances measured from the reference's own
noise. A failure is explained by the component's ladder (`LADDERS`): probes run in order, each isolating one cause,
and the first that finds its cause names it (`diagnosis`, one of `DIAGNOSES`) with the evidence and the fix.
"""

from nanogpt_core.checks.harness import default_check_config
from nanogpt_core.checks.ladder import LADDERS
from nanogpt_core.checks.result import DIAGNOSES, CheckResult, TensorDiff, diff_tensors
from nanogpt_core.checks.runner import checks_for, find_cause, matches_reference, run_checks, run_component_checks

__all__ = [
    "DIAGNOSES",
    "LADDERS",
    "CheckResult",
    "TensorDiff",
    "checks_for",
    "default_check_config",
    "diff_tensors",
    "find_cause",
    "matches_reference",
    "run_checks",
    "run_component_checks",
]
