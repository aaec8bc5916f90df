"""A few numbers per layer that say whether the layer does something, read from a cache:

- residual RMS in and out: how much the block adds to the stream (a block that never trained adds ~0);
- attention entropy per head, in nats, beside that of uniform attention over the same causal prefix: a head near
  the uniform value looks everywhere (it has not formed), a head near 0 looks at one token;
- the fraction of MLP hidden units that are exactly zero after relu² (a pre-activation <= 0): near 1 means dead
  units, near 0 means the non-linearity is hardly used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nanogpt_core.inspection.capture import ActivationCache


@dataclass
class LayerStats:
    layer: int
    resid_rms_in: float
    resid_rms_out: float
    attn_entropy: list[float] | None  # per head, nats, mean over sequences and query positions
    uniform_entropy: float | None  # the same mean for uniform attention over each query's keys
    mlp_zero_fraction: float | None


def rms(x: torch.Tensor) -> float:
    return x.detach().float().pow(2).mean().sqrt().item()


def attention_entropy(pattern: torch.Tensor) -> torch.Tensor:
    """Entropy of each query's weights, -Σ p ln p over the keys (0 ln 0 = 0): (B, H, Tq, Tk) -> per head (H,)."""
    p = pattern.float()
    return -torch.special.xlogy(p, p).sum(-1).mean(dim=(0, 2))


def uniform_entropy(queries: int, keys: int) -> float:
    """Mean entropy of uniform causal attention: the last of `keys` positions' queries see 1..keys keys each."""
    seen = range(keys - queries + 1, keys + 1)
    return sum(math.log(n) for n in seen) / queries


def layer_stats(cache: ActivationCache) -> list[LayerStats]:
    """The numbers of every block of the forward that filled `cache` (None where a point was not captured)."""
    stats = []
    for i in range(cache.n_layer):
        pattern = cache.tensors.get(f"blocks.{i}.attn.pattern")
        hidden = cache.tensors.get(f"blocks.{i}.mlp.hidden")
        stats.append(LayerStats(
            layer=i,
            resid_rms_in=rms(cache[f"blocks.{i}.resid_pre"]),
            resid_rms_out=rms(cache[f"blocks.{i}.resid_post"]),
            attn_entropy=None if pattern is None else attention_entropy(pattern).tolist(),
            uniform_entropy=None if pattern is None else uniform_entropy(pattern.size(-2), pattern.size(-1)),
            mlp_zero_fraction=None if hidden is None else (hidden == 0).sum().item() / hidden.numel(),
        ))
    return stats
