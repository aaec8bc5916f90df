"""Deliberately wrong implementations: each a realistic bug a learner makes, registered as its own set `bug-...`.

The tests register this plugin, run `run_checks` / `compare` on each set and require the diagnosis in BUGS as the
*first* thing the verdict says. Each bug is the reference with one thing broken, so a failure can only come from that
one thing. The diagnoses are causes (what to change), and docs/diagnoses.md has one row per name.
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

    def values(self, x, cos_sin):
        B, T, _ = x.size()
        return self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)

    def attend(self, q, k, v, kv_cache):
        return self.reference_attend(q, k, v, kv_cache)

    def reference_attend(self, q, k, v, kv_cache, causal=True, **sdpa):
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        gqa = self.n_head != self.n_kv_head
        Tq, Tk = q.size(2), k.size(2)
        if Tq == Tk:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa, **sdpa)
        mask = torch.ones((Tq, Tk), dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa, **sdpa)

    def merge(self, y):
        B, H, T, D = y.shape
        return y.transpose(1, 2).contiguous().view(B, T, H * D)

    def scores(self, q, k, v, kv_cache):
        """For attention written out by hand: (scaled scores (B, H, Tq, Tk), v with every query head's values)."""
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        group = self.n_head // self.n_kv_head
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), v

    def forward(self, x, cos_sin, kv_cache):
        q, k = self.qk(x, cos_sin)
        v = self.values(x, cos_sin)
        y = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), kv_cache)
        return self.c_proj(self.merge(y))


class NoCausalMask(_Attention):
    """Forgot is_causal: every position sees the whole sequence."""

    def attend(self, q, k, v, kv_cache):
        return self.reference_attend(q, k, v, kv_cache, causal=False)


class AntiCausalMask(_Attention):
    """triu instead of tril: each position sees itself and the future, never the past."""

    def attend(self, q, k, v, kv_cache):
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        Tq, Tk = q.size(2), k.size(2)
        mask = torch.ones((Tq, Tk), dtype=torch.bool, device=q.device).triu(diagonal=Tk - Tq)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


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


class NoRotary(_Attention):
    """Forgot to rotate q and k: attention cannot tell positions apart."""

    def qk(self, x, cos_sin):
        B, T, _ = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        return self.q_norm(q), self.k_norm(k)


class RotaryOnValues(_Attention):
    """Rotates v as well as q and k."""

    def values(self, x, cos_sin):
        return self.rotary.apply(super().values(x, cos_sin), *cos_sin)


class NormOnValues(_Attention):
    """Applies the QK-norm to v too."""

    def values(self, x, cos_sin):
        return self.k_norm(super().values(x, cos_sin))


class KeysAndValuesSwapped(_Attention):
    """k from c_v and v from c_k."""

    def qk(self, x, cos_sin):
        B, T, _ = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        return self.q_norm(self.rotary.apply(q, cos, sin)), self.k_norm(self.rotary.apply(k, cos, sin))

    def values(self, x, cos_sin):
        B, T, _ = x.size()
        return self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)


class RotaryCalledSwapped(_Attention):
    """rotary.apply(q, sin, cos): the table's two halves passed the other way round."""

    def qk(self, x, cos_sin):
        cos, sin = cos_sin
        return super().qk(x, (sin, cos))


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


class KVCacheCausalDecode(_Attention):
    """is_causal=True also while decoding with a cache: SDPA aligns the mask top-left, so the new query sees key 0
    only."""

    def attend(self, q, k, v, kv_cache):
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


class HeadsMergedWithoutTranspose(_Attention):
    """(B, H, T, D) reshaped straight to (B, T, C): silent, and every position gets a mix of heads and times."""

    def merge(self, y):
        B, H, T, D = y.shape
        return y.reshape(B, T, H * D)


class AttentionDropout(_Attention):
    """dropout_p=0.1 in scaled_dot_product_attention: the output is random."""

    def attend(self, q, k, v, kv_cache):
        return self.reference_attend(q, k, v, kv_cache, dropout_p=0.1)


class NoSoftmaxScale(_Attention):
    """scale=1: the 1/sqrt(head_dim) is missing."""

    def attend(self, q, k, v, kv_cache):
        return self.reference_attend(q, k, v, kv_cache, scale=1.0)


class SoftmaxScaleByD(_Attention):
    """Divides the scores by head_dim instead of sqrt(head_dim)."""

    def attend(self, q, k, v, kv_cache):
        return self.reference_attend(q, k, v, kv_cache, scale=1.0 / q.size(-1))


class ManualSoftmaxWrongDim(_Attention):
    """Attention written out by hand, with the softmax over the queries (dim=-2) instead of the keys."""

    def attend(self, q, k, v, kv_cache):
        scores, v = self.scores(q, k, v, kv_cache)
        Tq, Tk = scores.shape[-2:]
        mask = torch.ones((Tq, Tk), dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=-2).nan_to_num() @ v


class AttentionWithBias(_Attention):
    """nn.Linear's default bias=True on the four projections."""

    def __init__(self, config, layer_idx, *, norm, rotary):
        super().__init__(config, layer_idx, norm=norm, rotary=rotary)
        for name in ("c_q", "c_k", "c_v", "c_proj"):
            old = getattr(self, name)
            setattr(self, name, nn.Linear(old.in_features, old.out_features, bias=True))


