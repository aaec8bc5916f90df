"""`compare`: prove each swapped component right, or show exactly where it is wrong — one pipeline for every mode.

Three layers, cheapest first: each swapped component's contract checks (and, in "equal" mode, its isolation
comparison with the reference on the small check config), probes of the assembled candidate model, then both models
trained side by side. A component that is not implemented stops at the first layer with its TODO message. What a
mode changes is data (`nanogpt_core.compare.modes`): which checks apply, which probes run, and whether there is an
equality verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from nanogpt_core.checks.harness import Bench, default_check_config, one_thread, seeded
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.runner import checks_for, find_cause, isolation_result, run_check_list
from nanogpt_core.compare.curves import DATA_CHOICES, default_compare_config, make_batches, train_curve
from nanogpt_core.compare.modes import Mode, get_mode
from nanogpt_core.compare.report import ComponentVerdict, Report, TrainingComparison
from nanogpt_core.device import resolve_device
from nanogpt_core.errors import ConfigError
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.use_spec import DEFAULT_SET, UseSpec, format_use, resolve_use

# Allowed max |candidate loss - reference loss| over the run, in nats. From the same weights, an exact
# re-implementation drifts by float rounding only (measured: < 1e-3 after 50 steps); from its own init (when init
# itself is swapped) two correct models differ by the luck of the draw.
TRAINING_TOLERANCE_SHARED = 1e-2
TRAINING_TOLERANCE_OWN_INIT = 0.15
# Under CUDA's bf16 autocast every matmul rounds to 8 bits, so two exact implementations drift further apart. Not yet
# measured on a GPU: a first estimate, to be tightened from real runs.
TRAINING_TOLERANCE_SHARED_AUTOCAST = 5e-2

Progress = Callable[[str], None]


def compare(use: UseSpec = None, steps: int = 50, device: str | torch.device | None = None,
            config: GPTConfig | None = None, seed: int = 0, *, batch_size: int = 8, data: str = "corpus",
            mode: str = "equal", check_config: GPTConfig | None = None, progress: Progress | None = None) -> Report:
    """Compare the model `use` picks with the all-reference model; see the module docstring.

    With nothing swapped (use=None or "reference") every component is compared with itself, which must pass.
    `data`: "corpus" (the built-in corpus as bytes) or "synthetic" (a Markov token stream, no files).
    `mode`: "equal" (a re-implementation, with verdicts) or "design" (a different design: no equality verdict).
    """
    t_start = time.perf_counter()
    say = progress or (lambda message: None)
    how = get_mode(mode)
    if steps < 0 or batch_size < 1:
        raise ConfigError(f"--steps must be >= 0 and the batch size >= 1 (got {steps}, {batch_size}).")
    if data not in DATA_CHOICES:
        raise ConfigError(f"unknown data {data!r}; choose one of {', '.join(DATA_CHOICES)}.")
    chosen = resolve_use(use)
    config = (config or default_compare_config()).validate()
    check_config = (check_config or default_check_config()).validate()
    dev = resolve_device(device or "auto")
    swapped = [c for c in COMPONENT_NAMES if chosen[c] != DEFAULT_SET] or list(COMPONENT_NAMES)
    report = Report(how.name, chosen, format_use(chosen), config.to_dict(), check_config.to_dict(), str(dev), seed)

    with one_thread():  # tiny models: one CPU thread is fastest (see one_thread); a GPU run is unaffected
        t = time.perf_counter()
        for component in swapped:
            say(f"checking {chosen[component]}:{component}")
            report.components.append(component_verdict(chosen[component], component, check_config, how))
        report.timings["checks_s"] = time.perf_counter() - t
        if report.not_implemented:
            report.notes.append("model probes and training skipped: " + ", ".join(report.not_implemented)
                                + " not implemented yet")
        else:
            t = time.perf_counter()
            say("probing the assembled model")
            report.probes = run_check_list(Bench(DEFAULT_SET, "model", check_config, use=chosen), "model",
                                           list(how.probes))
            report.timings["probes_s"] = time.perf_counter() - t
            if steps > 0:
                t = time.perf_counter()
                say(f"training reference and candidate for {steps} steps on {dev}")
                try:
                    report.training = side_by_side(chosen, config, steps, batch_size, data, seed, dev, how)
                except Exception as exc:
                    report.probes.append(CheckResult("model", "training runs", False,
                                                     f"{type(exc).__name__}: {exc}", {}, "raised an error"))
                report.timings["training_s"] = time.perf_counter() - t
    if not how.equality:
        skipped = sorted({name for v in report.components for name in how.skip(v.component)})
        report.notes.append(f"{how.name} mode: no equality verdict"
                            + (f"; checks that pin the reference's design were skipped ({', '.join(skipped)})"
                               if skipped else ""))
    report.elapsed_s = time.perf_counter() - t_start
    return report


def component_verdict(impl_set: str, component: str, config: GPTConfig, mode: Mode) -> ComponentVerdict:
    """The contract checks the mode applies, then (in a mode with an equality claim) the isolation comparison with
    the reference; when anything fails, the component's diagnosis ladder names the cause, which comes first."""
    bench = Bench(impl_set, component, config)
    skip = mode.skip(component)
    checks = run_check_list(bench, component, checks_for(component), skip=skip)
    started = not any(r.diagnosis == "not implemented" for r in checks)
    isolation = isolation_result(bench) if mode.equality and started else None
    todo = next((r for r in [*checks, isolation] if r is not None and r.diagnosis == "not implemented"), None)
    if todo is not None:
        return ComponentVerdict(component, impl_set, "not implemented", "not implemented", checks, isolation,
                                ["not implemented"], todo.detail)
    failed = [r for r in [*checks, isolation] if r is not None and r.passed is False]
    if not failed:
        detail = isolation.detail if isolation is not None else f"{len(checks)} applicable checks pass"
        return ComponentVerdict(component, impl_set, "pass", "", checks, isolation, [], detail)
    cause = find_cause(bench, skip)
    first = cause or failed[0]
    diagnoses = list(dict.fromkeys(r.diagnosis for r in [*([cause] if cause else []), *failed] if r.diagnosis))
    return ComponentVerdict(component, impl_set, "fail", diagnoses[0] if diagnoses else "", checks, isolation,
                            diagnoses, f"{first.name}: {first.detail}", cause=cause, where=first.where)


