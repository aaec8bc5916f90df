"""Does a component compute what the reference computes? Build both from one config, load the reference's weights
into the candidate, feed the same seeded inputs and a fixed upstream gradient, and compare outputs and gradients
with respect to the input and every parameter, each within a tolerance measured from the reference's own noise
(`nanogpt_core.checks.tolerance`). This module only measures; naming the cause of a mismatch is the ladder's job
(`nanogpt_core.checks.ladder`), and `nanogpt_core.checks.runner.matches_reference` puts the two together."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt_core.checks.harness import REFERENCE, Bench, config_key, key_diff, seeded
from nanogpt_core.checks.optimizer_updates import PROBE_STEPS, UpdateTrace, trace_updates, update_kind
from nanogpt_core.checks.result import CheckResult, TensorDiff, diff_tensors
from nanogpt_core.checks.tolerance import (
    NORM_EPS_ACCEPTED,
    frobenius_error,
    newton_schulz_noise,
    rel_error,
    tolerance,
)
from nanogpt_core.model.assembly import ROTARY_BASE, ROTARY_TABLE_FACTOR, build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.kv_cache import KVCache

NAME = "matches reference"
TAKES_POSITIONS = ("attention", "block")
# The bf16 rounding of Newton-Schulz is what a correct Muon carries (measured: torch.optim.Muon in bf16 against the
# fp32 reference is 0.9-1.0x `newton_schulz_noise` of the designed gradients, on every matrix of the check config);
# 3x leaves room for another bf16 kernel order, while momentum 0.9 instead of 0.95 is already 5-10x.
MUON_NOISE_MULTIPLE = 3.0


# --- the module components: outputs and every gradient ---------------------------------------------------------


def module_inputs(bench: Bench, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = bench.x().to(dtype)
    cos, sin = bench.cos_sin(x.size(1))
    return x, cos, sin


def module_tensors(bench: Bench, module: nn.Module, x: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """What the comparison looks at: the output, the gradient of a fixed random projection of it with respect to
    the input and every parameter, and (attention) the output decoded through a KV cache."""
    xi = x.clone().requires_grad_(True)
    y = module(xi, (cos, sin), None) if bench.component in TAKES_POSITIONS else module(xi)
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(11)).to(y.dtype)
    (y * upstream).sum().backward()
    tensors: dict[str, torch.Tensor | None] = {"output": y.detach(), "grad input": xi.grad}
    tensors.update({f"grad {n}": p.grad for n, p in module.named_parameters()})
    if bench.component == "attention":  # the cached path is part of attention's behaviour too
        tensors["output with KV cache"] = cached_attention(bench, module, x, cos, sin)
    return tensors


@torch.no_grad()
def cached_attention(bench: Bench, attn: nn.Module, x: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> torch.Tensor:
    """Prefill half, then one token at a time."""
    B, T = x.shape[:2]
    cache = KVCache(B, bench.config.n_kv_head, T, bench.config.head_dim, num_layers=1)
    steps = [(0, T // 2)] + [(t, t + 1) for t in range(T // 2, T)]
    return torch.cat([attn(x[:, a:b], (cos[:, a:b], sin[:, a:b]), cache) for a, b in steps], dim=1)


class MeanCenteringNorm(nn.Module):
    """LayerNorm without weights: a legitimate norm under which the order of rotary and QK-norm matters, because
    a rotation preserves a vector's RMS but not its mean. Attention is compared with it injected as well."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.size(-1),))


class IdentityNorm(nn.Module):
    """A norm that does nothing: with it injected, where attention applies QK-norm cannot matter."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class IdentityRotary:
    """A rotation by angle 0 whatever the table: with it injected, how attention calls rotary cannot matter."""

    @staticmethod
    def precompute(seq_len: int, head_dim: int, base: float = 10000, device=None):
        raise NotImplementedError("the probes pass the reference's table")

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return x


class _EpsRMSNorm(nn.Module):
    """RMSNorm with a given eps: the far end of the eps range the contract accepts, to measure what it moves."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