class GQANotEnabled(_Attention):
    """scaled_dot_product_attention without enable_gqa: 4 query heads against 2 key/value heads raises."""

    def attend(self, q, k, v, kv_cache):
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        return F.scaled_dot_product_attention(q, k, v, is_causal=q.size(2) == k.size(2))


class MaskMultiplied(_Attention):
    """Multiplies the scores by a mask of 1 and -inf instead of adding it: negative scores become +inf, NaN."""

    def attend(self, q, k, v, kv_cache):
        scores, v = self.scores(q, k, v, kv_cache)
        Tq, Tk = scores.shape[-2:]
        mask = torch.ones((Tq, Tk), device=q.device).masked_fill(
            ~torch.ones((Tq, Tk), dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq), float("-inf"))
        return (scores * mask).softmax(dim=-1) @ v


class MaskHidesSelf(_Attention):
    """masked_fill over triu(diagonal=0): each query is hidden from its own key (the first from every key: NaN)."""

    def attend(self, q, k, v, kv_cache):
        scores, v = self.scores(q, k, v, kv_cache)
        Tq, Tk = scores.shape[-2:]
        hidden = torch.ones((Tq, Tk), dtype=torch.bool, device=q.device).triu(diagonal=Tk - Tq)
        return scores.masked_fill(hidden, float("-inf")).softmax(dim=-1) @ v


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


class RotaryInterleaved(Rotary):
    """GPT-NeoX / Meta style: rotates adjacent pairs (x0, x1), (x2, x3), ... instead of the halves x1 | x2."""

    @staticmethod
    def apply(x, cos, sin):
        x1, x2 = x[..., 0::2], x[..., 1::2]
        y1, y2 = x1 * cos + x2 * sin, -x1 * sin + x2 * cos
        return torch.stack([y1, y2], dim=-1).flatten(-2).to(x.dtype)


class RotaryBaseIgnored(Rotary):
    """Hard-codes base 1000 in precompute: the frequencies are those of another base."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        return Rotary.precompute(seq_len, head_dim, base=1000, device=device)


class RotaryFrequencyExponent(Rotary):
    """inv_freq = base ** -(arange(D/2) / D): the exponent misses its factor 2 (the frequencies of base ** 0.5)."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim // 2, dtype=torch.float32, device=device) / head_dim)
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
        return freqs.cos().bfloat16()[None, :, None, :], freqs.sin().bfloat16()[None, :, None, :]


class RotaryCosSinSwapped(Rotary):
    """precompute returns (sin, cos) instead of (cos, sin)."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        cos, sin = Rotary.precompute(seq_len, head_dim, base=base, device=device)
        return sin, cos


class RotaryTable2D(Rotary):
    """Returns the (seq_len, D/2) table without the broadcast dimensions (1, seq_len, 1, D/2)."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        cos, sin = Rotary.precompute(seq_len, head_dim, base=base, device=device)
        return cos[0, :, 0], sin[0, :, 0]


class RotaryFloat32Table(Rotary):
    """Keeps the table in float32 (the contract, and nanochat's checkpoints, say bfloat16)."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        return tuple(t.float() for t in Rotary.precompute(seq_len, head_dim, base=base, device=device))


class RotaryBf16Positions(Rotary):
    """Positions made in bfloat16: above 256 they round to multiples of 2, 4, ... and far angles are wrong."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        t = torch.arange(seq_len, dtype=torch.bfloat16, device=device).float()
        freqs = torch.outer(t, inv_freq)
        return freqs.cos().bfloat16()[None, :, None, :], freqs.sin().bfloat16()[None, :, None, :]


class RotaryCatWrongDim(Rotary):
    """torch.cat([y1, y2], dim=2): the halves stacked as extra heads instead of put back side by side."""

    @staticmethod
    def apply(x, cos, sin):
        d = x.shape[3] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], 2).to(x.dtype)


class RotaryNoPositions(Rotary):
    """Angles from zeros instead of the positions: every position gets the same (identity) rotation."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        freqs = torch.outer(torch.zeros(seq_len, device=device), inv_freq)
        return freqs.cos().bfloat16()[None, :, None, :], freqs.sin().bfloat16()[None, :, None, :]


# --- norm -----------------------------------------------------------------------------------------------------------


class _Norm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim


class NormWrongDim(_Norm):
    """RMSNorm over dim 1 (the tokens) instead of the last dim."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-6)


class NormLargeEps(_Norm):
    """eps = 1e-2: small vectors are no longer normalised to RMS 1."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-2)


class NormNoKeepdim(_Norm):
    """mean(x**2, dim=-1) without keepdim: (..., ) does not broadcast against (..., dim)."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1) + 1e-6)


class NormMeanAbs(_Norm):
    """Divides by mean(|x|) instead of the root mean square."""

    def forward(self, x):
        return x / (x.abs().mean(dim=-1, keepdim=True) + 1e-6)


class NormSubtractsMean(_Norm):
    """LayerNorm without weights where RMSNorm is asked for: the mean is subtracted first."""

    def forward(self, x):
        return F.layer_norm(x, (x.size(-1),))


class NormNoSqrt(_Norm):
    """x / (mean(x**2) + eps): the square root is missing."""

    def forward(self, x):
        return x / (x.pow(2).mean(dim=-1, keepdim=True) + 1e-6)


