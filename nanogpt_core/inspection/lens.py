"""The logit lens: what the model would predict if it stopped after each block.

The residual stream after block i goes through the model's own final norm and head (and the softcap), exactly as
the last block's output does, so every layer's stream reads as a next-token distribution (nostalgebraist, "interpreting
GPT: the logit lens", 2020). The row after the last block is the model's real prediction; the rows before it show
when the model starts to "know" the next token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from nanogpt_core.inspection.capture import ActivationCache
from nanogpt_core.model.assembly import LOGIT_SOFTCAP

EMBEDDING_ROW = "embedding"


@dataclass
class LogitLens:
    """One row per residual stream (the embedding, then after each block), one column per position.

    `top_ids[r, t]` is the most likely next token at position t read from stream r, with probability
    `top_probs[r, t]`; `next_probs[r, t]` is the probability of the token that really comes next in the input
    (positions 0..T-2; the last position has no next token)."""

    rows: list[str]
    top_ids: torch.Tensor  # (R, T) long
    top_probs: torch.Tensor  # (R, T) float
    next_probs: torch.Tensor  # (R, T-1) float

    def first_correct_row(self, position: int, next_id: int) -> str | None:
        """The earliest stream whose top guess at `position` is `next_id`, or None."""
        for row, guess in zip(self.rows, self.top_ids[:, position].tolist()):
            if guess == next_id:
                return row
        return None


def lens_logits(model: nn.Module, stream: torch.Tensor) -> torch.Tensor:
    """A residual stream (B, T, C) read through the model's final norm, head and softcap: (B, T, V) float32."""
    with torch.no_grad():
        logits = model.lm_head(model.final_norm(stream)).float()
    return LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)


def stream_rows(n_layer: int) -> list[tuple[str, str]]:
    """(row label, capture point) of every residual stream the lens reads, in forward order."""
    return [(EMBEDDING_ROW, "emb_norm.out")] + [(f"block {i}", f"blocks.{i}.resid_post") for i in range(n_layer)]


def logit_lens(model: nn.Module, cache: ActivationCache, idx: torch.Tensor, sequence: int = 0) -> LogitLens:
    """The lens of one sequence (`sequence` of the batch) of the forward of `idx` (B, T) that filled `cache`."""
    rows, top_ids, top_probs, next_probs = [], [], [], []
    ids = idx[sequence]
    for label, point in stream_rows(cache.n_layer):
        probs = torch.softmax(lens_logits(model, cache[point][sequence : sequence + 1])[0], dim=-1)  # (T, V)
        best = probs.max(dim=-1)
        rows.append(label)
        top_ids.append(best.indices.cpu())
        top_probs.append(best.values.cpu())
        next_probs.append(probs[:-1].gather(1, ids[1:, None].to(probs.device))[:, 0].cpu())
    return LogitLens(rows, torch.stack(top_ids), torch.stack(top_probs), torch.stack(next_probs))
