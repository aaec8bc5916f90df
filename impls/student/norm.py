"""norm (student): RMSNorm without learnable weights.

Contract: `RMSNorm(dim)`; `forward(x)` with x of shape (..., dim) returns the same shape, dtype and device,
normalised over the last dimension: y = x / sqrt(mean(x**2, last dim) + eps).

Why: RMSNorm drops LayerNorm's mean subtraction and its weights; it is cheaper and trains as well. The model uses it
after the embedding, before attention and the MLP in every block, on q and k (QK-norm), and before the head.
"""

import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim  # nothing to learn: this norm has no weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "TODO: Implement norm.forward — RMS-normalise x over its last dimension, no weights "
            "(one call: torch.nn.functional.rms_norm(x, (x.size(-1),))). Reference: impls/reference/norm.py"
        )