class NormL2(_Norm):
    """F.normalize: divides by the L2 norm, which is sqrt(dim) times the RMS."""

    def forward(self, x):
        return F.normalize(x, dim=-1)


class NormStd(_Norm):
    """Divides by sqrt(x.var() + eps): var subtracts the mean, so this is the standard deviation, not the RMS."""

    def forward(self, x):
        return x / torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + 1e-6)


class NormNotCastBack(_Norm):
    """Computes in float32 for precision and forgets to cast back: bf16 in, float32 out."""

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-6)


class NormIdentity(_Norm):
    """Returns x: the normalisation was never written."""

    def forward(self, x):
        return x


# --- mlp ------------------------------------------------------------------------------------------------------------


class DetachedMLP(MLP):
    """Detaches the hidden layer (a stray .detach() while debugging): c_fc and the input get no gradient."""

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x).detach()).square())


class ReluMLP(MLP):
    """relu instead of relu²."""

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)))


class GeluMLP(MLP):
    """GPT-2's GELU instead of relu²."""

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class SquareWithoutRelu(MLP):
    """x**2 with the relu forgotten: negative pre-activations count as positive."""

    def forward(self, x):
        return self.c_proj(self.c_fc(x).square())


class MLPWithBias(MLP):
    """nn.Linear's default bias=True."""

    def __init__(self, config):
        super().__init__(config)
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=True)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=True)


class MLPHalfWidth(MLP):
    """A hidden layer of 2 * n_embd instead of 4 * n_embd."""

    def __init__(self, config):
        super().__init__(config)
        self.c_fc = nn.Linear(config.n_embd, 2 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(2 * config.n_embd, config.n_embd, bias=False)


class MLPSquareAfterProjection(MLP):
    """relu before c_proj but the square after it: c_proj(relu(h)) ** 2."""

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x))).square()


class MLPDropout(MLP):
    """F.dropout(p=0.1) on the hidden layer, always on."""

    def forward(self, x):
        return self.c_proj(F.dropout(F.relu(self.c_fc(x)).square(), p=0.1, training=True))


class MLPRenamed(nn.Module):
    """Names its layers fc1 / fc2 (a tutorial's names), not the contract's c_fc / c_proj."""

    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.fc2 = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)).square())


class MLPHalved(MLP):
    """0.5 * relu(h)**2: a stray factor from another formula."""

    def forward(self, x):
        return self.c_proj(0.5 * F.relu(self.c_fc(x)).square())


class MLPStraightThrough(MLP):
    """The activation applied with a straight-through trick: the forward is relu², the backward the identity."""

    def forward(self, x):
        h = self.c_fc(x)
        return self.c_proj(h + (F.relu(h).square() - h).detach())


class MLPActivationBeforeFc(MLP):
    """relu² applied to the input, before c_fc: c_proj(c_fc(relu(x) ** 2))."""

    def forward(self, x):
        return self.c_proj(self.c_fc(F.relu(x).square()))


class MLPCentresOverPositions(MLP):
    """Subtracts the mean over the sequence from the hidden layer: every position now depends on the others."""

    def forward(self, x):
        h = self.c_fc(x)
        return self.c_proj(F.relu(h - h.mean(dim=1, keepdim=True)).square())


# --- block ----------------------------------------------------------------------------------------------------------


class NoResidualBlock(Block):
    """The attention output replaces the stream instead of being added to it."""

    def forward(self, x, cos_sin, kv_cache):
        x = self.attn(self.attn_norm(x), cos_sin, kv_cache)
        return x + self.mlp(self.mlp_norm(x))


class PostNormBlock(Block):
    """The original Transformer's post-norm: x = norm(x + attn(x)), then x = norm(x + mlp(x))."""

    def forward(self, x, cos_sin, kv_cache):
        x = self.attn_norm(x + self.attn(x, cos_sin, kv_cache))
        return self.mlp_norm(x + self.mlp(x))


class HalfResidualBlock(Block):
    """Scales each sub-layer's output by 0.5 before adding it."""

    def forward(self, x, cos_sin, kv_cache):
        x = x + 0.5 * self.attn(self.attn_norm(x), cos_sin, kv_cache)
        return x + 0.5 * self.mlp(self.mlp_norm(x))


class ParallelBlock(Block):
    """The MLP reads the block's input, not the stream after the attention update (GPT-J's parallel layout)."""

    def forward(self, x, cos_sin, kv_cache):
        return x + self.attn(self.attn_norm(x), cos_sin, kv_cache) + self.mlp(self.mlp_norm(x))


class UnnormalisedBlock(Block):
    """Forgets the norms: attention and MLP read the raw stream."""

    def forward(self, x, cos_sin, kv_cache):
        x = x + self.attn(x, cos_sin, kv_cache)
        return x + self.mlp(x)


class BlockDropsCache(Block):
    """Calls attention without the KV cache it was given."""

    def forward(self, x, cos_sin, kv_cache):
        x = x + self.attn(self.attn_norm(x), cos_sin, None)
        return x + self.mlp(self.mlp_norm(x))


