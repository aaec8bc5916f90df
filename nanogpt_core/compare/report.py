"""What `compare` returns: a verdict per swapped component, model-level probes, the side-by-side training, timings.

`mode` says what kind of comparison this is (`nanogpt_core.compare.modes`): "equal" claims the candidate computes
what the reference computes, so outputs, gradients and loss curves must agree; "design" keeps the curves, the speed
and the checks that still apply and drops the equality verdict. Readers should switch on `mode`, not on which fields
are empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nanogpt_core.checks.result import DIAGNOSES, CheckResult, jsonable

EXIT_PASS, EXIT_FAIL, EXIT_NOT_IMPLEMENTED = 0, 1, 3


@dataclass
class ComponentVerdict:
    """pass / fail (with the diagnosis and what to look at next) / not implemented, for one swapped component."""

    component: str
    impl_set: str
    status: str  # "pass" | "fail" | "not implemented"
    diagnosis: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    isolation: CheckResult | None = None
    diagnoses: list[str] = field(default_factory=list)  # every distinct diagnosis, the cause first
    detail: str = ""  # the cause's (or failing check's) evidence, or the TODO message
    cause: CheckResult | None = None  # the diagnosis ladder's finding: the probe that isolated the cause
    where: str = ""  # file and line of the method at fault: "impls/student/attention.py:31 (...forward)"

    @property
    def next_step(self) -> str:
        return DIAGNOSES.get(self.diagnosis, "")

    def to_dict(self) -> dict[str, Any]:
        return {"component": self.component, "impl_set": self.impl_set, "status": self.status,
                "diagnosis": self.diagnosis, "next_step": self.next_step, "detail": self.detail,
                "where": self.where, "diagnoses": self.diagnoses,
                "cause": self.cause.to_dict() if self.cause else None,
                "checks": [c.to_dict() for c in self.checks],
                "isolation": self.isolation.to_dict() if self.isolation else None}


@dataclass
class Curve:
    """One model's run: per-step training loss, throughput and memory."""

    use: str
    losses: list[float]
    tokens_per_s: float
    activation_bytes: int  # bytes autograd saved for backward in one step (device-independent memory measure)
    peak_memory_bytes: int | None = None  # CUDA only
    shared_weights: bool = True  # started from the reference's weights (False when init itself is compared)


@dataclass
class TrainingComparison:
    steps: int
    batch_size: int
    seq_len: int
    data: str
    reference: Curve
    candidate: Curve
    tolerance: float  # allowed max |loss difference| (nats)
    passed: bool | None  # None in a mode without an equality verdict

    @property
    def diffs(self) -> list[float]:
        return [c - r for c, r in zip(self.candidate.losses, self.reference.losses)]

    @property
    def max_abs_diff(self) -> float:
        return max((abs(d) for d in self.diffs), default=0.0)

    @property
    def final_diff(self) -> float:
        return self.diffs[-1] if self.diffs else 0.0

    @property
    def speed_ratio(self) -> float:
        """candidate tokens/s over reference tokens/s: above 1 is faster. Informational, never a verdict."""
        return self.candidate.tokens_per_s / self.reference.tokens_per_s if self.reference.tokens_per_s else 0.0

    @property
    def memory_ratio(self) -> float:
        """candidate over reference activation memory: above 1 uses more. Informational, never a verdict."""
        ref = self.reference.activation_bytes
        return self.candidate.activation_bytes / ref if ref else 0.0

    @property
    def peak_memory_ratio(self) -> float | None:
        r, c = self.reference.peak_memory_bytes, self.candidate.peak_memory_bytes
        return c / r if r and c else None

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "steps": self.steps, "batch_size": self.batch_size, "seq_len": self.seq_len, "data": self.data,
            "tolerance": self.tolerance, "passed": self.passed, "max_abs_diff": self.max_abs_diff,
            "final_diff": self.final_diff, "speed_ratio": self.speed_ratio, "memory_ratio": self.memory_ratio,
            "peak_memory_ratio": self.peak_memory_ratio,
            "reference": vars(self.reference), "candidate": vars(self.candidate),
        })


@dataclass
class Report:
    mode: str
    use: dict[str, str]  # {component: impl_set} of the candidate model
    use_spec: str
    config: dict[str, int]  # the training config; checks run on `check_config`
    check_config: dict[str, int]
    device: str
    seed: int
    components: list[ComponentVerdict] = field(default_factory=list)
    probes: list[CheckResult] = field(default_factory=list)  # the assembled candidate model
    training: TrainingComparison | None = None
    elapsed_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def not_implemented(self) -> list[str]:
        return [v.component for v in self.components if v.status == "not implemented"]

    @property
    def failed(self) -> list[str]:
        """Everything that failed: component names, 'probe:<name>' and 'training'."""
        out = [v.component for v in self.components if v.status == "fail"]
        out += [f"probe:{p.name}" for p in self.probes if p.passed is False]
        if self.training is not None and self.training.passed is False:
            out.append("training")
        return out

    @property
    def passed(self) -> bool:
        return not self.failed and not self.not_implemented

    @property
    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAIL
        return EXIT_NOT_IMPLEMENTED if self.not_implemented else EXIT_PASS

    def verdict(self, component: str) -> ComponentVerdict:
        return next(v for v in self.components if v.component == component)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "mode": self.mode, "passed": self.passed, "exit_code": self.exit_code, "use": self.use,
            "use_spec": self.use_spec, "config": self.config, "check_config": self.check_config,
            "device": self.device, "seed": self.seed, "failed": self.failed,
            "not_implemented": self.not_implemented,
            "components": [v.to_dict() for v in self.components],
            "probes": [p.to_dict() for p in self.probes],
            "training": self.training.to_dict() if self.training else None,
            "elapsed_s": self.elapsed_s, "timings": self.timings, "notes": self.notes,
        })
