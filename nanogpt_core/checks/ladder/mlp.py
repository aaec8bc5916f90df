"""The MLP's ladder: its parameters (biases, width), randomness, the activation's measured exponent, and whether
c_proj is the last operation."""

from __future__ import annotations

import math

import torch

from nanogpt_core.checks.harness import REFERENCE, Bench, seeded
from nanogpt_core.checks.ladder.common import determinism, finite, parameters
from nanogpt_core.checks.modules import mlp_activation, mlp_gradients, mlp_per_position, result
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.tolerance import rel_error


def _scaled_output(b: Bench, layer: str, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The MLP's output on the reference's weights, and with `layer`'s weight multiplied by `factor`."""
    with seeded(0):
        state = b.build(REFERENCE).state_dict()
    mlp = b.build()
    mlp.load_state_dict(state)
    x = b.x()
    with torch.no_grad():
        before = mlp(x)
        getattr(mlp, layer).weight.mul_(factor)
        return before, mlp(x)


def activation_on_hidden(b: Bench) -> CheckResult:
    """relu² acts on c_fc's output, so doubling c_fc must quadruple the output (degree 2 in c_fc). An activation
    applied to the input instead leaves the output linear in c_fc (degree 1)."""
    y1, y2 = _scaled_output(b, "c_fc", 2.0)
    degree = math.log2((y2.double().norm() / y1.double().norm().clamp_min(1e-300)).item())
    found = abs(degree - 2) > 1e-3
    return result("activation on the hidden layer", not found, f"doubling c_fc multiplies the output by "
                  f"2^{degree:.2f}, not 2^2: relu² is not applied to c_fc's output" if found else
                  "relu² acts on c_fc's output",
                  {"degree_in_c_fc": degree}, "activation not applied to c_fc's output")


def projection_last(b: Bench) -> CheckResult:
    """The output is linear in c_proj's weight: doubling c_proj must double the output. Any other factor means
    something (the square, a norm) is applied after the projection."""
    y1, y2 = _scaled_output(b, "c_proj", 2.0)
    factor = (y2.double().norm() / y1.double().norm().clamp_min(1e-300)).item()
    err = rel_error(y2, 2 * y1)
    found = err > 1e-5
    return result("c_proj last", not found, f"doubling c_proj multiplied the output by {factor:.3g} "
                  f"(2^{math.log2(factor):.2f}), not 2: something is applied after c_proj" if found else
                  "the output is linear in c_proj", {"factor": factor, "rel_to_doubled": err},
                  "something applied after c_proj")


PROBES = (parameters, determinism, finite, mlp_activation, projection_last, activation_on_hidden, mlp_per_position,
          mlp_gradients)
