"""attention variant: sliding-window causal attention (Longformer, Mistral)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

WINDOW_FRACTION = 4  # by default each position sees the last sequence_len // 4 positions (itself included)


def window_mask(q_positions: torch.Tensor, k_positions: torch.Tensor, window: int) -> torch.Tensor:
    """(Tq, Tk) bool, True where query position i may attend key position j: i - window < j <= i."""
    offset = q_positions[:, None] - k_positions[None, :]
    return (offset >= 0) & (offset < window)


class SlidingWindowAttention(nn.Module):
    """Causal self-attention where position t sees only positions t - window + 1 .. t.

    Why: full attention costs O(T²); a window makes it O(T * window), and stacked layers still pass information
    further back, about window * n_layer positions (Beltagy et al., "Longformer", 2020, arXiv:2004.05150; Jiang et
    al., "Mistral 7B", 2023, arXiv:2310.06825). Everything else is the reference's: rotary, QK-norm (the injected
    norm), grouped-query heads, the same parameters (so reference checkpoints load), and the core's KV cache, whose
    keys are masked to the window during decoding. (A rolling cache of `window` positions would also save memory;
    the core's cache keeps every position, which is what the contract asks for.)

    The window defaults to sequence_len // 4; `SlidingWindowAttention.with_window(64)` makes a fixed-size class to
    register under another set name.
    """

    window: int | None = None  # None: config.sequence_len // WINDOW_FRACTION

    def __init__(self, config, layer_idx: int, *, norm, rotary) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.window_size = self.window or max(1, config.sequence_len // WINDOW_FRACTION)
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.q_norm = norm(self.head_dim)
        self.k_norm = norm(self.head_dim)
        self.rotary = rotary

    @classmethod
    def with_window(cls, window: int) -> type[SlidingWindowAttention]:
        """A subclass with a fixed window of `window` positions."""
        if window < 1:
            raise ValueError(f"the window must hold at least one position, got {window}")
        return type(f"SlidingWindowAttention{window}", (cls,), {"window": window, "__doc__": cls.__doc__})

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
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)  # every key/value so far: (B, Hkv, Tk, D)
        Tq, Tk = q.size(2), k.size(2)
        gqa = self.n_head != self.n_kv_head
        if Tq == Tk and Tq <= self.window_size:
            # the window covers the whole sequence: plain causal attention (and its fast kernels)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            # queries are the last Tq of the Tk positions (a cache holds the earlier ones)
            k_pos = torch.arange(Tk, device=q.device)
            mask = window_mask(k_pos[Tk - Tq :], k_pos, self.window_size)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        return self.c_proj(y)
