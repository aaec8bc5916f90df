"""Contract checks of the `gpt` component, the model's top level, each on the assembled model (the gpt under test,
every other component reference, PyTorch's default init so no output is zero by construction).

They look at the top level from outside, so a correct gpt written in any style passes: the logits' shape, the softcap
(saturated by a huge head), the norms around the blocks (the scale of what the first block and the head receive), the
loss (the cross-entropy of the logits, in fp32, -1 targets skipped, every reduction), the embedding and the head
kept as two matrices, and `estimate_flops` against the FLOPs torch itself counts on a forward and backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.modules import Check, result, state_dict_check
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.contracts import LOGIT_SOFTCAP

# A normalised vector has RMS 1; RMSNorm's eps moves it by ~1e-7, a missing norm by far more than 1e-3 here (the
# check scales the embedding by 10 first). The same bound as the norm component's own check.
RMS_TOLERANCE = 1e-3
# The head's raw outputs are scaled to ~1000 and ~4000: tanh(1000 / 15) is 1.0 in fp32, so a cap c saturates at c
# exactly both times, while uncapped logits grow 4x.
SATURATING_SCALES = (1000.0, 4000.0)
# Loss against the cross-entropy recomputed in fp64 from the model's own logits. Measured on the check config: the
# reference's fp32 loss is within 2e-8 of it, a loss computed before the softcap is off by 0.23 (head scaled 10x).
LOSS_TOLERANCE = 1e-5
# A bf16 model: the reference's fp32 loss of its bf16 logits is within 1e-7 (measured), a loss computed in bf16 and
# cast to fp32 afterwards off by 1.2e-3.
BF16_LOSS_TOLERANCE = 1e-4


def gpt_parameters(b: Bench) -> CheckResult:
    return state_dict_check(b.model(), build_model(b.config, device=b.device))


def gpt_logits_shape(b: Bench) -> CheckResult:
    model = b.model()
    V = b.config.vocab_size
    for batch, seq_len in ((2, 16), (1, 1)):
        logits = model(b.tokens(batch=batch, seq_len=seq_len))
        expected = (batch, seq_len, V)
        numbers = {"shape": list(logits.shape), "expected": list(expected)}
        if tuple(logits.shape) != expected:
            return result("logits shape", False, f"idx of shape {(batch, seq_len)} gave logits {tuple(logits.shape)}, "
                          f"expected {expected}", numbers, "logits of the wrong shape")
        if logits.dtype != torch.float32:
            return result("logits shape", False, f"logits in {logits.dtype} from an fp32 model", numbers,
                          "wrong dtype")
    return result("logits shape", True, f"(B, T, {V}) for (2, 16) and (1, 1) inputs, fp32 from an fp32 model")


def softcap_saturation(model: nn.Module, idx: torch.Tensor) -> list[float]:
    """The largest |logit| with the head's raw outputs scaled to each of SATURATING_SCALES (the head put back)."""
    head = model.lm_head.weight
    direction = torch.randn(head.shape, generator=torch.Generator().manual_seed(13)).to(head.device, head.dtype)
    direction /= math.sqrt(head.size(1))
    tops = []
    with torch.no_grad():
        saved = head.clone()
        for scale in SATURATING_SCALES:
            head.copy_(direction * scale)
            tops.append(model(idx).abs().max().item())
        head.copy_(saved)
    return tops


def gpt_softcap(b: Bench) -> CheckResult:
    tops = softcap_saturation(b.model(), b.tokens())
    numbers = {"max_abs_logit": tops, "scales": list(SATURATING_SCALES), "softcap": LOGIT_SOFTCAP}
    if tops[1] > 1.5 * tops[0]:
        return result("softcap", False, f"a head 4x larger gave 4x larger logits ({tops[0]:.3g} -> {tops[1]:.3g}): "
                      f"nothing caps them", numbers, "missing softcap")
    if abs(tops[1] - LOGIT_SOFTCAP) > 1e-3:
        return result("softcap", False, f"logits saturate at {tops[1]:.4g}, so the cap is {tops[1]:.4g}; the "
                      f"contract's is {LOGIT_SOFTCAP:g}", numbers, "wrong softcap value")
    return result("softcap", True, f"a huge head saturates the logits at {tops[1]:.4g} = the softcap", numbers)


def _rms_of_inputs(model: nn.Module, idx: torch.Tensor, modules: dict[str, nn.Module]) -> dict[str, float | None]:
    """Max |RMS - 1| over the vectors each module receives as its first input (None: the module was not called)."""
    seen: dict[str, float | None] = dict.fromkeys(modules)
    handles = []
    for name, module in modules.items():
        def record(mod, args, name=name):
            if seen[name] is None:
                rms = args[0].detach().double().pow(2).mean(-1).sqrt()
                seen[name] = (rms - 1).abs().max().item()
        handles.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model(idx)
    finally:
        for h in handles:
            h.remove()
    return seen


