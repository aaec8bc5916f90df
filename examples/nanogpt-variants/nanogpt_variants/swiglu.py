"""mlp variant: SwiGLU, the gated feed-forward of PaLM and LLaMA."""

import torch
import torch.nn as nn
import torch.nn.functional as F

MULTIPLE_OF = 8  # hidden width rounded up to a multiple of 8, as LLaMA does (friendlier matrix shapes)


def swiglu_hidden(n_embd: int) -> int:
    """8/3 * C, rounded up: three C x hidden matrices then hold about as many weights as relu²'s two C x 4C ones."""
    hidden = (8 * n_embd + 2) // 3
    return MULTIPLE_OF * ((hidden + MULTIPLE_OF - 1) // MULTIPLE_OF)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward: c_proj(silu(c_gate(x)) * c_fc(x)), hidden width 8/3 * C.

    Why: a gate lets each hidden unit scale another unit's value instead of only clipping its own, which trained
    better per parameter in Shazeer's comparison of GLU variants ("GLU Variants Improve Transformer", 2020,
    arXiv:2002.05202). The hidden width shrinks from 4C to 8C/3 to pay for the third matrix. The output
    projection keeps the name `c_proj`, so the reference init zeroes it and every block still starts as the identity.
    """

    def __init__(self, config) -> None:
        super().__init__()
        hidden = swiglu_hidden(config.n_embd)
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=False)  # the value path
        self.c_gate = nn.Linear(config.n_embd, hidden, bias=False)  # the gate path
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x))
