"""An independent forward pass of nanochat's GPT, written from the math for the tests.

It shares no code with `impls/reference`: explicit RMS, rotation by index arithmetic, attention as an explicit masked
softmax with query head h reading KV head h // (n_head / n_kv_head). Tests load the same state dict into both and
compare logits.
"""

from __future__ import annotations

import math

import torch

SOFTCAP = 15.0


def rms(x: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(x.dtype).eps  # what F.rms_norm uses when eps is None
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


def rotary_table(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (seq_len, head_dim/2): angle(t, i) = t * base^(-2i/head_dim), rounded to bf16 as nanochat stores it."""
    half = head_dim // 2
    angles = torch.empty(seq_len, half, dtype=torch.float32)
    for i in range(half):
        inv_freq = 1.0 / (base ** (torch.tensor(2 * i, dtype=torch.float32) / head_dim))
        angles[:, i] = torch.arange(seq_len, dtype=torch.float32) * inv_freq
    return angles.cos().bfloat16().float(), angles.sin().bfloat16().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (T, D) at positions 0..T-1; pairs are (i, i + D/2)."""
    half = x.shape[-1] // 2
    out = torch.empty_like(x)
    a, b = x[:, :half], x[:, half:]
    out[:, :half] = a * cos + b * sin
    out[:, half:] = -a * sin + b * cos
    return out


def attention_weights(x: torch.Tensor, sd: dict, prefix: str, cfg, cos, sin) -> torch.Tensor:
    """(H, T, T) for one sequence x (T, C): softmax(q kᵀ / √D) of each query head, future keys masked out."""
    T, C = x.shape
    H, Hkv, D = cfg.n_head, cfg.n_kv_head, cfg.n_embd // cfg.n_head
    q = (x @ sd[prefix + "c_q.weight"].T).view(T, H, D)
    k = (x @ sd[prefix + "c_k.weight"].T).view(T, Hkv, D)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    weights = []
    for h in range(H):
        kv = h // (H // Hkv)
        qh = rms(rotate(q[:, h], cos[:T], sin[:T]))
        kh = rms(rotate(k[:, kv], cos[:T], sin[:T]))
        scores = (qh @ kh.T) / math.sqrt(D)
        weights.append(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1))
    return torch.stack(weights)


def attention(x: torch.Tensor, sd: dict, prefix: str, cfg, cos, sin) -> torch.Tensor:
    """x (T, C) for one sequence."""
    T, C = x.shape
    H, Hkv, D = cfg.n_head, cfg.n_kv_head, cfg.n_embd // cfg.n_head
    v = (x @ sd[prefix + "c_v.weight"].T).view(T, Hkv, D)
    weights = attention_weights(x, sd, prefix, cfg, cos, sin)
    y = torch.cat([weights[h] @ v[:, h // (H // Hkv)] for h in range(H)], dim=-1)
    return y @ sd[prefix + "c_proj.weight"].T


def mlp(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    hidden = torch.clamp(x @ sd[prefix + "c_fc.weight"].T, min=0) ** 2
    return hidden @ sd[prefix + "c_proj.weight"].T


def gpt_activations(row: torch.Tensor, sd: dict, cfg) -> dict[str, torch.Tensor]:
    """Every capture point of `nanogpt_core.inspection` for one sequence `row` (T,), without the batch dimension,
    computed from the math alone: {"embed": (T, C), ..., "blocks.0.attn.pattern": (H, T, T), ..., "logits": (T, V)}."""
    cos, sin = rotary_table(cfg.sequence_len * 10, cfg.n_embd // cfg.n_head)
    acts = {"embed": sd["transformer.wte.weight"][row]}
    x = acts["emb_norm.out"] = rms(acts["embed"])
    for i in range(cfg.n_layer):
        p, b = f"transformer.h.{i}.", f"blocks.{i}."
        acts[b + "resid_pre"] = x
        a = acts[b + "attn.in"] = rms(x)
        acts[b + "attn.pattern"] = attention_weights(a, sd, p + "attn.", cfg, cos, sin)
        acts[b + "attn.out"] = attention(a, sd, p + "attn.", cfg, cos, sin)
        x = x + acts[b + "attn.out"]
        m = acts[b + "mlp.in"] = rms(x)
        acts[b + "mlp.hidden"] = torch.clamp(m @ sd[p + "mlp.c_fc.weight"].T, min=0) ** 2
        acts[b + "mlp.out"] = mlp(m, sd, p + "mlp.")
        x = acts[b + "resid_post"] = x + acts[b + "mlp.out"]
    acts["final_norm.out"] = rms(x)
    z = acts["final_norm.out"] @ sd["lm_head.weight"].T
    acts["logits"] = SOFTCAP * torch.tanh(z / SOFTCAP)
    return acts


def gpt_logits(idx: torch.Tensor, sd: dict, cfg) -> torch.Tensor:
    """idx (B, T) -> softcapped logits (B, T, vocab)."""
    cos, sin = rotary_table(cfg.sequence_len * 10, cfg.n_embd // cfg.n_head)
    out = []
    for row in idx:
        x = rms(sd["transformer.wte.weight"][row])
        for i in range(cfg.n_layer):
            p = f"transformer.h.{i}."
            x = x + attention(rms(x), sd, p + "attn.", cfg, cos, sin)
            x = x + mlp(rms(x), sd, p + "mlp.")
        z = rms(x) @ sd["lm_head.weight"].T
        out.append(SOFTCAP * torch.tanh(z / SOFTCAP))
    return torch.stack(out)
