"""Contract checks of the module components (norm, rotary, attention, mlp, block), each on the component alone.

A contract check needs no reference output: it tests a property the contract promises (shapes, causality, the
relative-offset property of rotary, ...), so a correct implementation written in any style passes. Each check
returns a CheckResult whose `diagnosis` names the classic bug the failure points to.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from nanogpt_core.checks.harness import REFERENCE, Bench, key_diff, named_parameter_shapes
from nanogpt_core.checks.result import CheckResult, diff_tensors
from nanogpt_core.checks.tolerance import NORM_EPS_ACCEPTED
from nanogpt_core.model.kv_cache import KVCache

Check = Callable[[Bench], CheckResult]


def result(name: str, passed: bool, detail: str, numbers: dict | None = None, diagnosis: str = "",
           method: str = "") -> CheckResult:
    """A check's outcome; the runner fills in the component (and where the method at fault is)."""
    return CheckResult("", name, bool(passed), detail, numbers or {}, "" if passed else diagnosis,
                       method="" if passed else method)


def rel_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: how much a differs from b, scale-free."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def shape_check(name: str, y: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype,
                device: torch.device) -> CheckResult:
    numbers = {"shape": list(y.shape), "expected_shape": list(shape), "dtype": str(y.dtype), "device": str(y.device)}
    if tuple(y.shape) != tuple(shape):
        return result(name, False, f"output shape {tuple(y.shape)}, expected {tuple(shape)}", numbers, "wrong shape")
    if y.dtype != dtype:
        return result(name, False, f"output dtype {y.dtype}, expected {dtype}", numbers, "wrong dtype")
    if y.device.type != device.type:
        return result(name, False, f"output on {y.device}, expected {device}", numbers,
                      "buffers on the wrong device or dtype")
    if y.is_floating_point() and not torch.isfinite(y).all():
        return result(name, False, "output contains NaN or Inf", numbers, "NaN/Inf")
    return result(name, True, f"{tuple(y.shape)} {y.dtype} on {y.device.type}", numbers)


def gradient_check(name: str, module: nn.Module, inputs: list[torch.Tensor], output: torch.Tensor) -> CheckResult:
    """Backpropagate a fixed random upstream gradient; every input and parameter must get a finite, non-zero grad."""
    g = torch.Generator().manual_seed(7)
    upstream = torch.randn(output.shape, generator=g).to(output.device, output.dtype)
    (output * upstream).sum().backward()
    named = [(f"input{i}", t) for i, t in enumerate(inputs)] + list(module.named_parameters())
    missing = [n for n, t in named if t.grad is None or not t.grad.abs().sum().item() > 0]
    bad = [n for n, t in named if t.grad is not None and not torch.isfinite(t.grad).all()]
    numbers = {"tensors": len(named), "zero_or_missing": missing, "non_finite": bad}
    if bad:
        return result(name, False, f"non-finite gradients for {', '.join(bad)}", numbers, "NaN/Inf")
    if missing:
        return result(name, False, f"zero or no gradient for {', '.join(missing)}", numbers,
                      "zero or missing gradients")
    return result(name, True, f"finite, non-zero gradients for the input and {len(named) - len(inputs)} parameters",
                  numbers)


def state_dict_check(candidate: nn.Module, reference: nn.Module) -> CheckResult:
    """The candidate's state-dict keys and shapes against the reference's: the names checkpoints depend on."""
    diff = key_diff(candidate, reference)
    numbers = {"keys": sorted(candidate.state_dict())}
    if diff:
        return result("parameters", False, diff, numbers, "state-dict keys or shapes differ from the contract",
                      method="__init__")
    return result("parameters", True, f"{len(numbers['keys'])} state-dict entries as the contract says", numbers)


