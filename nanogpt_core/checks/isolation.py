"""Does a component compute what the reference computes? Build both from one config, load the reference's weights
into the candidate, feed the same seeded inputs and a fixed upstream gradient, and compare outputs and gradients
with respect to the input and every parameter. When they differ, the contract checks name the likely bug."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt_core.checks.harness import REFERENCE, Bench, default_check_config, key_diff, one_thread, seeded
from nanogpt_core.checks.modules import MODULE_CHECKS
from nanogpt_core.checks.result import CheckResult, TensorDiff, diff_tensors
from nanogpt_core.checks.whole_model import MODEL_CHECKS
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.kv_cache import KVCache
from nanogpt_core.model.registry import registrations

# max |candidate - reference| / max |reference| allowed, per component and dtype. fp32 leaves room for a different
# but exact formulation (einsum vs fused attention); bf16 for a few roundings of 2^-8.
TOLERANCES: dict[str, dict[torch.dtype, float]] = {
    "norm": {torch.float32: 1e-5, torch.bfloat16: 2e-2},
    "rotary": {torch.float32: 1e-5, torch.bfloat16: 2e-2},
    "attention": {torch.float32: 1e-4, torch.bfloat16: 5e-2},
    "mlp": {torch.float32: 1e-5, torch.bfloat16: 3e-2},
    "block": {torch.float32: 1e-4, torch.bfloat16: 5e-2},
    # the whole model around a candidate top level: measured against fp64, fp32 logits are within 4e-7 and gradients
    # within 1e-6; bf16 within 1.3e-2 (logits 8e-3, the loss 2e-4)
    "gpt": {torch.float32: 1e-5, torch.bfloat16: 5e-2},
    "optimizer": {torch.float32: 2e-2, torch.bfloat16: 5e-2},  # Muon orthogonalises in bf16 either way
    "init": {torch.float32: 0.0, torch.bfloat16: 0.0},  # statistics, see init_matches
    "generate": {torch.float32: 0.0, torch.bfloat16: 0.0},  # token ids, exact
}
ROTARY_TABLE_TOLERANCE = 1e-2  # the table is bf16: one rounding step of a value near 1 is 2^-8


class MeanCenteringNorm(nn.Module):
    """LayerNorm without weights: a legitimate norm under which the order of rotary and QK-norm matters, because
    a rotation preserves a vector's RMS but not its mean."""

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


def _tolerance(component: str, dtype: torch.dtype) -> float:
    return TOLERANCES[component].get(dtype, TOLERANCES[component][torch.bfloat16])


def _contract_diagnosis(bench: Bench) -> tuple[str, str]:
    """The first named diagnosis among the component's own contract checks, to explain a mismatch."""
    checks = MODULE_CHECKS.get(bench.component) or MODEL_CHECKS.get(bench.component, [])
    for check in checks:
        try:
            with seeded(0):
                r = check(bench)
        except NotImplementedError:
            raise
        except Exception:
            continue
        if r.passed is False and r.diagnosis:
            return r.diagnosis, f"{r.name}: {r.detail}"
    return "", ""


def _outcome(component: str, diffs: list[TensorDiff], tol: float, dtype: torch.dtype, bench: Bench,
             extra: dict | None = None) -> CheckResult:
    numbers = {"tolerance": tol, "dtype": str(dtype).replace("torch.", ""),
               "tensors": {d.name: {"max_abs": d.max_abs, "mean_abs": d.mean_abs, "rel": d.rel,
                                    "first_mismatches": d.first_mismatches} for d in diffs}}
    numbers.update(extra or {})
    bad = [d for d in diffs if not d.passed]
    if not bad:
        worst = max((d.rel for d in diffs), default=0.0)
        return CheckResult(component, "matches reference", True,
                           f"{len(diffs)} tensors (output, gradients) within rel {tol:.0e}; worst {worst:.1e}", numbers)
    diagnosis, why = _contract_diagnosis(bench)
    if not diagnosis:
        diagnosis = "output differs from reference" if bad[0].name == "output" else "gradients differ from reference"
    detail = "; ".join(d.summary() for d in bad[:3]) + (f". Contract: {why}" if why else "")
    return CheckResult(component, "matches reference", False, detail, numbers, diagnosis)


