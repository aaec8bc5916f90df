"""init: nanochat's weight initialisation."""

import math

import torch
import torch.nn as nn

ZERO_INIT_NAMES = ("c_proj",)  # output projections into the residual stream start at zero


def init_weights(model: nn.Module) -> None:
    """Linear: N(0, 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in))); embedding: N(0, 1); lm_head and c_proj: 0.

    Modules of other kinds (a norm with weights, say) are reset with their own `reset_parameters`.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            fan_out, fan_in = module.weight.shape
            std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=1.0)
        elif hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
    # zero the head, so the first loss is exactly ln(vocab_size), and every residual output, so blocks start as identity
    with torch.no_grad():
        model.lm_head.weight.zero_()
        for name, module in model.transformer.h.named_modules():
            if name.rsplit(".", 1)[-1] in ZERO_INIT_NAMES and isinstance(module, nn.Linear):
                module.weight.zero_()
