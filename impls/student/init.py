"""init (student): weight initialisation of the whole model.

Contract: `init_weights(model)` sets every parameter in place: each nn.Linear ~ N(0, std) with
std = 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in)) (weight shape is (fan_out, fan_in)); the embedding
`model.transformer.wte` ~ N(0, 1); then `model.lm_head` and every `c_proj` inside the blocks set to zero.

Constants: normal draws (nn.init.normal_, not uniform_), mean 0; fan_out, fan_in = weight.shape (in that order);
the embedding's std is 1 (not GPT-2's 0.02); only lm_head and c_proj are zero, c_q, c_k, c_v and c_fc random.

Why zeros: with c_proj = 0 every block starts as the identity, and with lm_head = 0 the first loss is exactly
ln(vocab_size) — a number you can check.
"""

import torch.nn as nn


def init_weights(model: nn.Module) -> None:
    raise NotImplementedError(
        "TODO: Implement init.init_weights — for every module in model.modules(): nn.Linear weights ~ N(0, std) "
        "with std = 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in)), nn.Embedding ~ N(0, 1); then zero "
        "model.lm_head.weight and every c_proj weight inside model.transformer.h (under torch.no_grad()). "
        "Reference: `nanogpt show reference:init.init_weights`"
    )