def _module_diffs(bench: Bench, dtype: torch.dtype, tol: float, norm=None) -> list[TensorDiff] | CheckResult:
    with seeded(0):
        ref = bench.build(REFERENCE, norm=norm)
    with seeded(1):
        cand = bench.build(norm=norm)
    diff = key_diff(cand, ref)
    if diff:
        return CheckResult(bench.component, "matches reference", False, f"state dicts differ: {diff}",
                           {"key_diff": diff}, "state-dict keys or shapes differ from the contract")
    cand.load_state_dict(ref.state_dict())
    ref.to(dtype)
    cand.to(dtype)
    x = bench.x().to(dtype)
    if bench.component == "norm":
        x[0, 0] = 0.0  # an all-zero vector: where a missing eps shows
    cos, sin = bench.cos_sin(x.size(1))
    takes_positions = bench.component in ("attention", "block")

    def run(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor | None]]:
        xi = x.clone().requires_grad_(True)
        y = module(xi, (cos, sin), None) if takes_positions else module(xi)
        upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(11)).to(y.dtype)
        (y * upstream).sum().backward()
        return y, xi.grad, {n: p.grad for n, p in module.named_parameters()}

    y_r, gx_r, gp_r = run(ref)
    y_c, gx_c, gp_c = run(cand)
    diffs = [diff_tensors("output", y_c, y_r, tol), diff_tensors("grad input", gx_c, gx_r, tol)]
    for name, g in gp_r.items():
        if g is not None:
            diffs.append(diff_tensors(f"grad {name}", gp_c.get(name), g, tol))
    if bench.component == "attention":  # the cached path is part of attention's behaviour too
        diffs.append(diff_tensors("output with KV cache", _cached(bench, cand, x, cos, sin),
                                  _cached(bench, ref, x, cos, sin), tol))
    return diffs