class BlockRenamesModules(Block):
    """Keeps the sub-layers as self.attention / self.feed_forward: the state-dict keys no longer read h.0.attn."""

    def __init__(self, config, layer_idx, *, attn, mlp, norm):
        nn.Module.__init__(self)
        self.attn_norm, self.mlp_norm = norm(config.n_embd), norm(config.n_embd)
        self.attention, self.feed_forward = attn, mlp

    def forward(self, x, cos_sin, kv_cache):
        x = x + self.attention(self.attn_norm(x), cos_sin, kv_cache)
        return x + self.feed_forward(self.mlp_norm(x))


# --- init -----------------------------------------------------------------------------------------------------------


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


def init_head_not_zero(model):
    """Zeroes every c_proj but leaves lm_head random."""
    reference_init(model)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 1 / math.sqrt(model.config.n_embd))


def init_embedding_std(model):
    """The embedding at GPT-2's std 0.02 instead of 1."""
    reference_init(model)
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, 0.02)


def init_fans_swapped(model):
    """Reads weight.shape as (fan_in, fan_out): the std formula with the fans swapped."""
    reference_init(model)
    with torch.no_grad():
        for name, module in model.transformer.h.named_modules():
            if isinstance(module, nn.Linear) and not name.endswith("c_proj"):
                fan_in, fan_out = module.weight.shape
                module.weight.normal_(0.0, 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in)))


def init_uniform(model):
    """uniform_(-a, a) with the right std (a = std * sqrt(3)), where the contract says normal."""
    reference_init(model)
    with torch.no_grad():
        for name, module in model.transformer.h.named_modules():
            if isinstance(module, nn.Linear) and not name.endswith("c_proj"):
                fan_out, fan_in = module.weight.shape
                std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
                module.weight.uniform_(-std * math.sqrt(3), std * math.sqrt(3))


def init_zeros_too_much(model):
    """Zeroes every Linear inside the blocks, not only c_proj: the blocks can never learn (no gradient flows)."""
    reference_init(model)
    with torch.no_grad():
        for module in model.transformer.h.modules():
            if isinstance(module, nn.Linear):
                module.weight.zero_()


def init_skips_embedding(model):
    """Handles nn.Linear only: the embedding keeps whatever it had."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                module.weight.normal_(0.0, 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in)))
                if name.endswith(("c_proj", "lm_head")):
                    module.weight.zero_()


# --- optimizer ------------------------------------------------------------------------------------------------------


def _setup(model, *, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.0, width_scale=True,
           muon_params=None, adam_params=None, betas=(0.8, 0.95), eps=1e-10, muon=None, initial_lr=True):
    """The reference's setup written with torch.optim.Muon, with the knobs the bugs below turn."""
    s = (model.config.n_embd / 768) ** -0.5 if width_scale else 1.0
    matrices = muon_params if muon_params is not None else [p for p in model.transformer.h.parameters()
                                                               if p.ndim == 2]
    if adam_params is None:
        adam_params = [dict(params=list(model.lm_head.parameters()), lr=unembedding_lr * s),
                       dict(params=list(model.transformer.wte.parameters()), lr=embedding_lr * s)]
    optimizers = []
    if adam_params:
        optimizers.append(torch.optim.AdamW(adam_params, betas=betas, eps=eps, weight_decay=weight_decay))
    if matrices:
        settings = dict(lr=matrix_lr, momentum=0.95, nesterov=True, weight_decay=0.0, adjust_lr_fn="original")
        settings.update(muon or {})
        optimizers.append(torch.optim.Muon(matrices, **settings))
    for opt in optimizers:
        for group in opt.param_groups:
            if initial_lr:
                group["initial_lr"] = group["lr"]
    return optimizers


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


def optimizer_embeddings_in_muon(model, **kwargs):
    """Every 2-D parameter to Muon (wte and lm_head included), nothing to AdamW."""
    return _setup(model, **kwargs, muon_params=[p for p in model.parameters() if p.ndim == 2], adam_params=[])


def optimizer_all_adamw(model, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.0):
    """Everything in AdamW; the block matrices at matrix_lr."""
    s = (model.config.n_embd / 768) ** -0.5
    groups = [dict(params=list(model.lm_head.parameters()), lr=unembedding_lr * s),
              dict(params=list(model.transformer.wte.parameters()), lr=embedding_lr * s),
              dict(params=list(model.transformer.h.parameters()), lr=matrix_lr)]
    return _setup(model, adam_params=groups, muon_params=[])


def optimizer_no_width_scaling(model, **kwargs):
    """AdamW learning rates without the (n_embd / 768) ** -0.5 scaling."""
    return _setup(model, **kwargs, width_scale=False)


def optimizer_lrs_swapped(model, unembedding_lr=0.004, embedding_lr=0.2, **kwargs):
    """embedding_lr given to lm_head and unembedding_lr to wte."""
    return _setup(model, unembedding_lr=embedding_lr, embedding_lr=unembedding_lr, **kwargs)


def optimizer_default_betas(model, **kwargs):
    """AdamW's default betas (0.9, 0.999) instead of nanochat's (0.8, 0.95)."""
    return _setup(model, **kwargs, betas=(0.9, 0.999))


def optimizer_default_eps(model, **kwargs):
    """AdamW's default eps 1e-8 instead of 1e-10."""
    return _setup(model, **kwargs, eps=1e-8)


def optimizer_muon_default_decay(model, **kwargs):
    """torch.optim.Muon's default weight_decay=0.1 left in (nanochat applies none to the matrices)."""
    return _setup(model, **kwargs, muon=dict(weight_decay=0.1))