@functools.lru_cache(maxsize=64)
def _module_tolerances(component: str, key: tuple, dtype: torch.dtype, norm: type[nn.Module] | None,
                       rotary: object = None) -> dict[str, float]:
    bench = Bench(REFERENCE, component, GPTConfig(**dict(key)))
    with seeded(0):
        ref = bench.build(REFERENCE, norm=norm, rotary=rotary)
    ref64 = bench.build(REFERENCE, norm=norm, rotary=rotary)
    ref64.load_state_dict(ref.state_dict())
    x, cos, sin = module_inputs(bench, dtype)
    low = module_tensors(bench, ref.to(dtype), x, cos, sin)
    high = module_tensors(bench, ref64.double(), x.double(), cos, sin)
    allowance = dict.fromkeys(low, 0.0)
    if component == "norm":  # what eps anywhere in the accepted range moves, in float64
        lo, hi = (module_tensors(bench, _EpsRMSNorm(0, eps), x.double(), cos, sin) for eps in NORM_EPS_ACCEPTED)
        allowance = {k: rel_error(hi[k], lo[k]) for k in low}
    return {k: tolerance(rel_error(low[k], high[k]), dtype, allowance[k]) for k in low if low[k] is not None}


def outcome(component: str, diffs: list[TensorDiff], dtype: torch.dtype, extra: dict | None = None,
            generic: str = "") -> CheckResult:
    """The isolation verdict from per-tensor diffs (each with its own measured tolerance)."""
    worst = max(diffs, key=lambda d: d.rel / max(d.tolerance, 1e-300), default=None)
    numbers = {"tolerance": worst.tolerance if worst else 0.0, "dtype": str(dtype).replace("torch.", ""),
               "tensors": {d.name: {"max_abs": d.max_abs, "mean_abs": d.mean_abs, "rel": d.rel,
                                    "tolerance": d.tolerance, "first_mismatches": d.first_mismatches}
                           for d in diffs}}
    numbers.update(extra or {})
    bad = [d for d in diffs if not d.passed]
    if not bad:
        ratio = worst.rel / worst.tolerance if worst and worst.tolerance else 0.0
        return CheckResult(component, NAME, True, f"{len(diffs)} tensors within their measured tolerances (worst: "
                           f"{worst.name if worst else '-'} at {ratio:.2f}x its tolerance)", numbers)
    diagnosis = generic or ("output differs from reference" if bad[0].name == "output"
                            else "gradients differ from reference")
    detail = "; ".join(d.summary() for d in bad[:3])
    return CheckResult(component, NAME, False, detail, numbers, diagnosis)


def module_diffs(bench: Bench, dtype: torch.dtype, norm: type[nn.Module] | None = None, rotary: object = None
                 ) -> list[TensorDiff] | CheckResult:
    """Per-tensor diffs of the candidate module against the reference on the reference's weights (with `norm` and
    `rotary` injected into both when given); a CheckResult when the parameters differ in name or shape (nothing
    to compare on the same weights)."""
    tolerances = _module_tolerances(bench.component, config_key(bench.config), dtype, norm, rotary)
    with seeded(0):
        ref = bench.build(REFERENCE, norm=norm, rotary=rotary)
    with seeded(1):
        cand = bench.build(norm=norm, rotary=rotary)
    diff = key_diff(cand, ref)
    if diff:
        return CheckResult(bench.component, NAME, False, f"state dicts differ: {diff}", {"key_diff": diff},
                           "state-dict keys or shapes differ from the contract")
    cand.load_state_dict(ref.state_dict())
    x, cos, sin = module_inputs(bench, dtype)
    got = module_tensors(bench, cand.to(dtype), x, cos, sin)
    want = module_tensors(bench, ref.to(dtype), x, cos, sin)
    return [diff_tensors(name, got.get(name), want[name], tol) for name, tol in tolerances.items()]


def module_matches(bench: Bench, dtype: torch.dtype) -> CheckResult:
    """The module on the reference's weights; attention also with a mean-subtracting norm injected, under which
    the order of rotary and QK-norm, and whether the injected norm is used at all, become visible."""
    diffs = module_diffs(bench, dtype)
    if isinstance(diffs, CheckResult):
        return diffs
    if bench.component == "attention":
        centred = module_diffs(bench, dtype, norm=MeanCenteringNorm)
        if not isinstance(centred, CheckResult):
            diffs += [dataclasses.replace(d, name=f"{d.name} (mean-subtracting norm injected)") for d in centred]
    return outcome(bench.component, diffs, dtype)


