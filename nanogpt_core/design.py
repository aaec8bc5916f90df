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
"""

from __future__ import annotations

import dataclasses

import torch

from nanogpt_core.checks.harness import Bench, default_check_config, seeded
from nanogpt_core.checks.modules import Check
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.runner import SEED, checks_for, error_result, not_implemented
from nanogpt_core.checks.whole_model import IN_MODEL_CHECKS, MODEL_CHECKS, init_every_parameter, softcap_probe
from nanogpt_core.config import GPTConfig
from nanogpt_core.contracts import COMPONENT_NAMES
from nanogpt_core.use_spec import DEFAULT_SET, UseSpec, resolve_use

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
    results = []
    for check in checks:
        try:
            with seeded(SEED):
                r = check(bench)
        except NotImplementedError as exc:
            return [not_implemented(component, exc)]
        except Exception as exc:  # a crash in the component is a failed check, not a crash of the checker
            r = error_result(component, check, exc)
        if r.name in PINNED_CHECKS.get(component, {}):  # run, then dropped: a check's name is what it reports
            continue
        results.append(dataclasses.replace(r, component=component))
    return results


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
