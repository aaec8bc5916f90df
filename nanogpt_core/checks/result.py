"""What a check reports, and the named diagnoses a failing check can give.

A diagnosis is a short stable name ("causal leakage") that tests, `nanogpt status` and `nanogpt compare` can match
on; its hint says what to look at next. Keeping the names here means one spelling everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# name -> what to look at next. The names are part of the public API: tests and the CLI match on them.
DIAGNOSES: dict[str, str] = {
    "not implemented": "implement the method named in the TODO message, then run the check again.",
    "raised an error": "the component raised while the check ran; run with --debug for the traceback.",
    "wrong shape": "compare the shapes with the contract (`nanogpt components`); head_dim = n_embd // n_head.",
    "wrong dtype": "return the input's dtype: cast back with .to(x.dtype) after mixing with bf16 tables.",
    "state-dict keys or shapes differ from the contract": "name and shape the parameters as the contract says "
    "(c_q, c_k, c_v, c_proj, c_fc); the key diff is in the detail.",
    "NaN/Inf": "look for a division by zero (norm eps), a missing softcap or an exploding learning rate.",
    "zero or missing gradients": "a parameter that gets no gradient is not used in forward, or is detached "
    "(.data, .detach(), torch.no_grad) on the way to the output.",
    "causal leakage": "position t must not see later tokens: use is_causal=True or a lower-triangular mask.",
    "KV-cache decode differs from full forward": "with a cache, the query at position pos must attend to cached "
    "keys 0..pos inclusive; check the mask for Tq < Tk and the position the cache advances to.",
    "missing QK-norm": "normalise q and k per head (q_norm(q), k_norm(k)) before the attention product.",
    "rotary applied after QK-norm": "apply rotary to q and k first, then QK-norm (the reference order); with RMSNorm "
    "the order is invisible, with a mean-subtracting or weighted norm it is not.",
    "QK-norm does not use the injected norm": "build q_norm and k_norm with the `norm` the constructor receives "
    "(norm(head_dim)), so swapping the norm component reaches QK-norm too.",
    "GQA head mapping": "query head h must use key/value head h // (n_head // n_kv_head): repeat_interleave, not "
    "repeat/tile (or enable_gqa=True in scaled_dot_product_attention).",
    "rotary relative-offset property broken": "rotate each pair (x1, x2) by the angle: y1 = x1*cos + x2*sin, "
    "y2 = -x1*sin + x2*cos; both halves must form a rotation.",
    "rotary rotation reversed": "the sin terms have the opposite sign of the reference convention "
    "(y1 = x1*cos + x2*sin, y2 = -x1*sin + x2*cos); checkpoints from nanochat would load but behave differently.",
    "rotary does not depend on position": "the angle must grow with the position: freqs = outer(positions, inv_freq).",
    "rotary table differs from reference": "inv_freq = 1 / base**(arange(0, D, 2) / D); table = outer(t, inv_freq); "
    "cos/sin in bfloat16 shaped (1, seq_len, 1, D/2).",
    "buffers on the wrong device or dtype": "create tables on the `device` you are given (torch.arange(..., "
    "device=device)) and in the contract's dtype; never hard-code 'cpu' or 'cuda'.",
    "norm over the wrong dimension": "normalise over the last dimension only: mean(x**2, dim=-1, keepdim=True).",
    "norm does not normalise": "y = x / sqrt(mean(x**2, last dim) + eps): the output's RMS per vector must be 1.",
    "relu instead of relu²": "the activation is relu(x).square(), not relu(x).",
    "MLP activation not relu²": "the activation is relu(x).square(): positive, and doubling x quadruples it.",
    "MLP mixes positions": "the MLP must act on each position independently (Linear over the last dim only).",
    "missing residual": "add each sub-layer's output to its input: x = x + attn(norm(x)), x = x + mlp(norm(x)).",
    "sub-layer input not normalised": "pre-norm: attention and MLP receive norm(x), not x.",
    "block does not keep attn/mlp": "store the given modules as self.attn and self.mlp (the state-dict keys and the "
    "debug trace depend on those names).",
    "parameter left uninitialised": "init must set every parameter (Linear, Embedding, and any norm weights).",
    "wrong init std": "Linear std = 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in)) with fan_out, fan_in = "
    "weight.shape; embedding std 1.",
    "output projections not zero-initialised": "zero lm_head and every c_proj, so the first loss is ln(vocab) and "
    "every block starts as the identity.",
    "first loss is not ln(vocab)": "with lm_head zeroed every logit is 0 and the loss is exactly ln(vocab_size).",
    "parameter missing from optimizer groups": "every trainable parameter must be in one group: Muon for the block "
    "matrices, AdamW for wte, lm_head and anything else.",
    "parameter in two optimizer groups": "a parameter in two groups is updated twice per step; build the lists so "
    "they do not overlap (e.g. block matrices only from model.transformer.h).",
    "optimizer group without initial_lr": "set group['initial_lr'] = group['lr'] on every group; the LR schedule "
    "scales from it.",
    "Muon group without momentum": "Muon's groups must carry 'momentum' (the training loop warms it up).",
    "optimizer step leaves parameters unchanged": "check that every optimizer is stepped and that the lr is not 0.",
    "generation not reproducible": "draw samples from a torch.Generator seeded with `seed`, not the global RNG.",
    "greedy generation differs from argmax": "temperature 0 must pick argmax of the last position's logits; with the "
    "cache, feed only the new token after the prefill.",
    "temperature ignored": "divide the logits by the temperature before the softmax.",
    "top_k ignored": "keep only the top_k logits (torch.topk) before sampling.",
    "generate yields wrong tokens": "yield one int per step, max_tokens of them, each in [0, vocab_size).",
    "missing softcap": "the logits must be softcapped: 15 * tanh(logits / 15), on lm_head's output (gpt.forward).",
    # the gpt component (the model's top level)
    "wrong softcap value": "the contract's softcap is 15: logits = 15 * tanh(logits / 15), the same number inside "
    "and outside the tanh.",
    "logits of the wrong shape": "return the logits as (B, T, vocab_size), one row per position; flatten only the "
    "copy handed to the cross-entropy.",
    "embedding norm missing": "normalise the embedding before the first block: x = emb_norm(wte(idx)).",
    "final norm missing": "normalise the last block's output before the head: logits = lm_head(final_norm(x)).",
    "embedding and head tied": "the reference keeps two matrices: create lm_head = nn.Linear(n_embd, vocab_size, "
    "bias=False) of its own instead of reusing transformer.wte.weight (tying is a design: compare --design).",
    "loss differs from the cross-entropy of the logits": "compute the loss from the logits you return (after the "
    "softcap): F.cross_entropy(logits.view(-1, vocab), targets.view(-1)).",
    "targets -1 not ignored": "pass ignore_index=-1 to F.cross_entropy: -1 marks positions without a target.",
    "loss_reduction ignored": "pass reduction=loss_reduction to F.cross_entropy; bits per byte asks for 'none' (one "
    "loss per token).",
    "loss not in fp32": "cast the logits to fp32 before the cross-entropy (logits.float()), so a bf16 model's loss "
    "keeps its digits.",
    "estimate_flops off": "6 * (parameters - the embedding's) + 12 * n_layer * n_head * head_dim * sequence_len; the "
    "detail names the term that is off when it is one of these.",
    "output differs from reference": "the outputs differ with identical weights and inputs; the first mismatching "
    "positions are in the detail.",
    "gradients differ from reference": "the forward matches but the backward does not: look for a detach or an "
    "in-place operation on a tensor autograd needs.",
    "optimizer update differs from reference": "same gradients gave a different update: check the groups' lrs and "
    "which optimizer each parameter is in.",
    "init statistics differ from reference": "compare the per-parameter std in the detail with the reference.",
    "loss curve diverges from reference": "the component matches in isolation but training drifts; compare "
    "learning rates and what happens to the component's parameters in the optimizer.",
}


@dataclass
class CheckResult:
    """One check of one component. `passed` is None when the check could not run (not implemented, not provided)."""

    component: str
    name: str
    passed: bool | None
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)
    diagnosis: str = ""

    @property
    def hint(self) -> str:
        """What to look at next, for a failed check with a named diagnosis."""
        return DIAGNOSES.get(self.diagnosis, "")

    @property
    def status(self) -> str:
        if self.passed is None:
            return "not implemented" if self.diagnosis == "not implemented" else "skipped"
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["numbers"] = jsonable(self.numbers)
        data["status"] = self.status
        data["hint"] = self.hint
        return data


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


@dataclass
class TensorDiff:
    """How far a candidate tensor is from a reference one. `rel` is max |a-b| / max |b| (scale-free)."""

    name: str
    max_abs: float
    mean_abs: float
    rel: float
    tolerance: float
    first_mismatches: list[tuple[int, ...]]
    shape_ok: bool = True

    @property
    def passed(self) -> bool:
        return self.shape_ok and self.rel <= self.tolerance

    def summary(self) -> str:
        if not self.shape_ok:
            return f"{self.name}: shape differs"
        where = f", first mismatches at {self.first_mismatches}" if not self.passed and self.first_mismatches else ""
        return (f"{self.name}: max abs {self.max_abs:.2e}, mean abs {self.mean_abs:.2e}, rel {self.rel:.2e} "
                f"(tol {self.tolerance:.0e}){where}")


def diff_tensors(name: str, candidate: torch.Tensor | None, reference: torch.Tensor, tolerance: float,
                 max_positions: int = 5) -> TensorDiff:
    """Compare two tensors elementwise in float64; a missing candidate (None) or another shape never passes."""
    if candidate is None or candidate.shape != reference.shape:
        return TensorDiff(name, float("inf"), float("inf"), float("inf"), tolerance, [], shape_ok=False)
    a, b = candidate.detach().double().cpu(), reference.detach().double().cpu()
    err = (a - b).abs()
    if not torch.isfinite(a).all():
        err = torch.where(torch.isfinite(a), err, torch.full_like(err, float("inf")))
    scale = max(b.abs().max().item() if b.numel() else 0.0, 1e-12)
    max_abs = err.max().item() if err.numel() else 0.0
    mean_abs = err.mean().item() if err.numel() else 0.0
    bad = (err > tolerance * scale).nonzero()
    first = [tuple(int(i) for i in row) for row in bad[:max_positions].tolist()] if bad.numel() else []
    return TensorDiff(name, max_abs, mean_abs, max_abs / scale, tolerance, first)