def optimizer_no_nesterov(model, **kwargs):
    """Muon with plain momentum (nesterov=False)."""
    return _setup(model, **kwargs, muon=dict(nesterov=False))


def optimizer_momentum_09(model, **kwargs):
    """Muon momentum 0.9 instead of 0.95."""
    return _setup(model, **kwargs, muon=dict(momentum=0.9))


def optimizer_muon_default_lr(model, **kwargs):
    """torch.optim.Muon's default lr=1e-3: matrix_lr never passed."""
    return _setup(model, **kwargs, muon=dict(lr=1e-3))


def optimizer_match_rms_adamw(model, **kwargs):
    """adjust_lr_fn='match_rms_adamw' (0.2 * sqrt(max(A, B))) instead of 'original' (sqrt(max(1, A/B)))."""
    return _setup(model, **kwargs, muon=dict(adjust_lr_fn="match_rms_adamw"))


def optimizer_no_initial_lr(model, **kwargs):
    """Forgets group['initial_lr'] (the schedule scales from it)."""
    return _setup(model, **kwargs, initial_lr=False)


class HandWrittenMuon(torch.optim.Optimizer):
    """Muon written by hand (Nesterov momentum, torch's Newton-Schulz) that calls its momentum 'beta'."""

    def __init__(self, params, lr=0.02, beta=0.95):
        super().__init__(params, dict(lr=lr, beta=beta))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - group["beta"])
                update = torch.optim._muon._zeropower_via_newtonschulz(p.grad.lerp(buf, group["beta"]),
                                                                       (3.4445, -4.7750, 2.0315), 5, 1e-7)
                p.add_(update.to(p.dtype), alpha=-group["lr"] * math.sqrt(max(1.0, p.size(0) / p.size(1))))


def optimizer_muon_without_momentum_field(model, matrix_lr=0.02, **kwargs):
    """A hand-written Muon whose groups have no 'momentum' (it calls it 'beta'): the warm-up cannot reach it."""
    (adamw,) = _setup(model, **kwargs, muon_params=[])
    muon = HandWrittenMuon([p for p in model.transformer.h.parameters() if p.ndim == 2], lr=matrix_lr)
    muon.__class__.__name__ = "Muon"
    for group in muon.param_groups:
        group["initial_lr"] = group["lr"]
    return [adamw, muon]