def param_shape_check(b: Bench) -> CheckResult:
    """The state dict as the contract names it; biases left on and a wrong MLP width named as such."""
    cand, ref = b.build(), b.build(impl_set=REFERENCE)
    plain = state_dict_check(cand, ref)
    if plain.passed:
        return plain
    cand_shapes, ref_shapes = named_parameter_shapes(cand), named_parameter_shapes(ref)
    extra = sorted(set(cand_shapes) - set(ref_shapes))
    if extra and all(k.endswith(".bias") for k in extra) and set(ref_shapes) <= set(cand_shapes):
        return result("parameters", False, f"unexpected biases {', '.join(extra)}", plain.numbers, "biases left on",
                      method="__init__")
    hidden = cand_shapes.get("c_fc.weight", (None,))[0]
    if b.component == "mlp" and hidden is not None and hidden != ref_shapes["c_fc.weight"][0]:
        width = hidden / b.config.n_embd
        return result("parameters", False, f"c_fc is {cand_shapes['c_fc.weight']}: a hidden layer of "
                      f"{width:g} * n_embd = {hidden}, the contract says 4 * n_embd = {ref_shapes['c_fc.weight'][0]}",
                      {**plain.numbers, "hidden_width_factor": width}, "MLP hidden width is not 4 * n_embd",
                      method="__init__")
    return plain


# --- norm -----------------------------------------------------------------------------------------------------------


def norm_output(b: Bench) -> CheckResult:
    norm = b.build()
    for dtype in (torch.float32, torch.bfloat16):
        x = b.x().to(dtype)
        r = shape_check("output shape, dtype, device", norm(x), tuple(x.shape), dtype, x.device)
        if not r.passed:
            return r
    return result("output shape, dtype, device", True, "same shape, dtype (fp32 and bf16) and device as the input")


def _rms(y: torch.Tensor, dim: int) -> torch.Tensor:
    return y.double().pow(2).mean(dim).sqrt()


# Vectors with an RMS of 3 to 100: where any eps the contract accepts (<= 1e-5) moves the output's RMS by less than
# 1e-6, so these checks see the normalisation and nothing of eps (which `norm_eps` measures on its own).
NORMALISED_SCALES = (3.0, 100.0)
NORMALISED_TOLERANCE = 1e-4  # measured: the reference's per-vector RMS is 1 within 2e-7 in fp32 at these scales


def norm_normalises(b: Bench) -> CheckResult:
    norm = b.build()
    x = b.x()
    scales = torch.logspace(math.log10(NORMALISED_SCALES[0]), math.log10(NORMALISED_SCALES[1]), x.size(1))
    x = x / _rms(x, -1).float()[..., None] * scales[None, :, None]  # each vector at a known RMS
    y = norm(x)
    err = (_rms(y, -1) - 1).abs().max().item()
    numbers = {"max_abs_rms_error_last_dim": err, "tolerance": NORMALISED_TOLERANCE}
    if err <= NORMALISED_TOLERANCE:
        return result("normalises the last dimension", True, f"per-vector RMS is 1 within {err:.1e}", numbers)
    other = {d: (_rms(y, d) - 1).abs().max().item() for d in range(y.dim() - 1)}
    numbers["rms_error_other_dims"] = other
    wrong_dim = any(e <= NORMALISED_TOLERANCE for e in other.values())
    return result("normalises the last dimension", False,
                  f"per-vector RMS over the last dim is off by up to {err:.3g}"
                  + (" (another dimension is normalised instead)" if wrong_dim else ""),
                  numbers, "norm over the wrong dimension" if wrong_dim else "norm does not normalise")


def norm_scale_invariant(b: Bench) -> CheckResult:
    norm = b.build()
    x = b.x() * NORMALISED_SCALES[0]
    err = rel_change(norm(3.7 * x), norm(x))
    numbers = {"rel_change": err, "tolerance": NORMALISED_TOLERANCE}
    ok = err <= NORMALISED_TOLERANCE
    return result("scale invariant", ok, f"norm(3.7 x) vs norm(x): rel change {err:.1e}", numbers,
                  "norm does not normalise")


def norm_per_vector(b: Bench) -> CheckResult:
    norm = b.build()
    x = b.x()
    x2 = x.clone()
    x2[0, 3] = 5 * x2[0, 3] + 1  # change one vector; every other vector's output must stay put
    y, y2 = norm(x), norm(x2)
    keep = torch.ones(x.shape[:-1], dtype=torch.bool)
    keep[0, 3] = False
    err = rel_change(y2[keep], y[keep])
    numbers = {"rel_change_other_vectors": err, "tolerance": 1e-6}
    return result("each vector normalised on its own", err <= 1e-6,
                  f"changing one vector changed the others by rel {err:.1e}", numbers, "norm over the wrong dimension")


