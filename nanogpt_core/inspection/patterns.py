"""Seeing the attention weights an implementation computes, however it computes them.

The weights are an intermediate of attention's forward, not an input or an output, so no module hook can see them.
While one attention call runs, a torch function mode (`PatternRecorder`) watches every torch call it makes:

- `F.scaled_dot_product_attention(q, k, v, ...)` (the reference's way): the fused kernel never materialises the
  weights, so they are computed here from the very q, k, mask, scale and grouped-query flag of the call:
  softmax(q kᵀ · scale + mask), the formula of torch's documentation for that function;
- a softmax over the last dimension whose result is (B, H, Tq, Tk) (an attention written by hand: scores, mask,
  softmax): its result is the pattern itself.

The call itself runs unchanged, so the forward's outputs are the same with or without the recorder. An attention
that computes its weights some third way (exp and a sum by hand) records nothing, and `capture` says so.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

SDPA_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
SOFTMAX_NAMES = ("softmax", "special_softmax")  # torch.softmax, F.softmax, Tensor.softmax, torch.special.softmax


def sdpa_weights(query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor | None = None,
                 is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """The weights F.scaled_dot_product_attention applies to the values, in float32: (..., Hq, Tq, Tk).

    As torch documents the function: a causal mask is aligned to the top left (query i sees keys 0..i); a boolean
    `attn_mask` keeps the True entries, a float one is added to the scores; `enable_gqa` shares each key head among
    Hq / Hkv consecutive query heads."""
    q, k = query.float(), key.float()
    if enable_gqa and k.size(-3) != q.size(-3):
        k = k.repeat_interleave(q.size(-3) // k.size(-3), dim=-3)
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.size(-1)) if scale is None else scale)
    Tq, Tk = scores.shape[-2:]
    if is_causal:
        allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.float()
    return torch.softmax(scores, dim=-1)


class PatternRecorder(TorchFunctionMode):
    """Records the attention weights of one attention call of B sequences of T queries with H heads (see the
    module docstring). `pattern` is the last one seen, (B, H, T, Tk) float32, or None; `how` says how it was seen."""

    def __init__(self, batch: int, queries: int, n_head: int) -> None:
        super().__init__()
        self.batch, self.queries, self.n_head = batch, queries, n_head
        self.pattern: torch.Tensor | None = None
        self.how: str | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "scaled_dot_product_attention":
            self._from_sdpa(args, kwargs)
        elif name in SOFTMAX_NAMES and isinstance(out, torch.Tensor):
            self._from_softmax(out, args, kwargs)
        return out

    def _from_sdpa(self, args: tuple, kwargs: dict[str, Any]) -> None:
        bound = dict(zip(SDPA_PARAMETERS, args)) | kwargs
        with torch.no_grad():
            weights = sdpa_weights(bound["query"], bound["key"], bound.get("attn_mask"),
                                   bool(bound.get("is_causal", False)), bound.get("scale"),
                                   bool(bound.get("enable_gqa", False)))
        self._keep(weights, "F.scaled_dot_product_attention (weights recomputed from its q, k and mask)")

    def _from_softmax(self, out: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> None:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if dim not in (-1, out.ndim - 1):
            return
        self._keep(out.detach().float(), "a softmax over the keys")

    def _keep(self, weights: torch.Tensor, how: str) -> None:
        B, T, H = self.batch, self.queries, self.n_head
        if weights.ndim == 3 and weights.size(0) == B * H:  # heads folded into the batch: (B*H, T, Tk)
            weights = weights.reshape(B, H, *weights.shape[1:])
        if weights.ndim == 4 and weights.size(0) == B and weights.size(1) == H and weights.size(2) == T:
            self.pattern, self.how = weights.detach().clone(), how