def _norm_check(b: Bench, name: str, module_name: str, what: str, diagnosis: str) -> CheckResult:
    model = b.model()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(10.0)  # an embedding 10x too large: only a norm gives RMS 1 back
    module = model.get_submodule(module_name)
    err = _rms_of_inputs(model, b.tokens(), {module_name: module})[module_name]
    if err is None:
        return CheckResult("", name, None, f"{module_name} is never called as a module, so what it receives is not "
                           f"visible to this check", {}, "")
    numbers = {"max_abs_rms_error": err, "tolerance": RMS_TOLERANCE, "embedding_scale": 10.0}
    ok = err <= RMS_TOLERANCE
    return result(name, ok, f"{what} {'has' if ok else 'does not have'} RMS 1 (off by up to {err:.2g}) with the "
                  f"embedding scaled 10x", numbers, diagnosis)


def gpt_embedding_norm(b: Bench) -> CheckResult:
    return _norm_check(b, "embedding normalised", "transformer.h.0", "the input of the first block",
                       "embedding norm missing")


def gpt_final_norm(b: Bench) -> CheckResult:
    return _norm_check(b, "final norm before the head", "lm_head", "the input of lm_head", "final norm missing")


def gpt_untied(b: Bench) -> CheckResult:
    model = b.model()
    wte, head = model.transformer.wte.weight, model.lm_head.weight
    tied = wte.untyped_storage().data_ptr() == head.untyped_storage().data_ptr()
    detail = "lm_head.weight is the embedding matrix itself (tied)" if tied else \
        "transformer.wte and lm_head are two matrices"
    return result("embedding and head apart", not tied, detail, {"tied": tied}, "embedding and head tied")


def _cross_entropy_fp64(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token -log softmax(logits)[target] in fp64, 0 where the target is -1: the loss recomputed by hand."""
    logp = logits.detach().double().reshape(-1, logits.size(-1)).log_softmax(-1)
    t = targets.reshape(-1)
    picked = logp.gather(1, t.clamp_min(0)[:, None])[:, 0]
    return torch.where(t >= 0, -picked, torch.zeros_like(picked))


def _targets(idx: torch.Tensor, ignore_every: int = 0) -> torch.Tensor:
    """The next token as the target; with `ignore_every`, every n-th position has none (-1)."""
    t = idx.roll(-1, dims=1).clone()
    if ignore_every:
        t[:, ::ignore_every] = -1
    return t


def gpt_loss_is_cross_entropy(b: Bench) -> CheckResult:
    """With the head scaled 10x the softcap bends the logits visibly (PyTorch's default init gives |z| ~ 1, where
    15 tanh(z / 15) is z to 1e-3), so a loss computed from the uncapped head output no longer agrees."""
    model = b.model()
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    idx = b.tokens()
    t = _targets(idx)
    with torch.no_grad():
        loss = model(idx, t)
        expected = _cross_entropy_fp64(model(idx), t).mean().item()
    err = abs(loss.item() - expected) / expected
    numbers = {"loss": loss.item(), "cross_entropy_of_logits": expected, "rel_error": err, "tolerance": LOSS_TOLERANCE}
    return result("loss is the cross-entropy of the logits", err <= LOSS_TOLERANCE,
                  f"loss {loss.item():.6f}, cross-entropy of the returned logits {expected:.6f}", numbers,
                  "loss differs from the cross-entropy of the logits")


def gpt_ignores_minus_one(b: Bench) -> CheckResult:
    model = b.model()
    idx = b.tokens()
    t = _targets(idx, ignore_every=3)  # a third of the targets are "no target"
    try:
        with torch.no_grad():
            loss = model(idx, t).item()
            per_token = _cross_entropy_fp64(model(idx), t)
    except (IndexError, RuntimeError) as exc:
        return result("targets -1 ignored", False, f"targets with -1 raise {type(exc).__name__}: {exc}",
                      {"exception": type(exc).__name__}, "targets -1 not ignored")
    expected = (per_token.sum() / (t >= 0).sum()).item()
    err = abs(loss - expected) / expected
    numbers = {"loss": loss, "mean_over_real_targets": expected, "rel_error": err, "tolerance": LOSS_TOLERANCE}
    return result("targets -1 ignored", err <= LOSS_TOLERANCE, f"loss {loss:.6f}; mean over the targets that are not "
                  f"-1: {expected:.6f}", numbers, "targets -1 not ignored")


def gpt_loss_reduction(b: Bench) -> CheckResult:
    model = b.model()
    idx = b.tokens()
    t = _targets(idx, ignore_every=3)
    with torch.no_grad():
        expected = _cross_entropy_fp64(model(idx), t)
        none = model(idx, t, loss_reduction="none")
        total = model(idx, t, loss_reduction="sum")
    numbers = {"none_shape": list(none.shape), "expected_shape": [idx.numel()]}
    if tuple(none.shape) != (idx.numel(),):
        return result("loss_reduction", False, f"loss_reduction='none' gave shape {tuple(none.shape)}, expected "
                      f"({idx.numel()},): one loss per token", numbers, "loss_reduction ignored")
    err_none = ((none.double() - expected).abs().max() / expected.abs().max()).item()
    err_sum = abs(total.item() - expected.sum().item()) / expected.sum().item()
    numbers.update(rel_error_none=err_none, rel_error_sum=err_sum, tolerance=LOSS_TOLERANCE)
    ok = err_none <= LOSS_TOLERANCE and err_sum <= LOSS_TOLERANCE
    return result("loss_reduction", ok, f"'none': per-token losses within {err_none:.1e} (0 where the target is -1), "
                  f"'sum' within {err_sum:.1e}", numbers, "loss_reduction ignored")


def gpt_loss_fp32(b: Bench) -> CheckResult:
    """In a bf16 model the logits are bf16; the loss must still be computed (and returned) in fp32."""
    model = b.model().to(torch.bfloat16)
    idx = b.tokens()
    t = _targets(idx)
    with torch.no_grad():
        loss = model(idx, t)
        expected = _cross_entropy_fp64(model(idx).float(), t).mean().item()
    err = abs(loss.float().item() - expected) / expected
    numbers = {"loss_dtype": str(loss.dtype), "rel_error": err, "tolerance": BF16_LOSS_TOLERANCE}
    if loss.dtype != torch.float32:
        return result("loss in fp32", False, f"a bf16 model returns its loss in {loss.dtype}", numbers,
                      "loss not in fp32")
    return result("loss in fp32", err <= BF16_LOSS_TOLERANCE, f"bf16 model: fp32 loss within {err:.1e} of the "
                  f"cross-entropy of its logits taken in fp32", numbers, "loss not in fp32")


def counted_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Matmul FLOPs per token of one forward and backward, as torch's FlopCounterMode counts them. Attention runs on
    the math backend, whose matmuls the counter sees (the fused CPU kernel it does not count)."""
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, model.config.vocab_size, (1, seq_len), generator=g).to(model.get_device())
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(idx, idx.roll(-1, dims=1)).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / seq_len


