"""Rotary's ladder: the table's form, then which convention apply follows (angle zero, channel pairs, direction,
a rotation at all), then the table's frequencies."""

from __future__ import annotations

import math

import torch

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.modules import (
    result,
    rotary_convention,
    rotary_output,
    rotary_preserves_length,
    rotary_relative_offset,
    rotary_table,
)
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.tolerance import rel_error
from nanogpt_core.model.assembly import ROTARY_BASE

SAME = 1e-2  # two bf16-table rotations agree to ~4e-3 (one rounding of a value near 1); a wrong formula is O(1)


def _x(b: Bench, T: int = 8) -> torch.Tensor:
    return torch.randn(2, T, 3, b.config.head_dim, generator=torch.Generator().manual_seed(31))


def cos_sin_swapped(b: Bench) -> CheckResult:
    """At position 0 the angle is 0: the table must read cos = 1, sin = 0, and apply(x, cos=1, sin=0) must be x."""
    cos, sin = b.cos_sin(4, b.impl())
    cos0, sin0 = cos[0, 0, 0].double(), sin[0, 0, 0].double()
    if (cos0 - 0).abs().max() < SAME and (sin0 - 1).abs().max() < SAME:
        return result("angle zero at position 0", False, "the table's row 0 reads cos = 0, sin = 1 (angle 0 has "
                      "cos = 1, sin = 0): precompute returns (sin, cos)", {"cos_row0": cos0.tolist()[:4]},
                      "cos and sin swapped", method="precompute")
    x = _x(b)
    ones, zeros = torch.ones(1, x.size(1), 1, x.size(-1) // 2), torch.zeros(1, x.size(1), 1, x.size(-1) // 2)
    at_zero = rel_error(b.impl().apply(x, ones.bfloat16(), zeros.bfloat16()), x)
    ref_cos, ref_sin = b.cos_sin(x.size(1))
    swapped = rel_error(b.impl().apply(x, ref_sin, ref_cos), b.ref().apply(x, ref_cos, ref_sin))
    found = at_zero > SAME and swapped < SAME
    return result("angle zero at position 0", not found, f"apply(x, cos=1, sin=0) changes x by rel {at_zero:.2f}, "
                  f"and apply(x, sin, cos) equals the reference's apply(x, cos, sin) (rel {swapped:.1e}): apply uses "
                  "sin where cos belongs" if found else "apply(x, cos=1, sin=0) is x",
                  {"change_at_angle_zero": at_zero, "rel_with_swapped_arguments": swapped}, "cos and sin swapped",
                  method="apply")


def reversed_rotation(b: Bench) -> CheckResult:
    """The same rotation by -angle: apply with -sin (or a table with -sin) equals the reference's."""
    x = _x(b)
    cos, sin = b.cos_sin(x.size(1))
    flipped = rel_error(b.impl().apply(x, cos, -sin), b.ref().apply(x, cos, sin))
    if flipped < SAME < rel_error(b.impl().apply(x, cos, sin), b.ref().apply(x, cos, sin)):
        return result("direction of rotation", False, f"apply(x, cos, -sin) equals the reference's apply(x, cos, sin) "
                      f"(rel {flipped:.1e}): the rotation goes the other way", {"rel_with_sin_negated": flipped},
                      "rotary rotation reversed", method="apply")
    cos_c, sin_c = b.cos_sin(x.size(1), b.impl())
    if rel_error(cos_c, cos) < SAME and rel_error(sin_c, -sin) < SAME < rel_error(sin_c, sin):
        return result("direction of rotation", False, "the table's sin is the reference's with the sign flipped: "
                      "negative angles", {}, "rotary rotation reversed", method="precompute")
    return result("direction of rotation", True, "rotates by +angle, as the reference", {})


def fitted_base(cos: torch.Tensor, sin: torch.Tensor) -> float:
    """The base b of angle(t=1, i) = b^(-2i/D), from row 1 of a table (median over channels 1..D/2-1)."""
    angles = torch.atan2(sin[0, 1, 0].double(), cos[0, 1, 0].double())
    half = angles.numel()
    i = torch.arange(1, half, dtype=torch.float64)
    estimates = -(2 * half) * angles[1:].abs().clamp_min(1e-30).log() / (2 * i)
    return math.exp(estimates.median().item())


def frequencies(b: Bench) -> CheckResult:
    """Fit the base from the candidate's table (row 1: angle_i = base^(-2i/D)) and compare it with the reference's."""
    cos_c, sin_c = b.cos_sin(4, b.impl())
    cos_r, sin_r = b.cos_sin(4, b.ref())
    if rel_error(cos_c.float(), cos_r.float()) < SAME and rel_error(sin_c.float(), sin_r.float()) < SAME:
        return result("frequencies", True, "the table's first rows are the reference's", {})
    base, expected = fitted_base(cos_c, sin_c), fitted_base(cos_r, sin_r)
    numbers = {"fitted_base": base, "reference_base": expected, "base_given": ROTARY_BASE}
    found = abs(math.log(base / expected)) > 0.02
    return result("frequencies", not found, f"the table's frequencies are those of base {base:.4g} (the reference: "
                  f"{expected:.4g} = the base precompute is given)" if found else f"fitted base {base:.4g}", numbers,
                  "rotary frequencies differ", method="precompute")


PROBES = (rotary_table, rotary_output, cos_sin_swapped, rotary_convention, reversed_rotation, rotary_preserves_length,
          rotary_relative_offset, frequencies)
