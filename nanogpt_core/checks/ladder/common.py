"""Probes every module component's ladder starts with: the parameters it creates, and randomness."""

from __future__ import annotations

import torch
import torch.nn as nn

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.modules import param_shape_check, result
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.tolerance import rel_error


def call(bench: Bench, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's forward as the model calls it (attention and block also take the rotary table and a cache)."""
    if bench.component in ("attention", "block"):
        return module(x, bench.cos_sin(x.size(1)), None)
    return module(x)


def parameters(bench: Bench) -> CheckResult:
    """The parameters the contract lists, by name and shape (biases and the MLP's width named on their own)."""
    return param_shape_check(bench)


def determinism(bench: Bench) -> CheckResult:
    """Two calls on the same input, in training mode as compare trains it, must agree bit for bit: a difference is
    dropout or another random draw inside the component."""
    module = bench.build()
    x = bench.x()
    with torch.no_grad():
        first, second = call(bench, module, x), call(bench, module, x)
    differ = not torch.allclose(first, second, rtol=0.0, atol=0.0, equal_nan=True)  # NaN is not randomness
    err = rel_error(second, first) if differ else 0.0
    return result("deterministic", not differ, f"two identical calls differ by rel {err:.2e}" if differ else
                  "two identical calls give identical outputs", {"rel_difference": err}, "non-deterministic output")


def finite(bench: Bench) -> CheckResult:
    """The output of an ordinary input must be finite: a NaN or Inf is its own cause (a 0 * inf, a division by
    zero), and it would make every later probe's measurement meaningless."""
    module = bench.build()
    with torch.no_grad():
        y = call(bench, module, bench.x())
    bad = (~torch.isfinite(y)).double().mean().item()
    return result("finite output", bad == 0, f"{bad:.0%} of the output is NaN or Inf" if bad else
                  "the output is finite", {"non_finite_share": bad}, "NaN/Inf")