def side_by_side(use: dict[str, str], config: GPTConfig, steps: int, batch_size: int, data: str, seed: int,
                 device: torch.device, mode: Mode) -> TrainingComparison:
    """Both models trained on the same batches with the same seed. The candidate starts from the reference's
    weights (less noise in the difference) unless its init is swapped or its parameters have other shapes."""
    batches = make_batches(config, steps, batch_size, data, seed, device)
    with seeded(seed):
        ref_model = build_model(config, device=device)
        ref_model.init_weights()
    start = {k: v.detach().clone() for k, v in ref_model.state_dict().items()}
    del ref_model
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model(config, use=use).state_dict().items()}
    shared = use["init"] == DEFAULT_SET and shapes == {k: v.shape for k, v in start.items()}
    reference = train_curve(dict.fromkeys(COMPONENT_NAMES, DEFAULT_SET), config, batches, seed, device, state=start)
    candidate = train_curve(use, config, batches, seed, device, state=start if shared else None)
    if not mode.equality:
        return TrainingComparison(steps, batch_size, config.sequence_len, data, reference, candidate, float("nan"),
                                  None)
    if not shared:
        tolerance = TRAINING_TOLERANCE_OWN_INIT
    else:
        tolerance = TRAINING_TOLERANCE_SHARED_AUTOCAST if device.type == "cuda" else TRAINING_TOLERANCE_SHARED
    comparison = TrainingComparison(steps, batch_size, config.sequence_len, data, reference, candidate, tolerance,
                                    None)
    finished = len(candidate.losses) == len(reference.losses)
    comparison.passed = finished and comparison.max_abs_diff <= tolerance
    return comparison


def design_checks(use: UseSpec, config: GPTConfig | None = None) -> list[CheckResult]:
    """The checks of compare's "design" mode without the training: the applicable checks of every swapped component
    (each in an otherwise-reference model), then the whole candidate model (causality, gradients, KV cache, devices,
    softcap, init sets every parameter, every parameter in exactly one optimizer group). CheckResult.component is
    the component, or "model" for the whole-model checks."""
    report = compare(use, steps=0, device="cpu", check_config=config, mode="design")
    return [r for v in report.components for r in v.checks] + report.probes
