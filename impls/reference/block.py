"""block: one pre-norm residual layer, x + attn(norm(x)) then x + mlp(norm(x))."""

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, config, layer_idx: int, *, attn: nn.Module, mlp: nn.Module, norm) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = norm(config.n_embd)
        self.attn = attn
        self.mlp_norm = norm(config.n_embd)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, cos_sin, kv_cache) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos_sin, kv_cache)
        x = x + self.mlp(self.mlp_norm(x))
        return x
