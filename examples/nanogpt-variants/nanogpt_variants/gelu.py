"""mlp variant: the GELU feed-forward of GPT-2 and BERT."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class GeluMLP(nn.Module):
    """GELU feed-forward: c_proj(gelu(c_fc(x))), hidden width 4C, the same weights as the reference MLP.

    Why: GELU (Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016, arXiv:1606.08415) weighs each input by the
    probability that a standard normal is below it, x * Phi(x): a smooth relu that lets small negative values
    through. GPT-2 used it (with the tanh approximation, used here too); nanochat's relu² replaced it for speed of
    learning. Because the parameters are the reference's, a checkpoint trained with relu² loads into this MLP,
    which makes it the simplest "what does the activation alone change" experiment.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