def optimizer_head_lr_zero(model, unembedding_lr=0.004, **kwargs):
    """lr=unembedding_lr * 0 (a scale computed as an int division): lm_head never moves."""
    return _setup(model, unembedding_lr=unembedding_lr * ((model.config.n_embd // 768) ** 0.5), **kwargs)


def optimizer_three_newton_schulz_steps(model, **kwargs):
    """Muon with ns_steps=3 (to save time): the update is only partly orthogonalised."""
    return _setup(model, **kwargs, muon=dict(ns_steps=3))


def optimizer_amsgrad(model, **kwargs):
    """AdamW(amsgrad=True): the second moment is a running maximum, which no other setting reproduces."""
    optimizers = _setup(model, **kwargs)
    for group in optimizers[0].param_groups:
        group["amsgrad"] = True
    return optimizers


# --- generate -------------------------------------------------------------------------------------------------------


def _sampler(pick):
    """generate with the reference's loop and cache, and `pick(logits, temperature, top_k, rng)` choosing the id."""

    @torch.inference_mode()
    def generate(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
        rng = torch.Generator(device=model.get_device()).manual_seed(seed)
        cache = model.new_kv_cache(1, len(tokens) + max_tokens)
        ids = torch.tensor([tokens], device=model.get_device())
        for _ in range(max_tokens):
            logits = model(ids, kv_cache=cache)[:, -1, :].float()
            ids = logits.argmax(-1, keepdim=True) if temperature == 0 else pick(logits, temperature, top_k, rng)
            yield ids.item()

    generate.__doc__ = pick.__doc__
    return generate


def _top_k(logits, top_k, temperature, rng):
    vals, idx = logits.topk(top_k, dim=-1)
    return idx.gather(1, torch.multinomial(F.softmax(vals / temperature, -1), 1, generator=rng))


@_sampler
def generate_ignores_temperature(logits, temperature, top_k, rng):
    """Samples from softmax(logits) whatever the temperature (0 is still greedy)."""
    if top_k is not None:
        return _top_k(logits, top_k, 1.0, rng)
    return torch.multinomial(F.softmax(logits, -1), 1, generator=rng)


def generate_unseeded(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Samples from the global RNG: the seed argument does nothing."""
    return reference_generate(model, tokens, max_tokens, temperature=temperature, top_k=top_k,
                              seed=int(torch.randint(0, 2**31, (1,))))


@_sampler
def generate_greedy_without_top_k(logits, temperature, top_k, rng):
    """Only the top_k branch samples; without top_k it takes the argmax at any temperature."""
    if top_k is not None:
        return _top_k(logits, top_k, temperature, rng)
    return logits.argmax(-1, keepdim=True)


@_sampler
def generate_top_k_ignores_temperature(logits, temperature, top_k, rng):
    """The top_k branch forgets to divide by the temperature."""
    if top_k is not None:
        return _top_k(logits, top_k, 1.0, rng)
    return torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=rng)


@_sampler
def generate_softmax_wrong_dim(logits, temperature, top_k, rng):
    """softmax over dim 0 (the batch of 1): every probability is 1, so sampling is uniform."""
    if top_k is not None:
        vals, idx = logits.topk(top_k, dim=-1)
        return idx.gather(1, torch.multinomial(F.softmax(vals / temperature, 0), 1, generator=rng))
    return torch.multinomial(F.softmax(logits / temperature, dim=0), 1, generator=rng)


@_sampler
def generate_temperature_multiplied(logits, temperature, top_k, rng):
    """logits * temperature instead of logits / temperature."""
    if top_k is not None:
        return _top_k(logits * temperature * temperature, top_k, temperature, rng)
    return torch.multinomial(F.softmax(logits * temperature, -1), 1, generator=rng)


@_sampler
def generate_top_k_ids_not_mapped(logits, temperature, top_k, rng):
    """Samples a position among the top_k values and returns it as the token id (forgets idx.gather)."""
    if top_k is not None:
        vals, _ = logits.topk(top_k, dim=-1)
        return torch.multinomial(F.softmax(vals / temperature, -1), 1, generator=rng)
    return torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=rng)


@_sampler
def generate_top_k_ignored(logits, temperature, top_k, rng):
    """Never looks at top_k."""
    return torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=rng)


@torch.inference_mode()
def generate_refeeds_prefix(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Feeds the whole sequence again at every step, into the same KV cache."""
    rng = torch.Generator(device=model.get_device()).manual_seed(seed)
    cache = model.new_kv_cache(1, (len(tokens) + max_tokens) * (max_tokens + 1))
    ids = list(tokens)
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids], device=model.get_device()), kv_cache=cache)[:, -1, :].float()
        nxt = int(logits.argmax()) if temperature == 0 else int(
            torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=rng))
        ids.append(nxt)
        yield nxt


@torch.inference_mode()
def generate_first_position_logits(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Reads the logits of position 0 instead of the last position."""
    rng = torch.Generator(device=model.get_device()).manual_seed(seed)
    cache = model.new_kv_cache(1, len(tokens) + max_tokens)
    ids = torch.tensor([tokens], device=model.get_device())
    for _ in range(max_tokens):
        logits = model(ids, kv_cache=cache)[:, 0, :].float()
        ids = logits.argmax(-1, keepdim=True) if temperature == 0 else torch.multinomial(
            F.softmax(logits / temperature, -1), 1, generator=rng)
        yield ids.item()


@_sampler
def generate_top_k_off_by_one(logits, temperature, top_k, rng):
    """Keeps top_k + 1 logits."""
    if top_k is not None:
        return _top_k(logits, top_k + 1, temperature, rng)
    return torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=rng)


@_sampler
def generate_always_top_p(logits, temperature, top_k, rng):
    """Always applies nucleus (top-p = 0.8) sampling, which the contract does not ask for."""
    probs = F.softmax(logits / temperature, -1)
    if top_k is not None:
        return _top_k(logits, top_k, temperature, rng)
    sorted_probs, order = probs.sort(descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < 0.8
    sorted_probs = sorted_probs * keep
    return order.gather(1, torch.multinomial(sorted_probs, 1, generator=rng))


@torch.inference_mode()
def generate_divides_by_zero_temperature(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Divides by the temperature before checking for 0: greedy decoding raises."""
    rng = torch.Generator(device=model.get_device()).manual_seed(seed)
    cache = model.new_kv_cache(1, len(tokens) + max_tokens)
    ids = torch.tensor([tokens], device=model.get_device())
    for _ in range(max_tokens):
        scaled = model(ids, kv_cache=cache)[:, -1, :].float() / temperature
        if top_k is not None:
            vals, idx = scaled.topk(top_k, dim=-1)
            ids = idx.gather(1, torch.multinomial(F.softmax(vals, -1), 1, generator=rng))
        else:
            ids = torch.multinomial(F.softmax(scaled, -1), 1, generator=rng)
        yield ids.item()


def generate_yields_prompt(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Yields the prompt before the new tokens."""
    yield from tokens
    yield from reference_generate(model, tokens, max_tokens, temperature=temperature, top_k=top_k, seed=seed)


# set -> (component, implementation, the diagnosis compare must give first)
BUGS: dict[str, tuple[str, object, str]] = {
    # attention
    "bug-no-causal-mask": ("attention", NoCausalMask, "causal leakage"),
    "bug-anti-causal-mask": ("attention", AntiCausalMask, "causal leakage"),
    "bug-rotary-after-qknorm": ("attention", RotaryAfterQKNorm, "rotary applied after QK-norm"),
    "bug-no-qknorm": ("attention", NoQKNorm, "missing QK-norm"),
    "bug-qknorm-hardcoded": ("attention", HardcodedQKNorm, "QK-norm does not use the injected norm"),
    "bug-no-rotary": ("attention", NoRotary, "rotary not applied to q and k"),
    "bug-rotary-on-v": ("attention", RotaryOnValues, "values transformed before attention"),
    "bug-norm-on-v": ("attention", NormOnValues, "values transformed before attention"),
    "bug-keys-values-swapped": ("attention", KeysAndValuesSwapped, "values not taken from c_v"),
    "bug-rotary-called-swapped": ("attention", RotaryCalledSwapped, "rotary called with the wrong table"),
    "bug-gqa-tiled": ("attention", GQATiled, "GQA head mapping"),
    "bug-kv-off-by-one": ("attention", KVCacheOffByOne, "KV-cache decode differs from full forward"),
    "bug-kv-causal-decode": ("attention", KVCacheCausalDecode, "KV-cache decode differs from full forward"),
    "bug-heads-no-transpose": ("attention", HeadsMergedWithoutTranspose, "heads merged without transpose"),
    "bug-attention-dropout": ("attention", AttentionDropout, "non-deterministic output"),
    "bug-no-softmax-scale": ("attention", NoSoftmaxScale, "wrong softmax scale"),
    "bug-softmax-scale-by-d": ("attention", SoftmaxScaleByD, "wrong softmax scale"),
    "bug-softmax-wrong-dim": ("attention", ManualSoftmaxWrongDim, "attention weights do not sum to 1"),
    "bug-attention-bias": ("attention", AttentionWithBias, "biases left on"),
    "bug-gqa-not-enabled": ("attention", GQANotEnabled, "raised an error"),
    "bug-mask-hides-self": ("attention", MaskHidesSelf, "causal mask hides the current position"),
    "bug-mask-multiplied": ("attention", MaskMultiplied, "NaN/Inf"),
    # rotary
    "bug-rotary-reversed": ("rotary", RotaryReversed, "rotary rotation reversed"),
    "bug-rotary-half-sign": ("rotary", RotaryHalfSign, "rotary relative-offset property broken"),
    "bug-rotary-device": ("rotary", RotaryIgnoresDevice, "buffers on the wrong device or dtype"),
    "bug-rotary-interleaved": ("rotary", RotaryInterleaved, "rotary pairs interleaved, not halves"),
    "bug-rotary-base": ("rotary", RotaryBaseIgnored, "rotary frequencies differ"),
    "bug-rotary-exponent": ("rotary", RotaryFrequencyExponent, "rotary frequencies differ"),
    "bug-rotary-cos-sin-swapped": ("rotary", RotaryCosSinSwapped, "cos and sin swapped"),
    "bug-rotary-table-2d": ("rotary", RotaryTable2D, "rotary table has the wrong shape"),
    "bug-rotary-fp32-table": ("rotary", RotaryFloat32Table, "buffers on the wrong device or dtype"),
    "bug-rotary-bf16-positions": ("rotary", RotaryBf16Positions, "rotary table differs from reference"),
    "bug-rotary-cat-wrong-dim": ("rotary", RotaryCatWrongDim, "wrong shape"),
    "bug-rotary-no-positions": ("rotary", RotaryNoPositions, "rotary does not depend on position"),
    # norm
    "bug-norm-wrong-dim": ("norm", NormWrongDim, "norm over the wrong dimension"),
    "bug-norm-large-eps": ("norm", NormLargeEps, "norm eps too large"),
    "bug-norm-no-keepdim": ("norm", NormNoKeepdim, "norm reduces without keepdim"),
    "bug-norm-mean-abs": ("norm", NormMeanAbs, "norm divides by the wrong statistic"),
    "bug-norm-no-sqrt": ("norm", NormNoSqrt, "norm divides by the wrong statistic"),
    "bug-norm-l2": ("norm", NormL2, "norm divides by the wrong statistic"),
    "bug-norm-std": ("norm", NormStd, "norm divides by the wrong statistic"),
    "bug-norm-subtracts-mean": ("norm", NormSubtractsMean, "norm subtracts the mean"),
    "bug-norm-not-cast-back": ("norm", NormNotCastBack, "wrong dtype"),
    "bug-norm-identity": ("norm", NormIdentity, "norm does not normalise"),
    # mlp
    "bug-mlp-detached": ("mlp", DetachedMLP, "zero or missing gradients"),
    "bug-relu": ("mlp", ReluMLP, "relu instead of relu²"),
    "bug-mlp-gelu": ("mlp", GeluMLP, "MLP activation not relu²"),
    "bug-mlp-square-no-relu": ("mlp", SquareWithoutRelu, "MLP activation not relu²"),
    "bug-mlp-bias": ("mlp", MLPWithBias, "biases left on"),
    "bug-mlp-half-width": ("mlp", MLPHalfWidth, "MLP hidden width is not 4 * n_embd"),
    "bug-mlp-square-after-proj": ("mlp", MLPSquareAfterProjection, "something applied after c_proj"),
    "bug-mlp-dropout": ("mlp", MLPDropout, "non-deterministic output"),
    "bug-mlp-renamed": ("mlp", MLPRenamed, "state-dict keys or shapes differ from the contract"),
    "bug-mlp-halved": ("mlp", MLPHalved, "output differs from reference"),
    "bug-mlp-straight-through": ("mlp", MLPStraightThrough, "gradients differ from reference"),
    "bug-mlp-mixes-positions": ("mlp", MLPCentresOverPositions, "MLP mixes positions"),
    "bug-mlp-activation-before-fc": ("mlp", MLPActivationBeforeFc, "activation not applied to c_fc's output"),
    # block
    "bug-no-residual": ("block", NoResidualBlock, "missing residual"),
    "bug-post-norm": ("block", PostNormBlock, "post-norm instead of pre-norm"),
    "bug-half-residual": ("block", HalfResidualBlock, "residual branch scaled"),
    "bug-parallel-block": ("block", ParallelBlock, "MLP reads the stream before the attention update"),
    "bug-block-no-norm": ("block", UnnormalisedBlock, "sub-layer input not normalised"),
    "bug-block-drops-cache": ("block", BlockDropsCache, "block does not pass the KV cache"),
    "bug-block-renames-modules": ("block", BlockRenamesModules, "block does not keep attn/mlp"),
    # init
    "bug-init-std": ("init", init_gpt2_std, "wrong init std"),
    "bug-init-no-zero": ("init", init_no_zero_proj, "output projections not zero-initialised"),
    "bug-init-head-not-zero": ("init", init_head_not_zero, "output projections not zero-initialised"),
    "bug-init-embedding-std": ("init", init_embedding_std, "wrong init std"),
    "bug-init-fans-swapped": ("init", init_fans_swapped, "wrong init std"),
    "bug-init-uniform": ("init", init_uniform, "init draws are not normal"),
    "bug-init-zeros-too-much": ("init", init_zeros_too_much, "weights zeroed that must be random"),
    "bug-init-skips-embedding": ("init", init_skips_embedding, "parameter left uninitialised"),
    # optimizer
    "bug-optimizer-missing": ("optimizer", optimizer_without_head, "parameter missing from optimizer groups"),
    "bug-optimizer-twice": ("optimizer", optimizer_head_twice, "parameter in two optimizer groups"),
    "bug-optimizer-embeddings-in-muon": ("optimizer", optimizer_embeddings_in_muon,
                                         "parameters in the wrong optimizer"),
    "bug-optimizer-all-adamw": ("optimizer", optimizer_all_adamw, "parameters in the wrong optimizer"),
    "bug-optimizer-no-width-scaling": ("optimizer", optimizer_no_width_scaling, "missing width scaling"),
    "bug-optimizer-lrs-swapped": ("optimizer", optimizer_lrs_swapped, "learning rate off by a factor"),
    "bug-optimizer-muon-default-lr": ("optimizer", optimizer_muon_default_lr, "learning rate off by a factor"),
    "bug-optimizer-match-rms": ("optimizer", optimizer_match_rms_adamw, "learning rate off by a factor"),
    "bug-optimizer-default-betas": ("optimizer", optimizer_default_betas, "AdamW betas differ"),
    "bug-optimizer-default-eps": ("optimizer", optimizer_default_eps, "AdamW eps differs"),
    "bug-optimizer-muon-decay": ("optimizer", optimizer_muon_default_decay, "weight decay differs"),
    "bug-optimizer-no-nesterov": ("optimizer", optimizer_no_nesterov, "Muon without Nesterov momentum"),
    "bug-optimizer-momentum": ("optimizer", optimizer_momentum_09, "Muon momentum differs"),
    "bug-optimizer-no-initial-lr": ("optimizer", optimizer_no_initial_lr, "optimizer group without initial_lr"),
    "bug-optimizer-no-momentum-field": ("optimizer", optimizer_muon_without_momentum_field,
                                        "Muon group without momentum"),
    "bug-optimizer-head-lr-zero": ("optimizer", optimizer_head_lr_zero, "optimizer step leaves parameters unchanged"),
    "bug-optimizer-ns-steps": ("optimizer", optimizer_three_newton_schulz_steps, "Muon's Newton-Schulz differs"),
    "bug-optimizer-amsgrad": ("optimizer", optimizer_amsgrad, "optimizer update differs from reference"),
    # generate
    "bug-temperature": ("generate", generate_ignores_temperature, "temperature ignored"),
    "bug-unseeded": ("generate", generate_unseeded, "generation not reproducible"),
    "bug-greedy-without-top-k": ("generate", generate_greedy_without_top_k, "sampling is greedy at temperature > 0"),
    "bug-top-k-ignores-temperature": ("generate", generate_top_k_ignores_temperature, "top_k ignores temperature"),
    "bug-sampling-softmax-wrong-dim": ("generate", generate_softmax_wrong_dim, "sampling softmax over the wrong dim"),
    "bug-temperature-multiplied": ("generate", generate_temperature_multiplied, "temperature applied inversely"),
    "bug-top-k-ids-not-mapped": ("generate", generate_top_k_ids_not_mapped, "top_k ids not mapped back"),
    "bug-top-k-ignored": ("generate", generate_top_k_ignored, "top_k ignored"),
    "bug-generate-refeeds-prefix": ("generate", generate_refeeds_prefix, "KV cache misused in generate"),
    "bug-generate-first-position": ("generate", generate_first_position_logits,
                                    "greedy generation differs from argmax"),
    "bug-temperature-zero-divides": ("generate", generate_divides_by_zero_temperature,
                                     "greedy generation differs from argmax"),
    "bug-generate-yields-prompt": ("generate", generate_yields_prompt, "generate yields wrong tokens"),
    "bug-top-k-off-by-one": ("generate", generate_top_k_off_by_one, "top_k keeps the wrong tokens"),
    "bug-generate-always-top-p": ("generate", generate_always_top_p,
                                  "sample distribution differs from softmax(logits / T)"),
}


class WrongImplsPlugin:
    @hookimpl
    def register_components(self, register):
        for impl_set, (component, implementation, _) in BUGS.items():
            register(impl_set, component, implementation, description=implementation.__doc__)
