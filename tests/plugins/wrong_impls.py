"""Deliberately wrong implementations: each a realistic bug a learner makes, registered as its own set `bug-...`.

The tests register this plugin, run `run_checks` / `compare` on each set and require the diagnosis in BUGS. Each
bug is the reference with one thing broken, so a failure can only come from that one thing.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_impls.reference.attention import CausalSelfAttention
from nanogpt_impls.reference.block import Block
from nanogpt_impls.reference.generate import generate as reference_generate
from nanogpt_impls.reference.init import init_weights as reference_init
from nanogpt_impls.reference.mlp import MLP
from nanogpt_impls.reference.optimizer import setup_optimizers as reference_setup
from nanogpt_impls.reference.rotary import Rotary

PLUGIN_NAME = "nanogpt-test-wrong-impls"


# --- attention ------------------------------------------------------------------------------------------------------


class _Attention(CausalSelfAttention):
    """The reference attention with hooks for one broken step each."""

    def qk(self, x, cos_sin):
        B, T, _ = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        q, k = self.rotary.apply(q, cos, sin), self.rotary.apply(k, cos, sin)
        return self.q_norm(q), self.k_norm(k)

    def attend(self, q, k, v, kv_cache):
        return self.reference_attend(q, k, v, kv_cache)

    def reference_attend(self, q, k, v, kv_cache, causal=True):
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        gqa = self.n_head != self.n_kv_head
        Tq, Tk = q.size(2), k.size(2)
        if Tq == Tk:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
        mask = torch.ones((Tq, Tk), dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

    def forward(self, x, cos_sin, kv_cache):
        B, T, C = x.size()
        q, k = self.qk(x, cos_sin)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        y = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), kv_cache)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class NoCausalMask(_Attention):
    """Forgot is_causal: every position sees the whole sequence."""

    def attend(self, q, k, v, kv_cache):
        return self.reference_attend(q, k, v, kv_cache, causal=False)


class RotaryAfterQKNorm(_Attention):
    """QK-norm first, rotary second: identical with RMSNorm (a rotation keeps the RMS), not with other norms."""

    def qk(self, x, cos_sin):
        B, T, _ = x.size()
        q = self.q_norm(self.c_q(x).view(B, T, self.n_head, self.head_dim))
        k = self.k_norm(self.c_k(x).view(B, T, self.n_kv_head, self.head_dim))
        cos, sin = cos_sin
        return self.rotary.apply(q, cos, sin), self.rotary.apply(k, cos, sin)


class NoQKNorm(_Attention):
    """Forgot q_norm / k_norm."""

    def qk(self, x, cos_sin):
        B, T, _ = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        return self.rotary.apply(q, cos, sin), self.rotary.apply(k, cos, sin)


class HardcodedQKNorm(_Attention):
    """QK-norm with F.rms_norm written in, ignoring the injected norm: right today, wrong once norm is swapped."""

    def qk(self, x, cos_sin):
        q, k = NoQKNorm.qk(self, x, cos_sin)
        return F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))


class GQATiled(_Attention):
    """Expands the key/value heads with repeat (tiling) instead of repeat_interleave: query head h reads kv head
    h % n_kv_head instead of h // group."""

    def attend(self, q, k, v, kv_cache):
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        group = self.n_head // self.n_kv_head
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
        Tq, Tk = q.size(2), k.size(2)
        mask = torch.ones((Tq, Tk), dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class KVCacheOffByOne(_Attention):
    """With a cache, builds the chunk mask with diagonal Tk - Tq - 1: each new query misses its own key."""

    def attend(self, q, k, v, kv_cache):
        if kv_cache is None:
            return self.reference_attend(q, k, v, None)
        k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        Tq, Tk = q.size(2), k.size(2)
        if Tq == Tk:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        mask = torch.ones((Tq, Tk), dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq - 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


# --- rotary ---------------------------------------------------------------------------------------------------------


class RotaryReversed(Rotary):
    """Rotates by -angle (the sign of sin flipped in both halves): still a rotation, but not the reference's."""

    @staticmethod
    def apply(x, cos, sin):
        d = x.shape[3] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], 3).to(x.dtype)


class RotaryHalfSign(Rotary):
    """The second half's sin with the wrong sign: y2 = x1*sin + x2*cos. Not a rotation any more."""

    @staticmethod
    def apply(x, cos, sin):
        d = x.shape[3] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos + x2 * sin, x1 * sin + x2 * cos], 3).to(x.dtype)


class RotaryIgnoresDevice(Rotary):
    """Builds the table on the CPU whatever device it is asked for."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        return Rotary.precompute(seq_len, head_dim, base=base, device=torch.device("cpu"))


# --- norm, mlp, block -----------------------------------------------------------------------------------------------


class NormWrongDim(nn.Module):
    """RMSNorm over dim 1 (the tokens) instead of the last dim."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-6)


