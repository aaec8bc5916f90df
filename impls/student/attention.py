"""attention (student): causal self-attention with rotary, QK-norm, grouped-query heads and a KV cache.

Contract: `CausalSelfAttention(config, layer_idx, *, norm, rotary)`; `forward(x, cos_sin, kv_cache)` with x (B, T, C)
returns (B, T, C). Parameters: c_q (H*D, C), c_k (Hkv*D, C), c_v (Hkv*D, C), c_proj (C, C), all without bias, where
H = n_head, Hkv = n_kv_head, D = head_dim = n_embd // n_head. `norm` is the norm class to build QK-norms with
(`norm(head_dim)`), `rotary` provides `rotary.apply(x, cos, sin)`.

Constants: scores scaled by 1/sqrt(head_dim) (scaled_dot_product_attention's default); rotary first, then QK-norm;
query head h reads key/value head h // (n_head // n_kv_head) (enable_gqa=True, or repeat_interleave); no dropout and
no biases; with a KV cache: is_causal=True only when Tq == Tk, no mask for a single query, and for a chunk after a
prefix all of the prefix plus a causal mask within the chunk.

Why QK-norm: normalising q and k bounds the attention logits, which keeps training stable at high learning rates.
Why fewer KV heads (GQA/MQA): several query heads share one key/value head, shrinking the KV cache at inference.
"""

import torch
import torch.nn as nn


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx: int, *, norm, rotary) -> None:
        super().__init__()
        raise NotImplementedError(
            "TODO: Implement attention.__init__ — store layer_idx, n_head, n_kv_head, head_dim = n_embd // n_head; "
            "create c_q, c_k, c_v, c_proj as nn.Linear(..., bias=False); q_norm = norm(head_dim), "
            "k_norm = norm(head_dim); keep rotary. Reference: `nanogpt show reference:attention.__init__`"
        )

    def forward(self, x: torch.Tensor, cos_sin, kv_cache) -> torch.Tensor:
        raise NotImplementedError(
            "TODO: Implement attention.forward — project x to q, k, v (B, T, heads, D); apply rotary to q and k; "
            "QK-norm; transpose to (B, heads, T, D); insert k, v into kv_cache if given; causal "
            "scaled_dot_product_attention with enable_gqa; back to (B, T, C) and c_proj. "
            "Reference: `nanogpt show reference:attention.forward`"
        )
