"""norm variant: LayerNorm with a learnable gain and bias (GPT-2's norm)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

# The reference's RMSNorm (F.rms_norm with eps=None) uses float32's machine epsilon; the same here, so tiny vectors
# are still normalised to unit scale instead of being shrunk by a large eps.
EPS = torch.finfo(torch.float32).eps


class LayerNorm(nn.Module):
    """LayerNorm: (x - mean) / std over the last dimension, then * weight + bias (weight starts at 1, bias at 0).

    Why: the norm of the original Transformer and GPT-2 (Ba, Kiros & Hinton, "Layer Normalization", 2016,
    arXiv:1607.06450). It centres as well as scales, and its gain and bias are learned per channel. Those 2*dim
    parameters are what makes it an interesting plugin: they are vectors, so the reference optimizer puts them in
    its AdamW group (Muon is for matrices), and the reference init resets them through `reset_parameters`.
    Because the core injects `norm` everywhere, this one class also becomes the QK-norm inside attention.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self) -> None:
        """Called by the reference init (it resets any module that is not a Linear or an Embedding)."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Weights cast to the input's dtype (bf16 activations with fp32 weights), and the output cast back: under
        # CUDA autocast layer_norm runs in fp32, and attention needs q, k and v in one dtype.
        y = F.layer_norm(x, (self.dim,), self.weight.to(x.dtype), self.bias.to(x.dtype), EPS)
        return y.to(x.dtype)
