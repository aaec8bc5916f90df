"""optimizer: Muon for the matrices inside the blocks, AdamW for the embedding, the head and any vectors."""

import torch
import torch.nn as nn

MUON_MOMENTUM = 0.95
ADAMW_BETAS = (0.8, 0.95)
ADAMW_EPS = 1e-10
LR_REFERENCE_WIDTH = 768  # AdamW learning rates were tuned at n_embd = 768 and scale as width ** -0.5


def setup_optimizers(
    model: nn.Module,
    *,
    unembedding_lr: float = 0.004,
    embedding_lr: float = 0.2,
    matrix_lr: float = 0.02,
    weight_decay: float = 0.0,
) -> list[torch.optim.Optimizer]:
    """nanochat's two optimizers. Parameters nanochat does not have (1-D weights of a norm variant, biases) go to
    AdamW at the head's learning rate: Muon is defined for matrices only."""
    matrix_params = [p for p in model.transformer.h.parameters() if p.ndim == 2]
    embedding_params = list(model.transformer.wte.parameters())
    lm_head_params = list(model.lm_head.parameters())
    taken = {id(p) for p in matrix_params + embedding_params + lm_head_params}
    other_params = [p for p in model.parameters() if id(p) not in taken]

    dmodel_lr_scale = (model.config.n_embd / LR_REFERENCE_WIDTH) ** -0.5
    adam_groups = [
        dict(params=lm_head_params, lr=unembedding_lr * dmodel_lr_scale),
        dict(params=embedding_params, lr=embedding_lr * dmodel_lr_scale),
    ]
    if other_params:
        adam_groups.append(dict(params=other_params, lr=unembedding_lr * dmodel_lr_scale))
    fused = model.get_device().type == "cuda"
    adamw = torch.optim.AdamW(adam_groups, betas=ADAMW_BETAS, eps=ADAMW_EPS, weight_decay=weight_decay, fused=fused)
    # torch's Muon is nanochat's: Nesterov momentum, 5 quintic Newton-Schulz steps in bf16, and ("original") the
    # update scaled by sqrt(max(1, rows/cols)). nanochat applies no weight decay to matrices.
    muon = torch.optim.Muon(matrix_params, lr=matrix_lr, momentum=MUON_MOMENTUM, nesterov=True, weight_decay=0.0,
                            adjust_lr_fn="original")
    optimizers = [adamw, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers
