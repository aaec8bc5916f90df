"""block (student): one pre-norm residual transformer layer.

Contract: `Block(config, layer_idx, *, attn, mlp, norm)` keeps the ready-made `attn` and `mlp` modules as `self.attn`
and `self.mlp` (so checkpoint keys read `transformer.h.{i}.attn...`) and builds its two norms with `norm(n_embd)`.
`forward(x, cos_sin, kv_cache)`: x (B, T, C) -> (B, T, C).

Constants: pre-norm (attention and MLP read a normalised copy, the sum is not normalised); each sub-layer's output is
added with weight 1; the MLP reads the stream after attention's update; attention receives the kv_cache given.

Why pre-norm residuals: each sub-layer reads a normalised copy of the stream and adds its output back, so the
gradient reaches every layer through the additions unchanged.
"""

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, config, layer_idx: int, *, attn: nn.Module, mlp: nn.Module, norm) -> None:
        super().__init__()
        raise NotImplementedError(
            "TODO: Implement block.__init__ — keep self.attn = attn and self.mlp = mlp; create "
            "self.attn_norm = norm(config.n_embd) and self.mlp_norm = norm(config.n_embd). "
            "Reference: `nanogpt show reference:block.__init__`"
        )

    def forward(self, x: torch.Tensor, cos_sin, kv_cache) -> torch.Tensor:
        raise NotImplementedError(
            "TODO: Implement block.forward — x = x + attn(attn_norm(x), cos_sin, kv_cache); "
            "x = x + mlp(mlp_norm(x)); return x. Reference: `nanogpt show reference:block.forward`"
        )