def fitted_eps(norm: nn.Module, dim: int) -> tuple[float, bool]:
    """(eps, whether the norm is of that form) for y = x / sqrt(mean(x^2) + eps): for inputs of mean square m,
    1 / rms(y)^2 - 1 = eps / m exactly. eps is fitted from m = 1e-6..1e-2 (where float32 resolves it down to
    ~1e-12); the form is confirmed on m = 1e-6..1e4, within 1% or float32's resolution of 1 / rms^2 (1e-6)."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(11, dim, generator=g)
    squares = torch.logspace(-6, 4, 11, dtype=torch.float64)
    x = (x.double() / _rms(x, -1)[:, None] * squares.sqrt()[:, None]).float()
    excess = 1 / _rms(norm(x).detach(), -1).pow(2) - 1
    inverse = 1 / squares
    small = squares <= 1e-2
    eps = (excess[small] @ inverse[small] / (inverse[small] @ inverse[small])).item()
    of_form = bool(((excess - eps * inverse).abs() <= 0.01 * (eps * inverse).abs() + 1e-6).all())
    return eps, of_form


def norm_eps(b: Bench) -> CheckResult:
    """The eps inside the square root must be a guard against zero, not a change of the formula: anything in
    [0, 1e-5] passes (the reference: torch.finfo(float32).eps ~ 1.2e-7; Hugging Face: 1e-6)."""
    eps, of_form = fitted_eps(b.build(), b.config.n_embd)
    limit = NORM_EPS_ACCEPTED[1] * 1.01  # the fit is exact to ~1e-12 (float32 at mean square 1e-6)
    numbers = {"fitted_eps": eps, "of_the_form": of_form, "accepted": list(NORM_EPS_ACCEPTED)}
    ok = eps <= limit or not of_form  # not x / sqrt(m + eps) at all: the other checks say what it is
    return result("eps", ok, f"fitted eps {eps:.2g}" + ("" if ok else f", above the accepted {NORM_EPS_ACCEPTED[1]:g}: "
                  "vectors with an RMS below ~0.1 are no longer normalised to 1"), numbers, "norm eps too large")


def norm_gradients(b: Bench) -> CheckResult:
    norm = b.build()
    x = b.x().requires_grad_(True)
    return gradient_check("gradients", norm, [x], norm(x))


# --- rotary ---------------------------------------------------------------------------------------------------------


def rotary_table(b: Bench) -> CheckResult:
    rot, D, L = b.impl(), b.config.head_dim, 40
    cos, sin = b.cos_sin(L, rotary=rot)
    expected = (1, L, 1, D // 2)
    for label, t in (("cos", cos), ("sin", sin)):
        numbers = {"shape": list(t.shape), "dtype": str(t.dtype), "device": str(t.device)}
        if tuple(t.shape) != expected:
            return result("cos/sin table", False, f"{label} shape {tuple(t.shape)}, expected {expected}", numbers,
                          "rotary table has the wrong shape", method="precompute")
        if t.dtype != torch.bfloat16:
            return result("cos/sin table", False, f"{label} dtype {t.dtype}, the contract says bfloat16", numbers,
                          "buffers on the wrong device or dtype", method="precompute")
        if t.device.type != b.device.type:
            return result("cos/sin table", False, f"{label} on {t.device}, asked for {b.device}", numbers,
                          "buffers on the wrong device or dtype", method="precompute")
    meta_cos, meta_sin = rot.precompute(L, D, base=10000, device=torch.device("meta"))
    if meta_cos.device.type != "meta" or meta_sin.device.type != "meta":
        return result("cos/sin table", False, f"precompute(device='meta') returned tensors on {meta_cos.device}: "
                      "the device argument is ignored", {"device": str(meta_cos.device)},
                      "buffers on the wrong device or dtype", method="precompute")
    return result("cos/sin table", True, f"{expected} bfloat16, on the requested device (also 'meta')")


def _rotate(b: Bench, x: torch.Tensor, rot=None) -> torch.Tensor:
    rot = rot or b.impl()
    cos, sin = b.cos_sin(x.size(1), rotary=rot)
    return rot.apply(x, cos, sin)


def rotary_output(b: Bench) -> CheckResult:
    D = b.config.head_dim
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 10, 3, D, generator=torch.Generator().manual_seed(3)).to(dtype)
        r = shape_check("apply: shape and dtype", _rotate(b, x), tuple(x.shape), dtype, x.device)
        if not r.passed:
            return r
    return result("apply: shape and dtype", True, "(B, T, H, D) in, same shape and dtype (fp32 and bf16) out")


def rotary_preserves_length(b: Bench) -> CheckResult:
    x = torch.randn(1, 40, 2, b.config.head_dim, generator=torch.Generator().manual_seed(4))
    y = _rotate(b, x)
    err = (y.double().norm(dim=-1) / x.double().norm(dim=-1) - 1).abs().max().item()
    numbers = {"max_rel_length_change": err, "tolerance": 2e-2}  # bf16 cos/sin: cos^2 + sin^2 = 1 to ~1%
    return result("rotation keeps vector lengths", err <= 2e-2, f"|apply(x)| / |x| off by up to {err:.2e}", numbers,
                  "rotary relative-offset property broken")


def rotary_relative_offset(b: Bench) -> CheckResult:
    """q rotated to position i dotted with k rotated to position j must depend on i - j only."""
    D, L = b.config.head_dim, 40
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(D, generator=g), torch.randn(D, generator=g)
    q, k = q / q.norm(), k / k.norm()
    rq = _rotate(b, q.expand(1, L, 1, D).contiguous())[0, :, 0].double()
    rk = _rotate(b, k.expand(1, L, 1, D).contiguous())[0, :, 0].double()
    scores = rq @ rk.T  # (L, L): scores[i, j] = rot_i(q) . rot_j(k)
    worst, spread = 0.0, 0.0
    for offset in range(-L + 1, L):
        diag = torch.diagonal(scores, offset=offset)
        worst = max(worst, (diag - diag.mean()).abs().max().item())
    by_offset = torch.stack([torch.diagonal(scores, offset=o).mean() for o in range(0, 16)])
    spread = (by_offset.max() - by_offset.min()).item()
    numbers = {"max_deviation_same_offset": worst, "tolerance": 5e-2, "score_spread_over_offsets": spread}
    if worst > 5e-2:
        return result("relative-offset property", False,
                      f"q.k differs by up to {worst:.3f} between position pairs with the same offset", numbers,
                      "rotary relative-offset property broken")
    if spread < 5e-2:
        return result("relative-offset property", False, f"q.k hardly changes with the offset ({spread:.3f})",
                      numbers, "rotary does not depend on position")
    return result("relative-offset property", True,
                  f"q.k depends on i - j only (within {worst:.1e}) and varies with it ({spread:.2f})", numbers)


def rotation_partner(b: Bench, channel: int = 0) -> int | None:
    """The channel `channel` is rotated with: rotate the unit vector e_channel to position 1; the output's other
    non-zero channel is its partner (D/2 + channel in the contract's halves); None when nothing moved there."""
    D = b.config.head_dim
    x = torch.zeros(1, 2, 1, D)
    x[0, 1, 0, channel] = 1.0
    y = _rotate(b, x)[0, 1, 0].double().abs()
    y[channel] = 0.0
    return int(y.argmax()) if y.max() > 1e-6 else None


def rotary_convention(b: Bench) -> CheckResult:
    """The contract rotates halves: channel i with channel i + D/2, not adjacent pairs (2i, 2i+1)."""
    D = b.config.head_dim
    partners = {c: rotation_partner(b, c) for c in (0, 1, D // 2 - 1)}
    expected = {c: c + D // 2 for c in partners}
    numbers = {"partners": partners, "expected": expected}
    if partners == expected or None in partners.values():  # nothing rotated: the position checks say why
        return result("rotary convention", True, f"channel i is rotated with channel i + {D // 2} (halves)", numbers)
    adjacent = all(p == c ^ 1 for c, p in partners.items())  # (0, 1), (2, 3), ...
    return result("rotary convention", False, f"channel 0 is rotated with channel {partners[0]}, channel 1 with "
                  f"{partners[1]} (the contract: {D // 2} and {D // 2 + 1})"
                  + (": adjacent pairs" if adjacent else ""), numbers,
                  "rotary pairs interleaved, not halves" if adjacent else "rotary relative-offset property broken")


def rotary_gradients(b: Bench) -> CheckResult:
    x = torch.randn(2, 10, 3, b.config.head_dim, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    return gradient_check("gradients", nn.Module(), [x], _rotate(b, x))


# --- attention ------------------------------------------------------------------------------------------------------


def attention_output(b: Bench) -> CheckResult:
    attn, x = b.build(), b.x()
    y = attn(x, b.cos_sin(x.size(1)), None)
    return shape_check("output shape, dtype, device", y, tuple(x.shape), x.dtype, x.device)


def causality(name: str, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              perturb: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Change everything after position t; outputs at positions <= t must not move."""
    y = forward(x)
    worst, where = 0.0, None
    for t in (0, x.size(1) // 2):
        y2 = forward(perturb(x, t))
        err = rel_change(y2[:, : t + 1], y[:, : t + 1])
        if err > worst:
            worst, where = err, t
    numbers = {"max_rel_change_at_or_before_t": worst, "tolerance": 1e-5, "t": where}
    if worst > 1e-5:
        return result(name, False, f"changing tokens after position {where} changed the output at positions "
                      f"<= {where} by rel {worst:.2e}", numbers, "causal leakage")
    return result(name, True, "outputs at positions <= t ignore every later token", numbers)


def attention_causal(b: Bench) -> CheckResult:
    attn, x = b.build(), b.x()
    cos_sin = b.cos_sin(x.size(1))

    def perturb(x: torch.Tensor, t: int) -> torch.Tensor:
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn(x2[:, t + 1 :].shape, generator=torch.Generator().manual_seed(t))
        return x2

    return causality("causal", lambda x: attn(x, cos_sin, None), x, perturb)


def _scaled_copy(b: Bench, module: nn.Module, scales: dict[str, float]) -> nn.Module:
    other = b.build()
    state = {k: v * scales.get(k.rsplit(".", 1)[0], 1.0) for k, v in module.state_dict().items()}
    other.load_state_dict(state)
    return other


def attention_qk_norm(b: Bench) -> CheckResult:
    """With QK-norm, q and k are normalised per head, so scaling c_q and c_k cannot change the output."""
    attn, x = b.build(), b.x()
    if key_diff(attn, b.build(impl_set=REFERENCE)):
        return param_shape_check(b)
    cos_sin = b.cos_sin(x.size(1))
    scaled = _scaled_copy(b, attn, {"c_q": 8.0, "c_k": 8.0})
    err = rel_change(scaled(x, cos_sin, None), attn(x, cos_sin, None))
    numbers = {"rel_change": err, "tolerance": 1e-4, "scale": 8.0}
    return result("QK-norm", err <= 1e-4, f"scaling c_q and c_k by 8 changed the output by rel {err:.1e}", numbers,
                  "missing QK-norm")


def attention_gqa_mapping(b: Bench) -> CheckResult:
    """Only key/value head 0 carries values; the query heads that see them must be 0 .. group-1."""
    cfg = b.config
    H, Hkv, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    attn, x = b.build(), b.x()
    if key_diff(attn, b.build(impl_set=REFERENCE)):
        return param_shape_check(b)
    state = dict(attn.state_dict())
    state["c_proj.weight"] = torch.eye(cfg.n_embd)  # read each head's output straight off
    c_v = state["c_v.weight"].clone()
    c_v[D:] = 0  # every kv head but the first outputs zero values
    state["c_v.weight"] = c_v
    probe = b.build()
    probe.load_state_dict(state)
    y = probe(x, b.cos_sin(x.size(1)), None)
    per_head = y.view(*y.shape[:2], H, D).abs().amax(dim=(0, 1, 3))
    seen = [h for h in range(H) if per_head[h] > 1e-6]
    expected = list(range(H // Hkv))
    numbers = {"heads_reading_kv_head_0": seen, "expected": expected, "n_head": H, "n_kv_head": Hkv}
    ok = seen == expected
    return result("GQA head mapping", ok, f"query heads {seen} read key/value head 0 (expected {expected})",
                  numbers, "GQA head mapping")


def kv_cache_consistency(name: str, full: Callable[[], torch.Tensor],
                         step: Callable[[int, int], torch.Tensor], total: int, prefill: int) -> CheckResult:
    """Prefill, one chunk of 3, then single tokens; the concatenation must equal one full forward."""
    reference = full()
    pieces, t = [step(0, prefill)], prefill
    chunk = min(3, total - t)
    if chunk > 1:
        pieces.append(step(t, t + chunk))
        t += chunk
    while t < total:
        pieces.append(step(t, t + 1))
        t += 1
    cached = torch.cat(pieces, dim=1)
    d = diff_tensors("cached vs full", cached, reference, tolerance=1e-4)
    numbers = {"max_abs": d.max_abs, "rel": d.rel, "tolerance": 1e-4, "first_mismatches": d.first_mismatches,
               "prefill": prefill, "total": total}
    if not d.passed:
        where = sorted({p[1] for p in d.first_mismatches}) if d.first_mismatches else []
        return result(name, False, f"decoding with the cache differs from the full forward (rel {d.rel:.2e}) at "
                      f"positions {where}", numbers, "KV-cache decode differs from full forward")
    return result(name, True, f"prefill {prefill}, a chunk of 3, then 1 token at a time: rel {d.rel:.1e}", numbers)


def attention_kv_cache(b: Bench) -> CheckResult:
    cfg = b.config
    attn, x = b.build(), b.x(seq_len=12)
    B, T = x.shape[:2]
    cos, sin = b.cos_sin(T)
    cache = KVCache(B, cfg.n_kv_head, T, cfg.head_dim, num_layers=1)
    return kv_cache_consistency(
        "KV cache", lambda: attn(x, (cos, sin), None),
        lambda t0, t1: attn(x[:, t0:t1], (cos[:, t0:t1], sin[:, t0:t1]), cache), T, prefill=5)


def attention_gradients(b: Bench) -> CheckResult:
    attn, x = b.build(), b.x().requires_grad_(True)
    return gradient_check("gradients", attn, [x], attn(x, b.cos_sin(x.size(1)), None))


# --- mlp ------------------------------------------------------------------------------------------------------------


def mlp_output(b: Bench) -> CheckResult:
    mlp, x = b.build(), b.x()
    return shape_check("output shape, dtype, device", mlp(x), tuple(x.shape), x.dtype, x.device)


def mlp_per_position(b: Bench) -> CheckResult:
    mlp, x = b.build(), b.x()
    x2 = x.clone()
    x2[:, 3] += 1.0
    y, y2 = mlp(x), mlp(x2)
    keep = torch.ones(x.shape[1], dtype=torch.bool)
    keep[3] = False
    err = rel_change(y2[:, keep], y[:, keep])
    return result("acts on each position independently", err <= 1e-6,
                  f"changing position 3 changed other positions by rel {err:.1e}",
                  {"rel_change_other_positions": err, "tolerance": 1e-6}, "MLP mixes positions")


def mlp_activation(b: Bench) -> CheckResult:
    """relu^2 is homogeneous of degree 2 (mlp(2x) = 4 mlp(x)) and not even (mlp(-x) != mlp(x))."""
    mlp, x = b.build(), b.x()
    y1, y2 = mlp(x).double(), mlp(2 * x).double()
    degree = math.log2((y2.norm() / y1.norm().clamp_min(1e-30)).item())
    homogeneous = rel_change(y2, 2**degree * y1)
    even = rel_change(mlp(-x), mlp(x))
    numbers = {"degree": degree, "homogeneity_error": homogeneous, "even_change": even}
    if abs(degree - 2) < 1e-3 and homogeneous < 1e-4 and even > 1e-3:
        return result("relu² activation", True, "mlp(2x) = 4 mlp(x) and mlp(-x) != mlp(x), as relu² gives", numbers)
    if abs(degree - 1) < 1e-3 and homogeneous < 1e-4:
        return result("relu² activation", False, "mlp(2x) = 2 mlp(x): the activation is degree 1 (relu), not relu²",
                      numbers, "relu instead of relu²")
    return result("relu² activation", False, f"mlp(2x) / mlp(x) = 2^{degree:.2f} (relu² gives 2^2 exactly)"
                  + (", and mlp(-x) = mlp(x): square without the relu" if even <= 1e-3 else ""),
                  numbers, "MLP activation not relu²")


def mlp_gradients(b: Bench) -> CheckResult:
    mlp, x = b.build(), b.x().requires_grad_(True)
    return gradient_check("gradients", mlp, [x], mlp(x))


# --- block ----------------------------------------------------------------------------------------------------------


class ConstantSublayer(nn.Module):
    """Stands in for attention or the MLP: records its input and returns a constant, to test the residual path."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.inputs.append(x.detach())
        return torch.full_like(x, self.value)


def _stub_block(b: Bench, attn_value: float, mlp_value: float):
    cfg = b.config
    attn, mlp = ConstantSublayer(attn_value), ConstantSublayer(mlp_value)
    block = b.impl()(cfg, 0, attn=attn, mlp=mlp, norm=b.ref("norm"))
    return block, attn, mlp


def block_keeps_modules(b: Bench) -> CheckResult:
    block, attn, mlp = _stub_block(b, 0.0, 0.0)
    ok = getattr(block, "attn", None) is attn and getattr(block, "mlp", None) is mlp
    return result("keeps attn and mlp", ok, "self.attn and self.mlp are the modules given" if ok else
                  "self.attn / self.mlp are not the modules passed in", {}, "block does not keep attn/mlp")


def block_output(b: Bench) -> CheckResult:
    block, x = b.build(), b.x()
    return shape_check("output shape, dtype, device", block(x, b.cos_sin(x.size(1)), None), tuple(x.shape), x.dtype,
                       x.device)


def block_residual(b: Bench) -> CheckResult:
    x = b.x()
    cos_sin = b.cos_sin(x.size(1))
    block, _, _ = _stub_block(b, 0.0, 0.0)
    identity_err = rel_change(block(x, cos_sin, None), x)
    block, _, _ = _stub_block(b, 0.5, 0.25)
    added_err = rel_change(block(x, cos_sin, None), x + 0.75)
    numbers = {"identity_rel_error": identity_err, "sum_rel_error": added_err, "tolerance": 1e-6}
    if identity_err > 1e-6:
        return result("residual path", False, f"with attn and mlp outputting zeros the block is not the identity "
                      f"(rel error {identity_err:.2e})", numbers, "missing residual")
    if added_err > 1e-6:
        return result("residual path", False, f"with attn -> 0.5 and mlp -> 0.25 the output is not x + 0.75 "
                      f"(rel error {added_err:.2e}): a sub-layer output is not added", numbers, "missing residual")
    return result("residual path", True, "zeros from attn and mlp give x back; constants are added", numbers)


def block_pre_norm(b: Bench) -> CheckResult:
    x = b.x() * 10
    block, attn, mlp = _stub_block(b, 0.5, 0.25)
    block(x, b.cos_sin(x.size(1)), None)
    if not attn.inputs or not mlp.inputs:
        missing = [n for n, m in (("attn", attn), ("mlp", mlp)) if not m.inputs]
        return result("pre-norm", False, f"{', '.join(missing)} never called", {}, "missing residual")
    errs = {n: (_rms(m.inputs[0], -1) - 1).abs().max().item() for n, m in (("attn", attn), ("mlp", mlp))}
    bad = [n for n, e in errs.items() if e > 1e-3]
    return result("pre-norm", not bad, "attn and mlp receive normalised inputs" if not bad else
                  f"{', '.join(bad)} receive(s) un-normalised input", {"rms_error": errs},
                  "sub-layer input not normalised")


def block_gradients(b: Bench) -> CheckResult:
    block, x = b.build(), b.x().requires_grad_(True)
    return gradient_check("gradients", block, [x], block(x, b.cos_sin(x.size(1)), None))


MODULE_CHECKS: dict[str, list[Check]] = {
    "norm": [norm_output, norm_normalises, norm_scale_invariant, norm_per_vector, norm_eps, norm_gradients],
    "rotary": [rotary_table, rotary_output, rotary_convention, rotary_preserves_length, rotary_relative_offset,
               rotary_gradients],
    "attention": [param_shape_check, attention_output, attention_causal, attention_qk_norm, attention_gqa_mapping,
                  attention_kv_cache, attention_gradients],
    "mlp": [param_shape_check, mlp_output, mlp_per_position, mlp_activation, mlp_gradients],
    "block": [block_keeps_modules, block_output, block_residual, block_pre_norm, block_gradients],
}