class NormWithoutEps(nn.Module):
    """x / sqrt(mean(x^2)) with no eps: NaN for an all-zero vector."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x / x.pow(2).mean(dim=-1, keepdim=True).sqrt()


class DetachedMLP(MLP):
    """Detaches the hidden layer (a stray .detach() while debugging): c_fc and the input get no gradient."""

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x).detach()).square())


class ReluMLP(MLP):
    """relu instead of relu²."""

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)))


class NoResidualBlock(Block):
    """The attention output replaces the stream instead of being added to it."""

    def forward(self, x, cos_sin, kv_cache):
        x = self.attn(self.attn_norm(x), cos_sin, kv_cache)
        return x + self.mlp(self.mlp_norm(x))


# --- init, optimizer, generate --------------------------------------------------------------------------------------


def init_gpt2_std(model):
    """GPT-2's std 0.02 for every Linear instead of the fan-in formula."""
    reference_init(model)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and not name.endswith(("c_proj", "lm_head")):
                module.weight.normal_(0.0, 0.02)


def init_no_zero_proj(model):
    """Forgets to zero the c_proj weights (lm_head still zero)."""
    reference_init(model)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and name.endswith("c_proj"):
                fan_out, fan_in = module.weight.shape
                module.weight.normal_(0.0, 1 / math.sqrt(fan_in))


def optimizer_without_head(model, **kwargs):
    """Leaves lm_head out of every group."""
    adamw, muon = reference_setup(model, **kwargs)
    adamw.param_groups = [g for g in adamw.param_groups if not any(p is model.lm_head.weight for p in g["params"])]
    return [adamw, muon]


def optimizer_head_twice(model, **kwargs):
    """Collects Muon's matrices from the whole model (p.ndim == 2), so wte and lm_head are also in AdamW's groups."""
    adamw, _ = reference_setup(model, **kwargs)
    muon = torch.optim.Muon([p for p in model.parameters() if p.ndim == 2], lr=0.02, momentum=0.95,
                            adjust_lr_fn="original")
    for group in muon.param_groups:
        group["initial_lr"] = group["lr"]
    return [adamw, muon]


@torch.inference_mode()
def generate_ignores_temperature(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Samples from softmax(logits) whatever the temperature (0 is still greedy)."""
    rng = torch.Generator(device=model.get_device()).manual_seed(seed)
    cache = model.new_kv_cache(1, len(tokens) + max_tokens)
    ids = torch.tensor([tokens], device=model.get_device())
    for _ in range(max_tokens):
        logits = model(ids, kv_cache=cache)[:, -1, :].float()
        if temperature == 0:
            ids = logits.argmax(-1, keepdim=True)
        else:
            if top_k is not None:
                vals, idx = logits.topk(top_k, dim=-1)
                ids = idx.gather(1, torch.multinomial(F.softmax(vals, -1), 1, generator=rng))
            else:
                ids = torch.multinomial(F.softmax(logits, -1), 1, generator=rng)
        yield ids.item()


def generate_unseeded(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Samples from the global RNG: the seed argument does nothing."""
    return reference_generate(model, tokens, max_tokens, temperature=temperature, top_k=top_k,
                              seed=int(torch.randint(0, 2**31, (1,))))


# set -> (component, implementation, the diagnosis compare must give)
BUGS: dict[str, tuple[str, object, str]] = {
    "bug-no-causal-mask": ("attention", NoCausalMask, "causal leakage"),
    "bug-rotary-reversed": ("rotary", RotaryReversed, "rotary rotation reversed"),
    "bug-rotary-half-sign": ("rotary", RotaryHalfSign, "rotary relative-offset property broken"),
    "bug-rotary-after-qknorm": ("attention", RotaryAfterQKNorm, "rotary applied after QK-norm"),
    "bug-no-qknorm": ("attention", NoQKNorm, "missing QK-norm"),
    "bug-qknorm-hardcoded": ("attention", HardcodedQKNorm, "QK-norm does not use the injected norm"),
    "bug-gqa-tiled": ("attention", GQATiled, "GQA head mapping"),
    "bug-kv-off-by-one": ("attention", KVCacheOffByOne, "KV-cache decode differs from full forward"),
    "bug-rotary-device": ("rotary", RotaryIgnoresDevice, "buffers on the wrong device or dtype"),
    "bug-norm-wrong-dim": ("norm", NormWrongDim, "norm over the wrong dimension"),
    "bug-norm-no-eps": ("norm", NormWithoutEps, "NaN/Inf"),
    "bug-mlp-detached": ("mlp", DetachedMLP, "zero or missing gradients"),
    "bug-relu": ("mlp", ReluMLP, "relu instead of relu²"),
    "bug-no-residual": ("block", NoResidualBlock, "missing residual"),
    "bug-init-std": ("init", init_gpt2_std, "wrong init std"),
    "bug-init-no-zero": ("init", init_no_zero_proj, "output projections not zero-initialised"),
    "bug-optimizer-missing": ("optimizer", optimizer_without_head, "parameter missing from optimizer groups"),
    "bug-optimizer-twice": ("optimizer", optimizer_head_twice, "parameter in two optimizer groups"),
    "bug-temperature": ("generate", generate_ignores_temperature, "temperature ignored"),
    "bug-unseeded": ("generate", generate_unseeded, "generation not reproducible"),
}


class WrongImplsPlugin:
    @hookimpl
    def register_components(self, register):
        for impl_set, (component, implementation, _) in BUGS.items():
            register(impl_set, component, implementation, description=implementation.__doc__)
