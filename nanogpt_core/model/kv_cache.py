"""The key/value cache that attention fills during generation.

Attention calls `kv_cache.insert_kv(layer_idx, k, v)` with this call's keys and values, shaped (B, Hkv, T, D), and
gets back every key and value so far, (B, Hkv, pos + T, D). The cache advances its position after the last layer,
so all layers of one forward see the same offset.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, batch_size: int, num_kv_heads: int, seq_len: int, head_dim: int, num_layers: int) -> None:
        self.shape = (num_layers, 2, batch_size, num_kv_heads, seq_len, head_dim)
        self.cache: torch.Tensor | None = None  # allocated on first insert, in k's dtype and device
        self.pos = 0

    def get_pos(self) -> int:
        """Tokens already in the cache: the position of the first token of the next forward."""
        return self.pos

    def reset(self) -> None:
        self.pos = 0

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is None:
            self.cache = torch.empty(self.shape, dtype=k.dtype, device=k.device)
        t0, t1 = self.pos, self.pos + k.size(2)
        if t1 > self.cache.size(4):
            raise ValueError(f"KV cache holds {self.cache.size(4)} positions, asked to store up to {t1}.")
        self.cache[layer_idx, 0, :, :, t0:t1] = k
        self.cache[layer_idx, 1, :, :, t0:t1] = v
        if layer_idx == self.cache.size(0) - 1:
            self.pos = t1
        return self.cache[layer_idx, 0, :, :, :t1], self.cache[layer_idx, 1, :, :, :t1]