def _flops_gap(model: nn.Module, gap: int) -> str:
    """What a difference between estimate and count is, when it is exactly one of the formula's terms."""
    c = model.config
    attention = 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len
    known = {
        6 * model.transformer.wte.weight.numel(): "6 x the embedding's weights, counted: the embedding is a lookup, "
        "with no multiply, so leave it out",
        -6 * model.lm_head.weight.numel(): "6 x the head's weights, missing: a token is multiplied by the head (tied "
        "to the embedding or not)",
        attention: "attention's 12 * n_layer * n_head * head_dim * sequence_len, counted twice",
        -attention: "attention's 12 * n_layer * n_head * head_dim * sequence_len, missing",
    }
    return f"; the gap is exactly {known[gap]}" if gap in known else ""


def gpt_estimate_flops(b: Bench) -> CheckResult:
    model = b.model()
    estimate = model.estimate_flops()
    counted = counted_flops_per_token(model, b.config.sequence_len)
    numbers = {"estimate": estimate, "counted": counted, "seq_len": b.config.sequence_len}
    if not isinstance(estimate, int | float) or isinstance(estimate, bool):
        return result("estimate_flops", False, f"estimate_flops() returned {estimate!r}, not a number", numbers,
                      "estimate_flops off")
    rel = abs(estimate - counted) / counted
    numbers["rel_error"] = rel
    # nanochat's formula counts exactly the matmuls FlopCounterMode sees (measured: equal to the FLOP, with and
    # without grouped-query heads); 1e-6 leaves room for a float result, none for a missing term
    ok = rel <= 1e-6
    detail = f"estimate_flops() = {estimate:,}, counted {counted:,.0f} per token of a forward and backward"
    return result("estimate_flops", ok, detail + ("" if ok else _flops_gap(model, round(estimate - counted))),
                  numbers, "estimate_flops off")


# The order a failure is most telling in: what the rest would trip over first (shapes), then each classic mistake.
GPT_CHECKS: list[Check] = [gpt_parameters, gpt_logits_shape, gpt_softcap, gpt_embedding_norm, gpt_final_norm,
                           gpt_untied, gpt_loss_is_cross_entropy, gpt_ignores_minus_one, gpt_loss_reduction,
                           gpt_loss_fp32, gpt_estimate_flops]
