"""What a check reports, and the named diagnoses a failing check can give.

A diagnosis is a short stable name ("causal leakage") that tests, `nanogpt status` and `nanogpt compare` can match
on; its hint says what to look at next. Keeping the names here means one spelling everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# name -> the fix printed with it. The names are part of the public API: tests, `nanogpt status` and `nanogpt compare`
# match on them, and docs/diagnoses.md has one row per name (tests/test_diagnoses_doc.py keeps the two in step).
DIAGNOSES: dict[str, str] = {
    # anything
    "not implemented": "implement the method named in the TODO message, then run the check again.",
    "raised an error": "the component raised while the check ran (the error and the line are in the detail); "
    "`nanogpt check SET:COMPONENT --debug` or `nanogpt compare --use SET:COMPONENT --debug` prints its traceback.",
    "wrong shape": "compare the shapes with the contract (`nanogpt components`).",
    "wrong dtype": "return the input's dtype: cast back with .to(x.dtype) after mixing with bf16 tables.",
    "state-dict keys or shapes differ from the contract": "name and shape the parameters as the contract says "
    "(c_q, c_k, c_v, c_proj, c_fc); the key diff is in the detail.",
    "biases left on": "nn.Linear has a bias by default: create every projection with bias=False, as the contract's "
    "parameter list (no biases) says.",
    "NaN/Inf": "look for a division by zero (norm eps), a missing softcap or an exploding learning rate.",
    "zero or missing gradients": "a parameter that gets no gradient is not used in forward, or is detached "
    "(.data, .detach(), torch.no_grad) on the way to the output.",
    "non-deterministic output": "two identical calls must give identical outputs: remove dropout (F.dropout, "
    "nn.Dropout, dropout_p in scaled_dot_product_attention) and any torch.rand* inside the component.",
    "buffers on the wrong device or dtype": "create tables on the `device` you are given (torch.arange(..., "
    "device=device)) and in the contract's dtype; never hard-code 'cpu' or 'cuda'.",
    "output differs from reference": "the outputs differ with identical weights and inputs; the first mismatching "
    "positions are in the detail.",
    "gradients differ from reference": "the forward matches but the backward does not: look for a detach, an "
    "in-place operation on a tensor autograd needs, or a custom autograd.Function.",
    # attention
    "causal mask hides the current position": "position t attends to keys 0..t inclusive: torch.tril(ones) (diagonal "
    "0), not diagonal=-1 or triu(diagonal=0); the first position would otherwise see nothing (NaN).",
    "causal leakage": "position t must not see later tokens: is_causal=True in scaled_dot_product_attention, or a "
    "lower-triangular mask (torch.tril) with masked_fill(-inf) above the diagonal.",
    "heads merged without transpose": "attention's output is (B, H, T, D): y.transpose(1, 2).contiguous().view(B, T, "
    "C) (or .reshape); viewing (B, H, T, D) straight as (B, T, C) mixes heads and positions.",
    "attention weights do not sum to 1": "softmax over the keys, the last dimension of the (B, H, Tq, Tk) scores: "
    "scores.softmax(dim=-1).",
    "wrong softmax scale": "scale the scores by 1/sqrt(head_dim) (scaled_dot_product_attention's default): "
    "q @ k.transpose(-2, -1) / math.sqrt(head_dim).",
    "values transformed before attention": "v = c_v(x).view(B, T, Hkv, D) and nothing else: rotary and QK-norm act "
    "on q and k only.",
    "values not taken from c_v": "v = self.c_v(x).view(B, T, n_kv_head, head_dim): the values come from c_v, the "
    "keys from c_k.",
    "rotary called with the wrong table": "call self.rotary.apply(q, cos, sin) with cos, sin = cos_sin as given, on q "
    "and k shaped (B, T, heads, head_dim), before the transpose.",
    "rotary not applied to q and k": "rotate both q and k, before QK-norm: q, k = rotary.apply(q, cos, sin), "
    "rotary.apply(k, cos, sin).",
    "KV-cache decode differs from full forward": "with a cache, the query at position pos must attend to cached "
    "keys 0..pos inclusive: is_causal=True only when Tq == Tk, no mask for a single query, and for a chunk after a "
    "prefix all of the prefix plus a causal mask within the chunk.",
    "missing QK-norm": "normalise q and k per head (q_norm(q), k_norm(k)) before the attention product.",
    "rotary applied after QK-norm": "apply rotary to q and k first, then QK-norm (the reference order); with RMSNorm "
    "the order is invisible, with a mean-subtracting or weighted norm it is not.",
    "QK-norm does not use the injected norm": "build q_norm and k_norm with the `norm` the constructor receives "
    "(norm(head_dim)), so swapping the norm component reaches QK-norm too.",
    "GQA head mapping": "query head h must use key/value head h // (n_head // n_kv_head): repeat_interleave, not "
    "repeat/tile (or enable_gqa=True in scaled_dot_product_attention).",
    # rotary
    "rotary relative-offset property broken": "rotate each pair (x1, x2) by the angle: y1 = x1*cos + x2*sin, "
    "y2 = -x1*sin + x2*cos; both halves must form a rotation.",
    "rotary rotation reversed": "the sin terms have the opposite sign of the reference convention "
    "(y1 = x1*cos + x2*sin, y2 = -x1*sin + x2*cos); checkpoints from nanochat would load but behave differently.",
    "rotary pairs interleaved, not halves": "the contract pairs channel i with channel i + D/2 (x1 = x[..., :D//2], "
    "x2 = x[..., D//2:], then torch.cat([y1, y2], dim=-1)), not adjacent channels (x[..., 0::2], x[..., 1::2]).",
    "cos and sin swapped": "at position 0 the rotation is the identity: cos = 1, sin = 0. precompute returns "
    "(cos, sin) in that order, and apply multiplies x1 and x2 by cos on the diagonal.",
    "rotary frequencies differ": "inv_freq = 1 / base ** (torch.arange(0, head_dim, 2) / head_dim), with the base "
    "you are given (10000): the exponent steps by 2 over head_dim.",
    "rotary table has the wrong shape": "return cos and sin shaped (1, seq_len, 1, head_dim // 2): "
    "cos[None, :, None, :], so they broadcast over the batch and the heads.",
    "rotary does not depend on position": "the angle must grow with the position: freqs = outer(positions, inv_freq).",
    "rotary table differs from reference": "inv_freq = 1 / base**(arange(0, D, 2) / D); table = outer(t, inv_freq) "
    "with positions t = arange(seq_len) in float32; cos/sin in bfloat16 shaped (1, seq_len, 1, D/2).",
    # norm
    "norm over the wrong dimension": "normalise over the last dimension only: mean(x**2, dim=-1, keepdim=True).",
    "norm reduces without keepdim": "keep the reduced dimension so it broadcasts against x: "
    "x.pow(2).mean(dim=-1, keepdim=True).",
    "norm eps too large": "eps only guards against division by zero: the reference uses torch.finfo(x.dtype).eps "
    "(F.rms_norm's default); anything in [0, 1e-5] is fine.",
    "norm divides by the wrong statistic": "divide by the root mean square: x / sqrt(mean(x**2, dim=-1, "
    "keepdim=True) + eps), i.e. torch.nn.functional.rms_norm(x, (x.size(-1),)).",
    "norm subtracts the mean": "RMSNorm does not centre: no x - x.mean(); that is LayerNorm.",
    "norm does not normalise": "y = x / sqrt(mean(x**2, last dim) + eps): the output's RMS per vector must be 1.",
    # mlp
    "relu instead of relu²": "the activation is relu(x).square(), not relu(x).",
    "MLP activation not relu²": "the activation is relu(x).square(): positive, and doubling x quadruples it.",
    "MLP hidden width is not 4 * n_embd": "c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False) and c_proj = "
    "nn.Linear(4 * n_embd, n_embd, bias=False).",
    "activation not applied to c_fc's output": "apply relu² to the hidden layer, between the two projections: "
    "self.c_proj(F.relu(self.c_fc(x)).square()).",
    "something applied after c_proj": "c_proj is the last operation: return self.c_proj(relu(c_fc(x)).square()).",
    "MLP mixes positions": "the MLP must act on each position independently (Linear over the last dim only).",
    # block
    "missing residual": "add each sub-layer's output to its input: x = x + attn(norm(x)), x = x + mlp(norm(x)).",
    "residual branch scaled": "add the sub-layer outputs unscaled: x = x + attn(attn_norm(x), ...), "
    "x = x + mlp(mlp_norm(x)).",
    "post-norm instead of pre-norm": "normalise the sub-layer's input, not the sum: x = x + attn(attn_norm(x)), not "
    "x = attn_norm(x + attn(x)).",
    "MLP reads the stream before the attention update": "update x first, then feed the MLP the new stream: "
    "x = x + attn(attn_norm(x), ...); x = x + mlp(mlp_norm(x)).",
    "sub-layer input not normalised": "pre-norm: attention and MLP receive norm(x), not x.",
    "block does not pass the KV cache": "hand the kv_cache you receive to attention: self.attn(self.attn_norm(x), "
    "cos_sin, kv_cache).",
    "block does not keep attn/mlp": "store the given modules as self.attn and self.mlp (the state-dict keys and the "
    "debug trace depend on those names).",
    # init
    "parameter left uninitialised": "init must set every parameter (Linear, Embedding, and any norm weights).",
    "wrong init std": "Linear std = 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in)) with fan_out, fan_in = "
    "weight.shape; embedding std 1.",
    "init draws are not normal": "draw with nn.init.normal_(w, 0, std) (the contract says normal), not uniform_ or "
    "another distribution of the same std.",
    "weights zeroed that must be random": "zero only lm_head and the c_proj output projections; c_q, c_k, c_v and "
    "c_fc must be random, or their gradients are zero forever.",
    "output projections not zero-initialised": "zero lm_head and every c_proj, so the first loss is ln(vocab) and "
    "every block starts as the identity.",
    # optimizer
    "parameter missing from optimizer groups": "every trainable parameter must be in one group: Muon for the block "
    "matrices, AdamW for wte, lm_head and anything else.",
    "parameter in two optimizer groups": "a parameter in two groups is updated twice per step; build the lists so "
    "they do not overlap (e.g. block matrices only from model.transformer.h).",
    "parameters in the wrong optimizer": "the 2-D matrices inside model.transformer.h go to Muon; wte, lm_head and "
    "everything else to AdamW (Muon is for hidden matrices, not lookups and readouts).",
    "Muon's Newton-Schulz differs": "use torch.optim.Muon's orthogonalisation as it is: ns_steps=5 with the default "
    "quintic coefficients (3.4445, -4.7750, 2.0315); fewer steps or other coefficients leave the update only partly "
    "orthogonalised.",
    "missing width scaling": "scale the AdamW learning rates by (n_embd / 768) ** -0.5: "
    "lr = unembedding_lr * s for lm_head and embedding_lr * s for wte.",
    "learning rate off by a factor": "pass each group its own learning rate: lm_head unembedding_lr * s, wte "
    "embedding_lr * s (s = (n_embd / 768) ** -0.5), Muon lr=matrix_lr with adjust_lr_fn='original'.",
    "weight decay differs": "pass weight_decay explicitly: AdamW(weight_decay=weight_decay) and Muon(weight_decay=0); "
    "torch.optim.Muon defaults to 0.1 and AdamW to 0.01.",
    "AdamW eps differs": "AdamW(eps=1e-10): torch's default 1e-8 changes every update whose gradient is that small.",
    "AdamW betas differ": "AdamW(betas=(0.8, 0.95)), nanochat's, not torch's default (0.9, 0.999).",
    "Muon without Nesterov momentum": "Muon(nesterov=True): the update is grad.lerp(buffer, momentum), not the "
    "buffer itself.",
    "Muon momentum differs": "Muon(momentum=0.95); the training loop warms the group's 'momentum' up from 0.85.",
    "optimizer group without initial_lr": "set group['initial_lr'] = group['lr'] on every group; the LR schedule "
    "scales from it.",
    "Muon group without momentum": "Muon's groups must carry 'momentum' (the training loop warms it up).",
    "optimizer step leaves parameters unchanged": "check that every optimizer is stepped and that the lr is not 0.",
    "optimizer update differs from reference": "same gradients gave a different update; the per-parameter errors "
    "are in the detail: compare that parameter's group settings with the reference's.",
    # generate
    "generation not reproducible": "draw samples from a torch.Generator seeded with `seed` (pass generator=rng to "
    "torch.multinomial), not the global RNG.",
    "greedy generation differs from argmax": "temperature 0 must pick argmax of the last position's logits "
    "(logits[:, -1, :]) without dividing by the temperature; with the cache, feed only the new token after the "
    "prefill.",
    "sampling is greedy at temperature > 0": "above temperature 0 sample: torch.multinomial(softmax(logits / T), 1, "
    "generator=rng); argmax only when temperature == 0.",
    "temperature ignored": "divide the logits by the temperature before the softmax.",
    "temperature applied inversely": "divide by the temperature (logits / T): higher T must flatten the "
    "distribution, not sharpen it.",
    "sampling softmax over the wrong dim": "softmax over the vocabulary, the last dimension: softmax(logits / T, "
    "dim=-1).",
    "top_k ignored": "keep only the top_k logits (torch.topk) before sampling.",
    "top_k ignores temperature": "divide by the temperature in the top_k branch too: softmax(top_values / T).",
    "top_k ids not mapped back": "torch.multinomial returns a position among the top_k values: map it back to the "
    "token id with indices.gather(-1, position).",
    "top_k keeps the wrong tokens": "keep the k largest logits: torch.topk(logits, k) (largest=True), and sample "
    "among exactly those.",
    "sample distribution differs from softmax(logits / T)": "sample the next id from softmax(logits[:, -1] / T) "
    "with torch.multinomial; the measured frequencies are in the detail.",
    "KV cache misused in generate": "prefill the prompt once, then feed only the newly sampled token each step: "
    "model(ids_of_new_token, kv_cache=cache) (or use no cache at all and recompute the prefix).",
    "generate yields wrong tokens": "yield one int per step, max_tokens of them, each in [0, vocab_size), and not "
    "the prompt.",
    # the gpt component (the model's top level)
    "missing softcap": "the logits must be softcapped: 15 * tanh(logits / 15), on lm_head's output (gpt.forward).",
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
}

# The method a diagnosis points at, where it is not the component's main one (see `fault_method`).
DIAGNOSIS_METHOD: dict[str, str] = {
    "state-dict keys or shapes differ from the contract": "__init__",
    "biases left on": "__init__",
    "MLP hidden width is not 4 * n_embd": "__init__",
    "block does not keep attn/mlp": "__init__",
    "rotary table has the wrong shape": "precompute",
    "rotary frequencies differ": "precompute",
    "rotary does not depend on position": "precompute",
    "rotary table differs from reference": "precompute",
    "buffers on the wrong device or dtype": "precompute",
    "embedding and head tied": "__init__",
    "estimate_flops off": "estimate_flops",
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
    method: str = ""  # the method at fault, when the check knows it better than the diagnosis does
    where: str = ""  # "impls/student/attention.py:31 (CausalSelfAttention.forward)", filled in by the runner
    traceback: str = ""  # for "raised an error": shown by --debug
    cause: bool = False  # the diagnosis ladder's finding, shown before the checks that failed

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
        data.pop("traceback")
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