# --- the gpt component: the whole model around a candidate top level -------------------------------------------


def gpt_tensors(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """What the comparison looks at: the logits, the loss with some targets -1, the per-token losses, every
    parameter's gradient, and the logits decoded with a KV cache (half the prompt at once, then one at a time)."""
    out: dict[str, torch.Tensor | None] = {"output": model(idx).detach()}
    with torch.no_grad():
        out["per-token loss"] = model(idx, targets, loss_reduction="none")
        T = idx.size(1)
        cache = model.new_kv_cache(idx.size(0), T)
        steps = [(0, T // 2)] + [(t, t + 1) for t in range(T // 2, T)]
        out["output with KV cache"] = torch.cat([model(idx[:, a:b], kv_cache=cache) for a, b in steps], dim=1)
    loss = model(idx, targets)
    loss.backward()
    out["loss"] = loss.detach()
    out.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
    return out


def _gpt_inputs(bench: Bench) -> tuple[torch.Tensor, torch.Tensor]:
    idx = bench.tokens()
    targets = idx.roll(-1, dims=1).clone()
    targets[:, ::3] = -1
    return idx, targets


@functools.lru_cache(maxsize=16)
def _gpt_tolerances(key: tuple, dtype: torch.dtype) -> dict[str, float]:
    """The reference model in `dtype` against itself in float64 (its fp32 loss aside, which is fp32 by contract)."""
    bench = Bench(REFERENCE, "gpt", GPTConfig(**dict(key)))
    with seeded(0):
        ref = build_model(bench.config)
    ref64 = build_model(bench.config)
    ref64.load_state_dict(ref.state_dict())
    idx, targets = _gpt_inputs(bench)
    low, high = gpt_tensors(ref.to(dtype), idx, targets), gpt_tensors(ref64.double(), idx, targets)
    return {k: tolerance(rel_error(low[k], high[k]), dtype) for k in low if low[k] is not None}


def gpt_matches(bench: Bench, dtype: torch.dtype) -> CheckResult:
    """The model with the candidate top level against the reference model, on the reference's weights."""
    tolerances = _gpt_tolerances(config_key(bench.config), dtype)
    with seeded(0):
        ref = build_model(bench.config)
    with seeded(1):
        cand = bench.model()
    diff = key_diff(cand, ref)
    if diff:
        return CheckResult("gpt", NAME, False, f"state dicts differ: {diff}", {"key_diff": diff},
                           "state-dict keys or shapes differ from the contract")
    cand.load_state_dict(ref.state_dict())
    idx, targets = _gpt_inputs(bench)
    want, got = gpt_tensors(ref.to(dtype), idx, targets), gpt_tensors(cand.to(dtype), idx, targets)
    return outcome("gpt", [diff_tensors(name, got.get(name), want[name], tol) for name, tol in tolerances.items()],
                   dtype)


# --- rotary: the table, and apply on the reference's table -----------------------------------------------------

ROTARY_PROBE_LEN = 40


def independent_rotary_table(seq_len: int, head_dim: int, base: float = ROTARY_BASE) -> tuple[torch.Tensor, ...]:
    """cos/sin of t * base^(-2i/D) in float64, rounded to the contract's bf16: the table without any
    implementation's rounding order, to measure the reference's own table against."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return tuple(f(angles).bfloat16()[None, :, None, :] for f in (torch.cos, torch.sin))


def rotary_table_length(config: GPTConfig) -> int:
    """The model's own table length (10x the context): position bugs often show only far out (bf16 positions
    round above 256)."""
    return config.sequence_len * ROTARY_TABLE_FACTOR


@functools.lru_cache(maxsize=16)
def _rotary_tolerances(key: tuple, dtype: torch.dtype) -> dict[str, float]:
    bench = Bench(REFERENCE, "rotary", GPTConfig(**dict(key)))
    ref = bench.ref()
    L = rotary_table_length(bench.config)
    cos, sin = bench.cos_sin(L, ref)
    cos64, sin64 = independent_rotary_table(L, bench.config.head_dim)
    tolerances = {"cos table": tolerance(rel_error(cos, cos64), torch.bfloat16),
                  "sin table": tolerance(rel_error(sin, sin64), torch.bfloat16)}
    low = rotary_apply_tensors(bench, ref.apply, dtype)
    high = rotary_apply_tensors(bench, ref.apply, torch.float64)
    tolerances.update({k: tolerance(rel_error(low[k], high[k]), dtype) for k in low})
    return tolerances


def rotary_apply_tensors(bench: Bench, apply: Callable, dtype: torch.dtype,
                         flip_sin: bool = False) -> dict[str, torch.Tensor]:
    cos, sin = bench.cos_sin(ROTARY_PROBE_LEN)
    x = torch.randn(2, ROTARY_PROBE_LEN, 3, bench.config.head_dim,
                    generator=torch.Generator().manual_seed(3)).to(dtype).requires_grad_(True)
    y = apply(x, cos, -sin if flip_sin else sin)
    (y * torch.linspace(-1, 1, y.numel()).view(y.shape).to(y.dtype)).sum().backward()
    return {"output": y.detach(), "grad input": x.grad}


def rotary_matches(bench: Bench, dtype: torch.dtype) -> CheckResult:
    tol = _rotary_tolerances(config_key(bench.config), dtype)
    L = rotary_table_length(bench.config)
    cos_r, sin_r = bench.cos_sin(L, bench.ref())
    cos_c, sin_c = bench.cos_sin(L, bench.impl())
    diffs = [diff_tensors("cos table", cos_c.float(), cos_r.float(), tol["cos table"]),
             diff_tensors("sin table", sin_c.float(), sin_r.float(), tol["sin table"])]
    got = rotary_apply_tensors(bench, bench.impl().apply, dtype)
    want = rotary_apply_tensors(bench, bench.ref().apply, dtype)
    diffs += [diff_tensors(k, got[k], want[k], tol[k]) for k in want]
    table_bad = not (diffs[0].passed and diffs[1].passed)
    return outcome("rotary", diffs, dtype, generic="rotary table differs from reference" if table_bad else "")


# --- init: statistics, not draws -------------------------------------------------------------------------------


def init_matches(bench: Bench) -> CheckResult:
    """Random draws need not be equal (another order of init calls is fine); the statistics must be. Two std
    estimates of N draws each differ by a relative sampling error of sqrt(1/N); 4 of those, twice over, is the
    tolerance (a false alarm on fewer than 1 in 10^4 weights)."""
    models = {}
    for impl_set in (REFERENCE, bench.impl_set):
        with seeded(0):
            m = build_model(bench.config, use={"init": impl_set})
            m.init_weights()
        models[impl_set] = dict(m.named_parameters())
    ref, cand = models[REFERENCE], models[bench.impl_set]
    rows, bad = {}, []
    for name, p in ref.items():
        q = cand[name].detach().double()
        p = p.detach().double()
        if (p == 0).all():
            ok = bool((q == 0).all())
            rows[name] = {"reference": "zeros", "candidate_max_abs": q.abs().max().item()}
        else:
            tol = 4 * (2 / p.numel()) ** 0.5
            rel = abs(q.std().item() / p.std().item() - 1)
            ok = rel <= tol
            rows[name] = {"reference_std": p.std().item(), "candidate_std": q.std().item(), "rel": rel, "tol": tol}
        if not ok:
            bad.append(name)
    identical = all(torch.equal(ref[n], cand[n]) for n in ref)
    numbers = {"parameters": rows, "identical_draws": identical}
    if not bad:
        return CheckResult("init", NAME, True, f"per-parameter std and zeros match the reference "
                           f"({'identical draws' if identical else 'different draws, same statistics'})", numbers)
    return CheckResult("init", NAME, False, f"statistics differ for {', '.join(bad[:4])}", numbers,
                       "wrong init std")


# --- optimizer: the updates under designed gradients -----------------------------------------------------------


def optimizer_traces(bench: Bench) -> tuple[UpdateTrace, UpdateTrace]:
    """(reference, candidate) updates of the same model, parameters and gradients (see optimizer_updates)."""
    traces = []
    for impl_set in (REFERENCE, bench.impl_set):
        model = build_model(bench.config, use={"optimizer": impl_set})
        traces.append(trace_updates(model, model.setup_optimizers()))
    return traces[0], traces[1]


@functools.lru_cache(maxsize=16)
def _optimizer_floor(key: tuple) -> dict[str, tuple[float, str]]:
    """Per parameter: (noise floor of its update, where it comes from). Muon's is its bf16-vs-fp32 Newton-Schulz
    rounding; anything else's is the reference optimizer on a float64 copy of the model."""
    bench = Bench(REFERENCE, "optimizer", GPTConfig(**dict(key)))
    ref, _ = optimizer_traces(bench)
    model64 = build_model(bench.config).double()
    ref64 = trace_updates(model64, model64.setup_optimizers())
    floors = {}
    for name in ref.names:
        if update_kind(ref, name) == "muon":
            noise = max(newton_schulz_noise(g) for g in ref.grads[name])
            floors[name] = (MUON_NOISE_MULTIPLE * noise, "Newton-Schulz bf16 vs fp32")
        else:
            floors[name] = (tolerance(frobenius_error(ref.stacked(name), ref64.stacked(name)), torch.float32),
                            "float32 vs float64")
    return floors


def optimizer_matches(bench: Bench) -> CheckResult:
    """PROBE_STEPS updates of every parameter from identical parameters and gradients, compared per parameter
    (relative Frobenius error of the stacked updates) within that parameter's measured floor."""
    floors = _optimizer_floor(config_key(bench.config))
    ref, cand = optimizer_traces(bench)
    rows, bad = {}, []
    for name in ref.names:
        err = frobenius_error(cand.stacked(name), ref.stacked(name))
        tol, source = floors[name]
        rows[name] = {"rel": err, "tolerance": tol, "floor_from": source}
        if not err <= tol:
            bad.append(name)
    worst = max(rows, key=lambda n: rows[n]["rel"] / rows[n]["tolerance"])
    numbers = {"tolerance": rows[worst]["tolerance"], "dtype": "float32", "steps": PROBE_STEPS,
               "tensors": {f"update {n}": {"rel": r["rel"], "tolerance": r["tolerance"]} for n, r in rows.items()}}
    if not bad:
        return CheckResult("optimizer", NAME, True, f"{len(rows)} parameters' updates over {PROBE_STEPS} steps within "
                           f"their measured tolerances (worst: {worst} at "
                           f"{rows[worst]['rel'] / rows[worst]['tolerance']:.2f}x)", numbers)
    detail = "; ".join(f"{n}: update rel {rows[n]['rel']:.2e} (tol {rows[n]['tolerance']:.1e})" for n in bad[:3])
    return CheckResult("optimizer", NAME, False, detail, numbers, "optimizer update differs from reference")


# --- generate: the greedy tokens -------------------------------------------------------------------------------


def generate_matches(bench: Bench) -> CheckResult:
    """Greedy tokens are exact (argmax of the same logits); sampled tokens may legitimately differ (another way of
    sampling), so their distribution is the contract checks' business."""
    with seeded(0):
        model = build_model(bench.config)
    model.eval()
    prompt, n = [5, 17, 3, 42], 16
    ref = list(bench.ref()(model, prompt, n, temperature=0.0))
    cand = list(bench.impl()(model, prompt, n, temperature=0.0))
    numbers = {"greedy_reference": ref, "greedy_candidate": cand}
    if ref == cand:
        return CheckResult("generate", NAME, True, f"{n} greedy tokens identical", numbers)
    first = next(i for i, (a, b) in enumerate(zip([*cand, None], ref)) if a != b)
    return CheckResult("generate", NAME, False, f"greedy tokens {cand} instead of {ref} (from step {first})",
                       numbers, "greedy generation differs from argmax")


def compare_component(bench: Bench, dtype: torch.dtype = torch.float32) -> CheckResult:
    """The isolation comparison of `bench`'s component, with a generic diagnosis when it differs."""
    c = bench.component
    if c == "rotary":
        return rotary_matches(bench, dtype)
    if c == "init":
        return init_matches(bench)
    if c == "optimizer":
        return optimizer_matches(bench)
    if c == "generate":
        return generate_matches(bench)
    if c == "gpt":
        return gpt_matches(bench, dtype)
    return module_matches(bench, dtype)
