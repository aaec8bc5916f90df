"""norm (student): RMSNorm without learnable weights.

Contract: `RMSNorm(dim)`; `forward(x)` with x of shape (..., dim) returns the same shape, dtype and device,
normalised over the last dimension: y = x / sqrt(mean(x**2, dim=-1, keepdim=True) + eps).

Constants: no weights (nothing to learn). eps: the reference uses torch.finfo(x.dtype).eps (F.rms_norm's default,
1.19e-7 in float32); any eps in [0, 1e-5] is accepted (Hugging Face's NanoChat port uses 1e-6), a larger one is not:
it stops small vectors from being normalised to RMS 1.

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
            "TODO: Implement norm.forward — RMS-normalise x over its last dimension, no weights, eps at most 1e-5 "
            "(one call: torch.nn.functional.rms_norm(x, (x.size(-1),))). "
            "Reference: `nanogpt show reference:norm.forward`"
        )
