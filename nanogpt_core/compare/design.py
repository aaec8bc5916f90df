"""Checks for a *different design*: the contract checks that still apply when a component is meant to differ.

`compare` in its "equal" mode asks whether a component computes what the reference computes (a learner's
attention must match to float rounding). An experiment asks something else: SwiGLU is not relu², a sliding window
is not full attention, and no equality verdict makes sense. What still makes sense are the promises every
implementation of the component makes (shapes, causality, the KV cache, gradients to every parameter, every
parameter in exactly one optimizer group) and the probes of the assembled model.

So this module drops the checks that pin *how* the reference computes (`PINNED_CHECKS`) and adds whole-model
checks on the candidate model (the optimizer and init checks see its extra parameters):

    results = design_checks("swiglu:mlp,layernorm:norm")
    assert all(r.passed for r in results)

`design_report` is `compare` in this mode: compare's Report with mode "design", a verdict per component from the
applicable checks only, and the side-by-side training without an equality verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from nanogpt_core.checks.harness import Bench, default_check_config, seeded
from nanogpt_core.checks.modules import Check
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.runner import checks_for, run_check_list
from nanogpt_core.checks.whole_model import IN_MODEL_CHECKS, MODEL_CHECKS, init_every_parameter, softcap_probe
from nanogpt_core.compare.report import ComponentVerdict, Report, TrainingComparison
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.use_spec import DEFAULT_SET, UseSpec, format_use, resolve_use

DESIGN_MODE = "design"  # Report.mode of a comparison without an equality verdict

# Per component, the check names (as CheckResult.name reports them) that test the reference's design rather than
# the component's contract, with the reason a different design may fail them.
PINNED_CHECKS: dict[str, dict[str, str]] = {
    "norm": {},
    "rotary": {
        "relative-offset property": "another position scheme (ALiBi, none) need not rotate q and k",
        "rotation keeps vector lengths": "another position scheme need not be a rotation",
    },
    "attention": {
        "parameters": "a design may add or reshape parameters",
        "QK-norm": "QK-norm is nanochat's choice, not a contract of attention",
    },
    "mlp": {
        "parameters": "a design may use its own hidden size or extra matrices (SwiGLU's gate)",
        "relu² activation": "the activation is the design choice under test",
    },
    "block": {
        "pre-norm": "where the norm sits (pre, post, sandwich) is a design choice",
    },
    "init": {
        "init std": "another init scheme draws other stds",
        "zeroed output projections": "another init scheme need not zero c_proj and lm_head",
        "first loss = ln(vocab)": "follows from a zeroed lm_head, which another scheme need not have",
    },
    "optimizer": {},
    "generate": {},
}


def _run(bench: Bench, component: str, checks: list[Check]) -> list[CheckResult]:
    """The checks that apply to a different design: the pinned ones run, then drop out of the report."""
    return run_check_list(bench, component, checks, skip=frozenset(PINNED_CHECKS.get(component, {})))


def design_checks(use: UseSpec, config: GPTConfig | None = None,
                  device: str | torch.device = "cpu") -> list[CheckResult]:
    """The applicable checks of every swapped component (each in an otherwise-reference model), then the whole
    candidate model: causality, gradients, KV cache, devices, softcap, init sets every parameter, and the optimizer
    checks (every parameter in exactly one group, one step moves them all). CheckResult.component is the component,
    or "model" for the whole-model checks."""
    chosen = resolve_use(use)
    config = (config or default_check_config()).validate()
    dev = torch.device(device)
    results: list[CheckResult] = []
    for component in COMPONENT_NAMES:
        if chosen[component] != DEFAULT_SET:
            bench = Bench(chosen[component], component, config, dev)
            results.extend(_run(bench, component, checks_for(component)))
    model_bench = Bench(DEFAULT_SET, "model", config, dev, use=chosen)
    whole = [*IN_MODEL_CHECKS, _softcap, init_every_parameter, *MODEL_CHECKS["optimizer"]]
    results.extend(_run(model_bench, "model", whole))
    return results


def _softcap(bench: Bench) -> CheckResult:
    return softcap_probe(bench.model(), bench.tokens())


# --- compare in "design" mode ----------------------------------------------------------------------------------------


def design_report(use: UseSpec, steps: int = 50, device: str | torch.device | None = None,
                  config: GPTConfig | None = None, seed: int = 0, *, batch_size: int = 8, data: str = "corpus",
                  check_config: GPTConfig | None = None, progress: Callable[[str], None] | None = None) -> Report:
    """`compare` for a different design: the same Report as compare's, with mode "design".

    Per swapped component a verdict from the checks that apply (pass, or fail when the design breaks the contract;
    no isolation comparison), the whole-model checks as probes, and both models trained side by side on the same
    batches with the same seed, without an equality verdict (`training.passed` is None): the curves, the speed and
    the memory are the result. The candidate starts from the reference's weights when its parameters have the same
    names and shapes (less noise in the difference), else from its own init.
    """
    from nanogpt_core.compare.curves import make_batches, train_curve
    from nanogpt_core.compare.run import prepare
    from nanogpt_core.model.assembly import build_model

    t_start = time.perf_counter()
    say = progress or (lambda message: None)
    chosen, config, check_config, dev = prepare(use, steps, device, config, batch_size, data, check_config)
    report = Report(DESIGN_MODE, chosen, format_use(chosen), config.to_dict(), check_config.to_dict(), str(dev),
                    seed)

    t = time.perf_counter()
    say("running the checks that apply to a different design")
    results = design_checks(chosen, check_config)
    for component in COMPONENT_NAMES:
        if chosen[component] != DEFAULT_SET:
            own = [r for r in results if r.component == component]
            report.components.append(_verdict(chosen[component], component, own))
    report.probes = [r for r in results if r.component == "model"]
    report.timings["checks_s"] = time.perf_counter() - t
    if report.not_implemented:
        report.notes.append("training skipped: " + ", ".join(report.not_implemented) + " not implemented yet")
    elif steps > 0:
        t = time.perf_counter()
        say(f"training reference and candidate for {steps} steps on {dev}")
        batches = make_batches(config, steps, batch_size, data, seed, dev)
        with seeded(seed):
            ref_model = build_model(config, device=dev)
            ref_model.init_weights()
        start = {k: v.detach().clone() for k, v in ref_model.state_dict().items()}
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in build_model(config, use=chosen).state_dict().items()}
        shared = shapes == {k: v.shape for k, v in start.items()}
        del ref_model
        reference = train_curve(dict.fromkeys(COMPONENT_NAMES, DEFAULT_SET), config, batches, seed, dev, state=start)
        candidate = train_curve(chosen, config, batches, seed, dev, state=start if shared else None)
        report.training = TrainingComparison(steps, batch_size, config.sequence_len, data, reference, candidate,
                                             float("nan"), None)
        report.timings["training_s"] = time.perf_counter() - t
    report.notes.append("design mode: no equality verdict; checks that pin the reference's design were skipped ("
                        + ", ".join(sorted({n for c in report.components for n in PINNED_CHECKS[c.component]}))
                        + ")" if report.components else "design mode: no equality verdict")
    report.elapsed_s = time.perf_counter() - t_start
    return report


def _verdict(impl_set: str, component: str, checks: list[CheckResult]) -> ComponentVerdict:
    todo = next((r for r in checks if r.diagnosis == "not implemented"), None)
    if todo is not None:
        return ComponentVerdict(component, impl_set, "not implemented", "not implemented", checks, None,
                                ["not implemented"], todo.detail)
    failed = [r for r in checks if r.passed is False]
    if not failed:
        return ComponentVerdict(component, impl_set, "pass", "", checks, None, [],
                                f"{len(checks)} applicable checks pass")
    diagnoses = list(dict.fromkeys(r.diagnosis for r in failed if r.diagnosis))
    return ComponentVerdict(component, impl_set, "fail", diagnoses[0] if diagnoses else "", checks, None, diagnoses,
                            f"{failed[0].name}: {failed[0].detail}")
