"""mlp (student): the feed-forward network.

Contract: `MLP(config)`; `forward(x)` with x (B, T, C) returns (B, T, C). Parameters c_fc (4C, C) and c_proj (C, 4C),
no biases. Computes c_proj(relu(c_fc(x)) ** 2).

Constants: hidden width 4 * n_embd; the activation is relu squared (relu first, then the square; not GELU); c_proj is
the last operation; no dropout.

Why relu²: as cheap as relu, and it trains faster in the speedrun experiments nanochat inherits.
"""

import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        raise NotImplementedError(
            "TODO: Implement mlp.__init__ — c_fc = nn.Linear(n_embd, 4*n_embd, bias=False), "
            "c_proj = nn.Linear(4*n_embd, n_embd, bias=False). Reference: `nanogpt show reference:mlp.__init__`"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "TODO: Implement mlp.forward — c_fc, then relu squared, then c_proj. "
            "Reference: `nanogpt show reference:mlp.forward`"
        )
