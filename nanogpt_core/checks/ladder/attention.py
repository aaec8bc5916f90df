"""Attention's ladder. The probes rewire the weights so each one measures a single thing:

- c_proj = identity, so the output is the merged heads themselves;
- q and k read only the first half of the channels, v only the second half ("markers"), so values can be set
  without touching the attention pattern, and the other way round.

With one-hot position markers as values (v at position s = e_s), head h's output row t *is* its attention weights
A_h[t, :]: leakage, the softmax scale and whether positions matter are then read off the weights directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from nanogpt_core.checks.harness import REFERENCE, Bench, seeded
from nanogpt_core.checks.isolation import IdentityNorm, IdentityRotary, MeanCenteringNorm, module_diffs
from nanogpt_core.checks.ladder.common import determinism, finite, parameters
from nanogpt_core.checks.modules import (
    attention_causal,
    attention_gqa_mapping,
    attention_gradients,
    attention_kv_cache,
    attention_qk_norm,
    result,
)
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.tolerance import rel_error

T = 12  # positions in the probes; at most head_dim, so a one-hot position marker fits in one value vector
WEIGHT_TOLERANCE = 1e-5  # attention weights in fp32: a correct implementation's readout is exact to ~1e-7


def _rewired(b: Bench, edit: Callable[[dict[str, torch.Tensor]], None], impl_set: str | None = None,
             norm: type[nn.Module] | None = None) -> nn.Module:
    """The candidate (or `impl_set`'s) attention on the reference's seeded weights, edited by `edit`."""
    with seeded(0):
        state = {k: v.clone() for k, v in b.build(REFERENCE, norm=norm).state_dict().items()}
    edit(state)
    module = b.build(impl_set, norm=norm)
    module.load_state_dict(state)
    return module


def _halves(b: Bench) -> tuple[int, int]:
    C = b.config.n_embd
    return C // 2, C  # markers live in channels [C/2, C)


def _identity_proj(state: dict[str, torch.Tensor]) -> None:
    state["c_proj.weight"] = torch.eye(state["c_proj.weight"].size(0))


def _split_reads(b: Bench, state: dict[str, torch.Tensor]) -> None:
    """q and k read the first half of the channels only, v the second half only."""
    lo, _ = _halves(b)
    state["c_q.weight"][:, lo:] = 0
    state["c_k.weight"][:, lo:] = 0
    state["c_v.weight"][:, :lo] = 0
    _identity_proj(state)


def _base(b: Bench, constant: bool = False) -> torch.Tensor:
    """(2, T, C) with random content in the q/k half (the same at every position if `constant`), zeros elsewhere."""
    lo, C = _halves(b)
    g = torch.Generator().manual_seed(41)
    x = torch.zeros(2, T, C)
    content = torch.randn(2, 1 if constant else T, lo, generator=g) * 2
    x[..., :lo] = content
    return x


def _call(module: nn.Module, b: Bench, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x, b.cos_sin(x.size(1)), None)


def _readout_state(b: Bench, state: dict[str, torch.Tensor]) -> None:
    """v at position s = e_s (the marker of position s), in every key/value head."""
    _split_reads(b, state)
    lo, _ = _halves(b)
    D, Hkv = b.config.head_dim, b.config.n_kv_head
    c_v = torch.zeros_like(state["c_v.weight"])
    for g in range(Hkv):
        for j in range(min(D, T)):
            c_v[g * D + j, lo + j] = 1.0
    state["c_v.weight"] = c_v


def attention_weights(b: Bench, constant_content: bool = False) -> torch.Tensor:
    """The candidate's attention weights A (2, H, T, T), read off its output with one-hot position values."""
    lo, _ = _halves(b)
    x = _base(b, constant_content)
    x[:, torch.arange(T), lo + torch.arange(T)] = 1.0
    y = _call(_rewired(b, lambda s: _readout_state(b, s)), b, x)
    H, D = b.config.n_head, b.config.head_dim
    return y.view(2, T, H, D)[..., :T].transpose(1, 2).double()  # (B, H, Tq, Tk)


def heads_layout(b: Bench) -> CheckResult:
    """With c_proj = identity the output is the merged heads: if it holds exactly the reference's numbers, but in
    other places, the (B, H, T, D) -> (B, T, C) merge is wrong (a view or reshape without the transpose)."""
    x = torch.randn(2, T, b.config.n_embd, generator=torch.Generator().manual_seed(42))
    cand = _call(_rewired(b, _identity_proj), b, x)
    ref = _call(_rewired(b, _identity_proj, impl_set=REFERENCE), b, x)
    same_values = rel_error(cand.flatten().sort().values, ref.flatten().sort().values)
    in_place = rel_error(cand, ref)
    moved = ((cand - ref).abs() > 1e-5 * ref.abs().max()).double().mean().item()
    found = same_values < 1e-5 and in_place > 1e-3
    return result("heads layout", not found, f"the output holds the reference's values (sorted, rel "
                  f"{same_values:.1e}) but {moved:.0%} of them in other places" if found else
                  "heads are merged back in place", {"sorted_rel": same_values, "moved_share": moved},
                  "heads merged without transpose")


def values_untouched(b: Bench) -> CheckResult:
    """The same value vector u (RMS 5) at every position: attention averages it, so every output must be u. A
    different vector means v itself was changed (rotary or a norm on v); u scaled differently at each position
    means the weights do not sum to 1 (softmax over the wrong dimension)."""
    lo, C = _halves(b)
    D, Hkv = b.config.head_dim, b.config.n_kv_head
    g = torch.Generator().manual_seed(43)
    marker = torch.randn(C - lo, generator=g)
    reads = torch.randn(D, C - lo, generator=g)

    def edit(state: dict[str, torch.Tensor]) -> None:
        _split_reads(b, state)
        state["c_v.weight"][:, lo:] = reads.repeat(Hkv, 1)

    marker = marker * 5 / (reads @ marker).pow(2).mean().sqrt()  # v = reads @ marker has RMS 5
    u = reads @ marker
    x = _base(b)
    x[..., lo:] = marker
    y = _call(_rewired(b, edit), b, x).view(2, T, b.config.n_head, D).double()
    if not torch.isfinite(y).all():
        return result("values untouched", True, "the output is not finite: the mask probe looks at that", {})
    expected = u.double().expand_as(y)
    dev = rel_error(y, expected)
    numbers = {"rel_deviation": dev}
    if dev <= WEIGHT_TOLERANCE:
        return result("values untouched", True, f"the same v everywhere comes out unchanged (rel {dev:.1e})", numbers)
    factor = (y * expected).sum(-1) / expected.pow(2).sum(-1)  # (B, T, H): output along u
    parallel = (y - factor[..., None] * expected).norm(dim=-1).max().item() / expected.norm(dim=-1).max().item()
    spread = (factor.max() - factor.min()).item()
    numbers.update(weight_sums_min=factor.min().item(), weight_sums_max=factor.max().item(), off_axis=parallel)
    if parallel < WEIGHT_TOLERANCE and spread > WEIGHT_TOLERANCE:
        return result("values untouched", False, f"with the same v at every position the output is v times "
                      f"{factor.min().item():.3g}..{factor.max().item():.3g}: the attention weights of a query sum to "
                      "that instead of 1", numbers, "attention weights do not sum to 1")
    def no_keys(state: dict[str, torch.Tensor]) -> None:
        edit(state)
        state["c_k.weight"].zero_()

    keyless = _call(_rewired(b, no_keys), b, x).double()  # zero keys: uniform weights, and still v on average
    if keyless.norm() <= 1e-6 * expected.norm():
        return result("values untouched", False, "with c_k zeroed the output is zero, though v (from c_v) is not: "
                      "the values are computed from c_k", numbers, "values not taken from c_v")
    what = (f"v scaled by {factor.mean().item():.3g} at every position" if parallel < WEIGHT_TOLERANCE
            else f"a different vector (rel {dev:.2f}), changing along the sequence by "
                 f"{rel_error(y[:, -1], y[:, 0]):.2f}")
    return result("values untouched", False, f"with the same v at every position the output should be v, and is "
                  f"{what}: something acts on v before the weighted sum", numbers,
                  "values transformed before attention")


def leakage(b: Bench) -> CheckResult:
    """Read the weights and sum those on later positions: any weight above the diagonal is a causal leak."""
    A = attention_weights(b)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    self_weight = torch.diagonal(A, dim1=-2, dim2=-1)[..., 1:]  # every query but the first, on its own key
    later_rows_finite = bool(torch.isfinite(A[..., 1:, :]).all())
    if later_rows_finite and self_weight.abs().max() <= WEIGHT_TOLERANCE:
        return result("no weight on later positions", False, "every query puts zero weight on its own position "
                      f"(max {self_weight.nan_to_num(0.0).abs().max().item():.1e}), and the first, which may see only "
                      f"itself, gets {'NaN' if torch.isnan(A[..., 0, :]).any() else 'nothing'}: the mask is shifted "
                      "one place", {}, "causal mask hides the current position")
    leak = (A.nan_to_num(0.0) * future).sum(-1)  # (B, H, Tq)
    worst = leak.max().item()
    numbers = {"max_weight_on_later_positions": worst, "tolerance": WEIGHT_TOLERANCE}
    if worst <= WEIGHT_TOLERANCE:
        return result("no weight on later positions", True, "every query puts zero weight on later keys", numbers)
    _, h, t = (int(i) for i in (leak == leak.max()).nonzero()[0])
    return result("no weight on later positions", False, f"query position {t} of head {h} puts weight {worst:.2f} "
                  f"on later positions", numbers, "causal leakage")


def rotary_used(b: Bench) -> CheckResult:
    """The same content at every position: only rotary tells positions apart, so without it every query weighs
    all the keys it may see equally (1 / (t + 1))."""
    A = attention_weights(b, constant_content=True)
    uniform = torch.tril(torch.ones(T, T, dtype=torch.float64)) / torch.arange(1, T + 1, dtype=torch.float64)[:, None]
    dev = (A - uniform).abs().max().item()
    found = dev < WEIGHT_TOLERANCE
    return result("positions matter", not found, f"with the same token at every position the attention weights are "
                  f"uniform (max deviation {dev:.1e}): q and k carry no position" if found else
                  f"identical tokens get position-dependent weights (spread {dev:.2f})", {"max_dev_from_uniform": dev},
                  "rotary not applied to q and k")


def _scores(b: Bench, x: torch.Tensor) -> torch.Tensor:
    """q . k (unscaled) as the contract computes it from the readout weights: rotary, then the injected norm,
    then one key/value head per group of query heads. (B, H, T, T)"""
    state: dict[str, torch.Tensor] = {}
    with seeded(0):
        state = {k: v.clone() for k, v in b.build(REFERENCE).state_dict().items()}
    _readout_state(b, state)
    cfg = b.config
    H, Hkv, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    cos, sin = b.cos_sin(T)
    rotary, norm = b.ref("rotary"), b.ref("norm")(D)
    q = norm(rotary.apply((x @ state["c_q.weight"].T).view(2, T, H, D), cos, sin)).transpose(1, 2)
    k = norm(rotary.apply((x @ state["c_k.weight"].T).view(2, T, Hkv, D), cos, sin)).transpose(1, 2)
    k = k.repeat_interleave(H // Hkv, dim=1)
    return (q @ k.transpose(-2, -1)).double()


def softmax_scale(b: Bench) -> CheckResult:
    """Fit log A[t, s] = alpha * (q_t . k_s) + c_t over the visible keys: if the fit is exact, alpha is the scale
    the candidate applies, and the reference's is 1 / sqrt(head_dim)."""
    lo, _ = _halves(b)
    A = attention_weights(b)
    x = _base(b)
    x[:, torch.arange(T), lo + torch.arange(T)] = 1.0
    S = _scores(b, x)
    visible = torch.tril(torch.ones(T, T, dtype=torch.bool))
    visible[0, 0] = False  # one key: nothing to fit
    usable = visible & (A > 1e-30)
    logA = A.clamp_min(1e-300).log()
    rows_a, rows_s = [], []
    for t in range(1, T):
        keep = usable[..., t, : t + 1]
        la, s = logA[..., t, : t + 1], S[..., t, : t + 1]
        if not keep.all():
            continue
        rows_a.append(la - la.mean(-1, keepdim=True))
        rows_s.append(s - s.mean(-1, keepdim=True))
    da, ds = torch.cat([r.flatten() for r in rows_a]), torch.cat([r.flatten() for r in rows_s])
    alpha = (da @ ds / (ds @ ds)).item()
    residual = ((da - alpha * ds).norm() / da.norm().clamp_min(1e-300)).item()
    expected = 1 / math.sqrt(b.config.head_dim)
    factor = alpha / expected
    numbers = {"fitted_scale": alpha, "expected_scale": expected, "factor": factor, "fit_residual": residual}
    found = residual < 1e-3 and abs(factor - 1) > 1e-3
    return result("softmax scale", not found, f"the scores are scaled by {alpha:.4g} = {factor:.3g} x "
                  f"1/sqrt({b.config.head_dim}) (fitted from the attention weights, residual {residual:.1e})"
                  if found else f"fitted scale {factor:.4g} x 1/sqrt(head_dim) (residual {residual:.1e})", numbers,
                  "wrong softmax scale")


def norm_placement(b: Bench) -> CheckResult:
    """Inject other norms. Equal to the reference with a mean-subtracting norm too: fine. Equal with the
    identity but not with mean subtraction: QK-norm sits elsewhere relative to rotary. The same output as the
    RMSNorm reference whatever norm is injected: the injected norm is not used."""
    probe = module_diffs(b, torch.float32, norm=MeanCenteringNorm)
    if isinstance(probe, CheckResult) or all(d.passed for d in probe):
        return result("QK-norm placement", True, "matches with a mean-subtracting norm injected too", {})
    worst = max(probe, key=lambda d: d.rel / d.tolerance)
    x = torch.randn(2, T, b.config.n_embd, generator=torch.Generator().manual_seed(44))
    with seeded(0):
        ref = b.build(REFERENCE)
    cand = b.build(norm=MeanCenteringNorm)
    cand.load_state_dict(ref.state_dict())
    ignores = rel_error(_call(cand, b, x), _call(ref, b, x)) < 1e-5
    if ignores:
        return result("QK-norm placement", False, "built with a mean-subtracting norm, the output is still the "
                      f"RMSNorm one (a hard-coded norm); {worst.summary()}", {}, "QK-norm does not use the injected "
                      "norm")
    identity = module_diffs(b, torch.float32, norm=IdentityNorm)
    if not isinstance(identity, CheckResult) and all(d.passed for d in identity):
        return result("QK-norm placement", False, "equal to the reference with an identity norm, not with a "
                      f"mean-subtracting one: QK-norm and rotary are applied in another order; {worst.summary()}",
                      {}, "rotary applied after QK-norm")
    return result("QK-norm placement", True, "differs with other norms injected too, for another reason", {})


def rotary_call(b: Bench) -> CheckResult:
    """Inject a rotary that does nothing: if the candidate then equals the reference (which gets it too) but not
    with the real rotary, the difference is in how attention calls rotary (the table's arguments swapped, sliced,
    or q and k rotated in another layout)."""
    real = module_diffs(b, torch.float32)
    if isinstance(real, CheckResult) or all(d.passed for d in real):
        return result("rotary call", True, "matches with the real rotary", {})
    identity = module_diffs(b, torch.float32, rotary=IdentityRotary)
    found = not isinstance(identity, CheckResult) and all(d.passed for d in identity)
    worst = max(real, key=lambda d: d.rel / d.tolerance)
    return result("rotary call", not found, "equal to the reference when rotary does nothing, different with the "
                  f"real one: attention calls rotary.apply differently; {worst.summary()}" if found else
                  "differs without rotary too", {}, "rotary called with the wrong table")


PROBES = (parameters, determinism, heads_layout, values_untouched, leakage, finite, attention_gqa_mapping, rotary_used,
          softmax_scale, attention_qk_norm, norm_placement, rotary_call, attention_kv_cache, attention_causal,
          attention_gradients)
