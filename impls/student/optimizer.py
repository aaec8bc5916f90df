"""optimizer (student): Muon for the matrices in the blocks, AdamW for the embedding and the head.

Contract: `setup_optimizers(model, *, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.0)`
returns a list of optimizers in which every parameter appears in exactly one group, each group has "initial_lr"
set to its lr, and the Muon groups have a "momentum".

- AdamW(betas=(0.8, 0.95), eps=1e-10) with lm_head at unembedding_lr * s and wte at embedding_lr * s, where
  s = (n_embd / 768) ** -0.5.
- torch.optim.Muon(block matrices, lr=matrix_lr, momentum=0.95, nesterov=True, weight_decay=0,
  adjust_lr_fn="original").

Constants: the defaults above (0.004, 0.2, 0.02; at n_embd = 64, s = 3.46); AdamW's weight_decay = weight_decay
(0 by default); pass every argument explicitly, since torch's defaults differ (AdamW: betas (0.9, 0.999), eps 1e-8,
weight_decay 0.01; Muon: lr 1e-3, weight_decay 0.1). Newton-Schulz in bf16 (torch.optim.Muon) or fp32 (the
reference off CUDA) both pass: they differ by bf16 rounding only. The training loop warms Muon's momentum up from 0.85.

Why Muon: it orthogonalises each matrix's update (Newton–Schulz), so every direction of the matrix moves at a
similar rate; embeddings and the head are lookups and readouts, where AdamW is the better fit.
"""

import torch
import torch.nn as nn


def setup_optimizers(
    model: nn.Module,
    *,
    unembedding_lr: float = 0.004,
    embedding_lr: float = 0.2,
    matrix_lr: float = 0.02,
    weight_decay: float = 0.0,
) -> list[torch.optim.Optimizer]:
    raise NotImplementedError(
        "TODO: Implement optimizer.setup_optimizers — the 2-D parameters of model.transformer.h go to "
        "torch.optim.Muon(lr=matrix_lr, momentum=0.95, nesterov=True, weight_decay=0, adjust_lr_fn='original'); "
        "lm_head, wte and anything left go to torch.optim.AdamW(betas=(0.8, 0.95), eps=1e-10) with lrs scaled by "
        "(n_embd/768)**-0.5; set group['initial_lr'] = group['lr'] on every group; return [adamw, muon]. "
        "Reference: `nanogpt show reference:optimizer.setup_optimizers`"
    )
