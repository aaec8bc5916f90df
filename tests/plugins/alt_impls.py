"""Correct implementations written differently from the reference, registered as the set `alt`: compare and the
contract checks must pass them (a check that only accepts the reference's exact code would be useless)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from nanogpt_core.model.hookspecs import hookimpl

from .alt_gpt import GPT as HandWrittenGPT

PLUGIN_NAME = "nanogpt-test-alt-impls"
ALT_SET = "alt"


class ManualRMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps), with F.rms_norm's default eps (the dtype's machine epsilon)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


class RotateHalfRotary:
    """The 'rotate_half' formulation: x * [cos, cos] + rotate_half(x) * [sin, sin] with rotate_half = (x2, -x1)."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        angles = torch.arange(seq_len, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
        return angles.cos().bfloat16().view(1, seq_len, 1, -1), angles.sin().bfloat16().view(1, seq_len, 1, -1)

    @staticmethod
    def apply(x, cos, sin):
        d = x.size(-1) // 2
        rotated = torch.cat([x[..., d:], -x[..., :d]], dim=-1)
        return (x * torch.cat([cos, cos], -1) + rotated * torch.cat([sin, sin], -1)).to(x.dtype)


class EinsumAttention(nn.Module):
    """Attention by hand: einsum scores, an explicit causal mask offset by the cache position, repeat_interleave
    for grouped-query heads, softmax, einsum with the values."""

    def __init__(self, config, layer_idx, *, norm, rotary):
        super().__init__()
        self.layer_idx, self.rotary = layer_idx, rotary
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        C = config.n_embd
        self.c_q = nn.Linear(C, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(C, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(C, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(C, C, bias=False)
        self.q_norm, self.k_norm = norm(self.head_dim), norm(self.head_dim)

    def forward(self, x, cos_sin, kv_cache):
        B, T, C = x.shape
        cos, sin = cos_sin
        q = self.q_norm(self.rotary.apply(self.c_q(x).view(B, T, self.n_head, self.head_dim), cos, sin))
        k = self.k_norm(self.rotary.apply(self.c_k(x).view(B, T, self.n_kv_head, self.head_dim), cos, sin))
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        group = self.n_head // self.n_kv_head
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, Tk, D)
        Tk = k.size(2)
        scores = torch.einsum("bqhd,bhkd->bhqk", q, k) / math.sqrt(self.head_dim)
        query_pos = torch.arange(Tk - T, Tk, device=x.device)[:, None]
        key_pos = torch.arange(Tk, device=x.device)[None, :]
        scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
        y = torch.einsum("bhqk,bhkd->bqhd", scores.softmax(dim=-1), v)
        return self.c_proj(y.reshape(B, T, C))


class WhereMLP(nn.Module):
    """relu² written as where(h > 0, h*h, 0)."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        h = self.c_fc(x)
        return self.c_proj(torch.where(h > 0, h * h, torch.zeros_like(h)))


@torch.inference_mode()
def generate_without_cache(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Recomputes the whole prefix every step (no KV cache): slower, same tokens."""
    rng = torch.Generator(device=model.get_device()).manual_seed(seed)
    ids = list(tokens)
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids], device=model.get_device()))[0, -1].float()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            if top_k is not None:
                kth = logits.topk(min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=rng))
        ids.append(nxt)
        yield nxt


class AltImplsPlugin:
    @hookimpl
    def register_components(self, register):
        register(ALT_SET, "norm", ManualRMSNorm)
        register(ALT_SET, "rotary", RotateHalfRotary)
        register(ALT_SET, "attention", EinsumAttention)
        register(ALT_SET, "mlp", WhereMLP)
        register(ALT_SET, "gpt", HandWrittenGPT)
        register(ALT_SET, "generate", generate_without_cache)
