"""norm: RMSNorm without learnable weights, as nanochat uses everywhere."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Parameter-free RMSNorm: x / sqrt(mean(x^2) + eps) over the last dimension."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),))
