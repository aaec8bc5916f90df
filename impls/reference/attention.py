"""attention: causal self-attention with rotary, QK-norm, grouped-query heads and a KV cache (nanochat's)."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx: int, *, norm, rotary) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.q_norm = norm(self.head_dim)  # QK-norm: one norm per head vector
        self.k_norm = norm(self.head_dim)
        self.rotary = rotary

    def forward(self, x: torch.Tensor, cos_sin, kv_cache) -> torch.Tensor:
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        q, k = self.rotary.apply(q, cos, sin), self.rotary.apply(k, cos, sin)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)  # all keys/values so far: (B, Hkv, Tk, D)
        y = self.attend(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        return self.c_proj(y)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q kᵀ / √D) v over the keys each query may see. q (B, H, Tq, D); k, v (B, Hkv, Tk, D), where the
        queries are the last Tq of the Tk positions (a KV cache holds the earlier ones)."""
        Tq, Tk = q.size(2), k.size(2)
        gqa = self.n_head != self.n_kv_head
        if Tq == Tk:
            # training, or a prefill into an empty cache: plain causal attention
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        if Tq == 1:
            # decoding one token: it may see every cached position
            return F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)
        # a chunk after a prefix: all of the prefix, and causal within the chunk
        prefix = Tk - Tq
        mask = torch.ones((Tq, Tk), dtype=torch.bool, device=q.device)
        mask[:, prefix:] = torch.tril(mask[:, prefix:])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
