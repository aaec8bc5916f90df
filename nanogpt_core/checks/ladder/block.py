"""The block's ladder, on stand-in sub-layers whose outputs it chooses (`ConstantSublayer`): does the block keep
and call them as the contract says, pass the cache on, normalise their inputs and add their outputs back with
weight 1? Writing block(x) = a * x + b * attn_out + c * mlp_out, the probes fit a, b, c."""

from __future__ import annotations

import torch

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.modules import ConstantSublayer, block_gradients, block_keeps_modules, block_pre_norm, result
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.tolerance import rel_error

RESIDUAL_TOLERANCE = 1e-6  # x + constants in fp32: exact to rounding


class RecordingSublayer(ConstantSublayer):
    """A ConstantSublayer that also records the cache it was called with."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.caches: list[object] = []

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.caches.append(args[1] if len(args) > 1 else kwargs.get("kv_cache"))
        return super().forward(x)


def _run(b: Bench, attn_value: float, mlp_value: float, x: torch.Tensor, cache: object = None):
    attn, mlp = RecordingSublayer(attn_value), ConstantSublayer(mlp_value)
    block = b.impl()(b.config, 0, attn=attn, mlp=mlp, norm=b.ref("norm"))
    with torch.no_grad():
        y = block(x, b.cos_sin(x.size(1)), cache)
    return y.double(), attn, mlp


def passes_cache(b: Bench) -> CheckResult:
    sentinel = object()
    _, attn, _ = _run(b, 0.0, 0.0, b.x(), cache=sentinel)
    got = attn.caches[0] if attn.caches else "not called"
    ok = got is sentinel
    return result("passes the KV cache", ok, "attention receives the kv_cache the block was given" if ok else
                  f"attention was called with kv_cache={got!r} instead of the one given", {},
                  "block does not pass the KV cache")


def post_norm(b: Bench) -> CheckResult:
    """Sub-layers that return 0 must leave x (RMS 10 per vector) unchanged; a block whose output then has RMS 1 per
    vector normalises the sum: post-norm."""
    x = b.x() * 10
    y, _, _ = _run(b, 0.0, 0.0, x)
    rms = y.pow(2).mean(-1).sqrt()
    err = (rms - 1).abs().max().item()
    found = err < 1e-3 and rel_error(y, x) > 1e-3
    return result("pre-norm residual", not found, f"with attn and mlp returning 0 the block returns vectors of RMS "
                  f"1 (within {err:.1e}) for inputs of RMS 10: it normalises its output" if found else
                  "zero sub-layers leave the stream un-normalised", {"output_rms_error": err},
                  "post-norm instead of pre-norm")


def residual_weights(b: Bench) -> CheckResult:
    """Fit block(x) = a x + b attn_out + c mlp_out from three runs (0, 0), (0.5, 0), (0, 0.25): the contract says
    a = b = c = 1. a = 0 or b = 0 or c = 0 is a missing residual; anything else a scaled one."""
    x = b.x() * 3
    base, _, _ = _run(b, 0.0, 0.0, x)
    a = ((base * x.double()).sum() / x.double().pow(2).sum()).item()
    with_attn, _, _ = _run(b, 0.5, 0.0, x)
    with_mlp, _, _ = _run(b, 0.0, 0.25, x)
    w_attn = ((with_attn - base).mean() / 0.5).item()
    w_mlp = ((with_mlp - base).mean() / 0.25).item()
    numbers = {"stream_weight": a, "attn_weight": w_attn, "mlp_weight": w_mlp, "tolerance": RESIDUAL_TOLERANCE}
    weights = {"the stream x": a, "attn's output": w_attn, "mlp's output": w_mlp}
    off = {k: v for k, v in weights.items() if abs(v - 1) > RESIDUAL_TOLERANCE}
    if not off:
        return result("residual weights", True, "block(x) = x + attn_out + mlp_out", numbers)
    missing = [k for k, v in off.items() if abs(v) < 1e-3]
    text = ", ".join(f"{k} x{v:.3g}" for k, v in off.items())
    return result("residual weights", False, f"block(x) = a x + b attn_out + c mlp_out with {text} (all must be 1)",
                  numbers, "missing residual" if missing else "residual branch scaled")


def mlp_input(b: Bench) -> CheckResult:
    """With attention adding 0.5, the MLP must read norm(x + 0.5), the updated stream, not norm(x)."""
    x = b.x() * 3
    _, _, mlp = _run(b, 0.5, 0.0, x)
    norm = b.ref("norm")(b.config.n_embd)
    got = mlp.inputs[0].double() if mlp.inputs else None
    if got is None:
        return result("MLP input", False, "mlp never called", {}, "missing residual")
    before, after = norm(x).double(), norm(x + 0.5).double()
    found = rel_error(got, before) < 1e-5 < rel_error(got, after)
    return result("MLP input", not found, "the MLP reads norm(x), the stream before attention's update" if found
                  else "the MLP reads the updated stream", {"rel_to_norm_x": rel_error(got, before)},
                  "MLP reads the stream before the attention update")


PROBES = (block_keeps_modules, passes_cache, post_norm, residual_weights, mlp_input, block_pre_norm, block_gradients)
