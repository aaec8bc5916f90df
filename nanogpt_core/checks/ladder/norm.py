"""The norm's ladder: randomness, the shape of the reduction (keepdim, which dim), what it divides by, eps.

Every probe feeds vectors whose statistics it sets itself, and reads what the norm did to them: y = x / d(x) for a
correct RMSNorm has d(x) = sqrt(mean(x^2) + eps), which is the RMS itself at the scales used (3 to 100, where any
eps in [0, 1e-5] moves d by < 1e-6).
"""

from __future__ import annotations

import math

import torch

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.ladder.common import determinism, finite
from nanogpt_core.checks.modules import (
    NORMALISED_SCALES,
    NORMALISED_TOLERANCE,
    norm_eps,
    norm_gradients,
    norm_per_vector,
    result,
)
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.tolerance import least_squares, rel_error


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.double().pow(2).mean(-1).sqrt()


def _vectors(b: Bench, n: int = 16, offset: float = 0.0) -> torch.Tensor:
    """n vectors (n, C) at RMS from 3 to 100 (log-spaced), Gaussian directions plus `offset` in every channel."""
    g = torch.Generator().manual_seed(21)
    x = torch.randn(n, b.config.n_embd, generator=g) + offset
    scales = torch.logspace(math.log10(NORMALISED_SCALES[0]), math.log10(NORMALISED_SCALES[1]), n)
    return (x.double() / _rms(x)[:, None] * scales.double()[:, None]).float()


def keepdim(b: Bench) -> CheckResult:
    """On a square (C, C) input a reduction without keepdim broadcasts by accident: row i is then divided by the
    RMS of row j, channel by channel. If that is exactly what came out, the reduced dimension was dropped."""
    x = _vectors(b, b.config.n_embd)
    y = b.build()(x)
    keepdim_lost = (x.double() / _rms(x)[None, :]).float()
    err = rel_error(y, keepdim_lost)
    found = err <= NORMALISED_TOLERANCE and rel_error(y, x / _rms(x)[:, None].float()) > 0.1
    return result("reduction keeps its dimension", not found,
                  f"on a ({x.size(0)}, {x.size(1)}) input the output equals x / rms(x, dim=-1) broadcast along the "
                  f"last dimension (rel {err:.1e}): mean(dim=-1) dropped the dimension it reduced" if found else
                  "the reduced dimension broadcasts against x", {"rel_to_broadcast_bug": err},
                  "norm reduces without keepdim")


def subtracts_mean(b: Bench) -> CheckResult:
    """Vectors with a large common offset: RMSNorm keeps it (y is x rescaled), LayerNorm removes it (y has mean 0)."""
    x = _vectors(b, offset=3.0)
    y = b.build()(x).double()
    kept = (y.mean(-1) / _rms(y).clamp_min(1e-12)).abs().min().item()  # RMSNorm: ~0.95 for every vector
    x_share = (x.double().mean(-1) / _rms(x)).abs().min().item()
    found = kept < 1e-3 < x_share
    return result("keeps the mean", not found, f"inputs whose mean is {x_share:.2f} of their RMS come out with mean "
                  f"{kept:.1e} of theirs: the mean was subtracted" if found else "the output is the input rescaled",
                  {"output_mean_share": kept, "input_mean_share": x_share}, "norm subtracts the mean")


def statistic(b: Bench) -> CheckResult:
    """What the norm divides by: d = rms(x) / rms(y) per vector. RMSNorm's d is the RMS; fit d = c * RMS^p over
    scales 3..100 and name what it is instead (RMS^2: no square root; sqrt(C) * RMS: the L2 norm; ...)."""
    x = _vectors(b)
    y = b.build()(x).double()
    parallel = torch.nn.functional.cosine_similarity(y, x.double(), dim=-1).min().item()
    d = _rms(x) / _rms(y).clamp_min(1e-300)
    ratio = d / _rms(x)
    err = (ratio - 1).abs().max().item()
    numbers = {"max_rel_error_of_divisor": err, "min_cosine_output_input": parallel}
    if err <= NORMALISED_TOLERANCE or parallel < 1 - 1e-6:
        return result("divides by the RMS", True, f"divides each vector by its RMS (within {err:.1e})", numbers)
    logs = torch.stack([_rms(x).log(), torch.ones_like(d)], 1)
    p, log_c = least_squares(logs, d.log()[:, None]).flatten().tolist()
    numbers.update(exponent=p, factor=math.exp(log_c))
    C = b.config.n_embd
    named = {"mean(|x|)": x.double().abs().mean(-1), "max(|x|)": x.double().abs().amax(-1),
             "the standard deviation (x.std / x.var subtract the mean)": x.double().std(-1, unbiased=False),
             "the unbiased standard deviation (x.std / x.var subtract the mean)": x.double().std(-1),
             "the L2 norm (sqrt(C) * RMS)": _rms(x) * math.sqrt(C), "mean(x^2) (no square root)": _rms(x) ** 2,
             "sqrt(sum(x^2)) / C": _rms(x) / math.sqrt(C)}
    if abs(p) < 0.05:
        return result("divides by the RMS", False, f"the output's scale follows the input's (divisor ~ RMS^{p:.2f}): "
                      "the vectors are not normalised at all", numbers, "norm does not normalise")
    match = next((label for label, value in named.items() if ((d / value) - 1).abs().max().item() < 1e-3), None)
    what = match or f"{math.exp(log_c):.3g} * RMS^{p:.2f}"
    return result("divides by the RMS", False, f"divides each vector by {what} instead of its RMS (off by up to "
                  f"{err:.2g} at RMS 3..100)", numbers, "norm divides by the wrong statistic")


PROBES = (determinism, finite, keepdim, norm_per_vector, subtracts_mean, norm_eps, statistic, norm_gradients)