@torch.no_grad()
def _cached(bench: Bench, attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Prefill half, then one token at a time."""
    B, T = x.shape[:2]
    cache = KVCache(B, bench.config.n_kv_head, T, bench.config.head_dim, num_layers=1)
    steps = [(0, T // 2)] + [(t, t + 1) for t in range(T // 2, T)]
    return torch.cat([attn(x[:, a:b], (cos[:, a:b], sin[:, a:b]), cache) for a, b in steps], dim=1)


def _gpt_matches(bench: Bench, dtype: torch.dtype, tol: float) -> CheckResult:
    """The model with the candidate top level against the reference model, on the reference's weights: the logits,
    the loss with some targets -1, the per-token losses, every parameter's gradient, and logits decoded with a KV
    cache (half the prompt at once, then one token at a time)."""
    with seeded(0):
        ref = build_model(bench.config)
    with seeded(1):
        cand = bench.model()
    diff = key_diff(cand, ref)
    if diff:
        return CheckResult("gpt", "matches reference", False, f"state dicts differ: {diff}", {"key_diff": diff},
                           "state-dict keys or shapes differ from the contract")
    cand.load_state_dict(ref.state_dict())
    ref.to(dtype)
    cand.to(dtype)
    idx = bench.tokens()
    targets = idx.roll(-1, dims=1).clone()
    targets[:, ::3] = -1

    def run(model: nn.Module) -> dict[str, torch.Tensor | None]:
        out: dict[str, torch.Tensor | None] = {"output": model(idx)}
        with torch.no_grad():
            out["per-token loss"] = model(idx, targets, loss_reduction="none")
            T = idx.size(1)
            cache = model.new_kv_cache(idx.size(0), T)
            steps = [(0, T // 2)] + [(t, t + 1) for t in range(T // 2, T)]
            out["output with KV cache"] = torch.cat([model(idx[:, a:b], kv_cache=cache) for a, b in steps], dim=1)
        loss = model(idx, targets)
        loss.backward()
        out["loss"] = loss
        out.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
        return out

    expected, got = run(ref), run(cand)
    diffs = [diff_tensors(name, got.get(name), tensor, tol) for name, tensor in expected.items() if tensor is not None]
    return _outcome("gpt", diffs, tol, dtype, bench)


def _rotary_matches(bench: Bench, dtype: torch.dtype, tol: float) -> CheckResult:
    ref, cand = bench.ref(), bench.impl()
    L = 40
    cos_r, sin_r = bench.cos_sin(L, ref)
    cos_c, sin_c = bench.cos_sin(L, cand)
    diffs = [diff_tensors("cos table", cos_c.float(), cos_r.float(), ROTARY_TABLE_TOLERANCE),
             diff_tensors("sin table", sin_c.float(), sin_r.float(), ROTARY_TABLE_TOLERANCE)]
    x = torch.randn(2, L, 3, bench.config.head_dim, generator=torch.Generator().manual_seed(3)).to(dtype)

    def run(apply: Callable, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xi = x.clone().requires_grad_(True)
        y = apply(xi, cos_r, sin)
        (y * torch.linspace(-1, 1, y.numel()).view(y.shape).to(y.dtype)).sum().backward()
        return y, xi.grad

    y_r, g_r = run(ref.apply, sin_r)
    y_c, g_c = run(cand.apply, sin_r)
    diffs += [diff_tensors("output", y_c, y_r, tol), diff_tensors("grad input", g_c, g_r, tol)]
    result = _outcome("rotary", diffs, tol, dtype, bench)
    if not result.passed:
        y_flipped, _ = run(cand.apply, -sin_r)
        if diff_tensors("output", y_flipped, y_r, tol).passed:
            result.diagnosis = "rotary rotation reversed"
            result.detail = "apply(x, cos, -sin) equals the reference's apply(x, cos, sin): " + result.detail
        elif not diffs[2].passed and diffs[0].passed and diffs[1].passed and not result.diagnosis.startswith("rotary"):
            result.diagnosis = "rotary relative-offset property broken"
        elif not (diffs[0].passed and diffs[1].passed) and diffs[2].passed:
            result.diagnosis = "rotary table differs from reference"
    return result


def _init_matches(bench: Bench) -> CheckResult:
    """Random draws need not be equal (another order of init calls is fine); the statistics must be."""
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
            tol = 4 * (2 / p.numel()) ** 0.5 + 0.01  # two independent std estimates
            rel = abs(q.std().item() / p.std().item() - 1)
            ok = rel <= tol
            rows[name] = {"reference_std": p.std().item(), "candidate_std": q.std().item(), "rel": rel, "tol": tol}
        if not ok:
            bad.append(name)
    identical = all(torch.equal(ref[n], cand[n]) for n in ref)
    numbers = {"parameters": rows, "identical_draws": identical}
    if not bad:
        return CheckResult("init", "matches reference", True, f"per-parameter std and zeros match the reference "
                           f"({'identical draws' if identical else 'different draws, same statistics'})", numbers)
    diagnosis, why = _contract_diagnosis(bench)
    return CheckResult("init", "matches reference", False, f"statistics differ for {', '.join(bad[:4])}"
                       + (f". Contract: {why}" if why else ""), numbers,
                       diagnosis or "init statistics differ from reference")


def _optimizer_matches(bench: Bench, tol: float, steps: int = 3) -> CheckResult:
    with seeded(0):
        ref_model = build_model(bench.config)
    cand_model = build_model(bench.config, use={"optimizer": bench.impl_set})
    cand_model.load_state_dict(ref_model.state_dict())
    start = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
    idx = bench.tokens()
    for model in (ref_model, cand_model):
        optimizers = model.setup_optimizers()
        for _ in range(steps):
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            model(idx, idx.roll(-1, dims=1)).backward()
            for opt in optimizers:
                opt.step()
    cand_params = dict(cand_model.named_parameters())
    diffs = [diff_tensors(f"update {n}", cand_params[n].detach() - start[n], p.detach() - start[n], tol)
             for n, p in ref_model.named_parameters()]
    result = _outcome("optimizer", diffs, tol, torch.float32, bench, {"steps": steps})
    if not result.passed and result.diagnosis == "output differs from reference":
        result.diagnosis = "optimizer update differs from reference"
    return result


def _generate_matches(bench: Bench) -> CheckResult:
    with seeded(0):
        model = build_model(bench.config)
    model.eval()
    prompt, n = [5, 17, 3, 42], 16
    ref = list(bench.ref()(model, prompt, n, temperature=0.0))
    cand = list(bench.impl()(model, prompt, n, temperature=0.0))
    seeded_ref = list(bench.ref()(model, prompt, n, temperature=1.0, seed=3))
    seeded_cand = list(bench.impl()(model, prompt, n, temperature=1.0, seed=3))
    numbers = {"greedy_reference": ref, "greedy_candidate": cand,
               "same_sampled_tokens_for_seed_3": seeded_ref == seeded_cand}
    if ref == cand:
        sampled = "identical" if seeded_ref == seeded_cand else "differ: fine if sampled another way"
        return CheckResult("generate", "matches reference", True,
                           f"{n} greedy tokens identical (sampled tokens for one seed {sampled})", numbers)
    diagnosis, why = _contract_diagnosis(bench)
    return CheckResult("generate", "matches reference", False, f"greedy tokens {cand} instead of {ref}"
                       + (f". Contract: {why}" if why else ""), numbers,
                       diagnosis or "greedy generation differs from argmax")


@torch.no_grad()
def _ignores_injected_norm(bench: Bench, tol: float) -> bool:
    """Built with a mean-subtracting norm, does the candidate still give the reference's RMSNorm output?"""
    with seeded(0):
        ref = bench.build(REFERENCE)
    cand = bench.build(norm=MeanCenteringNorm)
    cand.load_state_dict(ref.state_dict())
    x = bench.x()
    cos_sin = bench.cos_sin(x.size(1))
    return diff_tensors("output", cand(x, cos_sin, None), ref(x, cos_sin, None), tol).passed


def _attention_norm_order(bench: Bench, dtype: torch.dtype, tol: float, result: CheckResult) -> CheckResult:
    """Expose rotary applied after QK-norm. With RMSNorm the order is invisible in exact arithmetic (a rotation
    keeps the RMS) and shows only at the 1e-3 level through the bf16 cos/sin table; a mean-subtracting norm makes it
    plain. A mismatch that vanishes with an identity norm injected is about where QK-norm is applied."""
    if result.passed:
        probe = _module_diffs(bench, dtype, tol, norm=MeanCenteringNorm)
        if isinstance(probe, CheckResult):
            return probe
        probe_result = _outcome("attention", probe, tol, dtype, bench, {"injected_norm": "mean-centering"})
        if not probe_result.passed:
            if _ignores_injected_norm(bench, tol):
                probe_result.diagnosis = "QK-norm does not use the injected norm"
                probe_result.detail = ("with a mean-subtracting norm injected the output is still the RMSNorm "
                                       "one: " + probe_result.detail)
            else:
                probe_result.diagnosis = "rotary applied after QK-norm"
                probe_result.detail = ("matches with RMSNorm, but not with a mean-subtracting norm injected: "
                                       + probe_result.detail)
            return probe_result
        return result
    if result.diagnosis in ("output differs from reference", "gradients differ from reference"):
        probe = _module_diffs(bench, dtype, tol, norm=IdentityNorm)
        if not isinstance(probe, CheckResult) and all(d.passed for d in probe):
            result.diagnosis = "rotary applied after QK-norm"
            result.detail = ("matches the reference when the injected norm is the identity, so the difference is "
                             "where QK-norm sits relative to rotary: " + result.detail)
    return result


def matches_reference(impl_set: str, component: str, config: GPTConfig | None = None,
                      dtype: torch.dtype = torch.float32) -> CheckResult:
    """Compare one component of `impl_set` with the reference on identical weights and inputs (issue 5, step 1).

    Outputs and gradients (input and every parameter, under a fixed upstream gradient) must agree within the
    tolerance for the component and dtype, stated in `numbers['tolerance']`. Attention is compared twice: with the
    model's RMSNorm and with a mean-subtracting norm injected, which exposes rotary applied after QK-norm.
    """
    if (impl_set, component) not in registrations():
        return CheckResult(component, "matches reference", None, f"{impl_set!r} does not provide {component}", {},
                           "not provided")
    with one_thread():
        return _matches_reference(impl_set, component, config or default_check_config(), dtype)


def _matches_reference(impl_set: str, component: str, config: GPTConfig, dtype: torch.dtype) -> CheckResult:
    bench = Bench(impl_set, component, config)
    tol = _tolerance(component, dtype)
    try:
        if component == "rotary":
            return _rotary_matches(bench, dtype, tol)
        if component == "init":
            return _init_matches(bench)
        if component == "optimizer":
            return _optimizer_matches(bench, tol)
        if component == "generate":
            return _generate_matches(bench)
        if component == "gpt":
            return _gpt_matches(bench, dtype, tol)
        diffs = _module_diffs(bench, dtype, tol)
        if isinstance(diffs, CheckResult):
            return diffs
        result = _outcome(component, diffs, tol, dtype, bench)
        if component == "attention":
            return _attention_norm_order(bench, dtype, tol, result)
        return result
    except NotImplementedError as exc:
        return CheckResult(component, "matches reference", None, str(exc), {}, "not implemented")
    except Exception as exc:
        return CheckResult(component, "matches reference", False, f"{type(exc).__name__}: {exc}",
                           {"exception": type(exc).__name__}, "raised an error")
