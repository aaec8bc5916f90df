"""attention variant: sliding-window causal attention (Longformer, Mistral).

The pattern for a variant that differs from the reference in one piece: subclass the reference and override that
piece. Everything else (the projections, rotary, QK-norm with the injected norm, grouped-query heads, the KV cache,
the parameter names that make reference checkpoints load) is the reference's own code, so it cannot drift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nanogpt_impls.reference.attention import CausalSelfAttention

WINDOW_FRACTION = 4  # by default each position sees the last sequence_len // 4 positions (itself included)


def window_mask(q_positions: torch.Tensor, k_positions: torch.Tensor, window: int) -> torch.Tensor:
    """(Tq, Tk) bool, True where query position i may attend key position j: i - window < j <= i."""
    offset = q_positions[:, None] - k_positions[None, :]
    return (offset >= 0) & (offset < window)


class SlidingWindowAttention(CausalSelfAttention):
    """Causal self-attention where position t sees only positions t - window + 1 .. t.

    Why: full attention costs O(T²); a window makes it O(T * window), and stacked layers still pass information
    further back, about window * n_layer positions (Beltagy et al., "Longformer", 2020, arXiv:2004.05150; Jiang et
    al., "Mistral 7B", 2023, arXiv:2310.06825). Only `attend` differs from the reference: during decoding the core's
    KV cache keeps every position and the keys are masked to the window. (A rolling cache of `window` positions
    would also save memory; the core's cache keeps every position, which is what the contract asks for.)

    The window defaults to sequence_len // 4; `SlidingWindowAttention.with_window(64)` makes a fixed-size class to
    register under another set name.
    """

    window: int | None = None  # None: config.sequence_len // WINDOW_FRACTION

    def __init__(self, config, layer_idx: int, *, norm, rotary) -> None:
        super().__init__(config, layer_idx, norm=norm, rotary=rotary)
        self.window_size = self.window or max(1, config.sequence_len // WINDOW_FRACTION)

    @classmethod
    def with_window(cls, window: int) -> type[SlidingWindowAttention]:
        """A subclass with a fixed window of `window` positions."""
        if window < 1:
            raise ValueError(f"the window must hold at least one position, got {window}")
        return type(f"SlidingWindowAttention{window}", (cls,), {"window": window, "__doc__": cls.__doc__})

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        Tq, Tk = q.size(2), k.size(2)
        if Tq == Tk and Tq <= self.window_size:
            return super().attend(q, k, v)  # the window covers the whole sequence: plain causal attention
        k_pos = torch.arange(Tk, device=q.device)  # queries are the last Tq of the Tk positions
        mask = window_mask(k_pos[Tk - Tq:], k_pos, self.window_size)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_head != self.n_kv_head)
