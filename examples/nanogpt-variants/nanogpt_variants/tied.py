"""gpt variant: tied embeddings — the head reads out with the embedding matrix itself (GPT-2, nanoGPT).

Tying touches three components, so the set `tied` holds three, each a small change to the reference:

- gpt: the reference top level with `lm_head.weight` set to `transformer.wte.weight` (one parameter, two names: both
  keys stay in the state dict, so a reference checkpoint still loads), and `estimate_flops` counting the head;
- init: the reference init zeroes lm_head, which is now the embedding too; the shared matrix is drawn again;
- optimizer: the reference optimizer lists the embedding and the head in two groups, which torch refuses for one
  matrix; here it is in one group, the head's.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from nanogpt_impls.reference.gpt import GPT
from nanogpt_impls.reference.init import init_weights
from nanogpt_impls.reference.optimizer import (
    ADAMW_BETAS,
    ADAMW_EPS,
    LR_REFERENCE_WIDTH,
    MUON_MOMENTUM,
    Float32Muon,
)

TIED_STD = 0.02  # GPT-2's std for the shared matrix: as the head, it keeps the first logits near 0


class TiedGPT(GPT):
    """The reference top level with the head tied to the token embedding.

    Why: Press & Wolf ("Using the Output Embedding to Improve Language Models", 2017, arXiv:1608.05859) found that
    the input and output embeddings of a language model learn alike, and that sharing one matrix lowers perplexity
    while saving vocab_size x n_embd parameters — a large share of a small model. GPT-2 and nanoGPT tie them;
    nanochat keeps two, with learning rates 50x apart. `nanogpt compare --use tied --design` measures the choice.
    """

    def __init__(self, config, *, make_block, norm) -> None:
        super().__init__(config, make_block=make_block, norm=norm)
        self.lm_head.weight = self.transformer.wte.weight

    def estimate_flops(self) -> int:
        """The reference formula counts every parameter but the embedding; here the embedding is also the head, which
        each token is multiplied by, so its 6 FLOPs per weight come back."""
        return super().estimate_flops() + 6 * self.lm_head.weight.numel()


def init_tied_weights(model: nn.Module) -> None:
    """The reference init, then the shared matrix drawn N(0, 0.02): zeroed, as the reference's head is, it would
    also zero every embedding, and a model whose inputs are all zero cannot start learning."""
    init_weights(model)
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, TIED_STD)


def setup_tied_optimizers(model: nn.Module, *, unembedding_lr: float = 0.004, embedding_lr: float = 0.2,
                          matrix_lr: float = 0.02, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
    """nanochat's two optimizers for a tied model: Muon for the block matrices, as the reference; AdamW for the
    shared matrix, at the head's learning rate, and for any vectors. At the embedding's rate the shared matrix does
    not learn as a head (measured with `nanogpt compare --design`, 60 synthetic steps: loss 5.06 at 0.2, 2.10 at
    0.004; untied reference 2.03). `embedding_lr` has no matrix of its own left; it is accepted so the training
    flags stay the same."""
    matrices = [p for p in model.transformer.h.parameters() if p.ndim == 2]
    shared = model.lm_head.weight
    others = [p for p in model.parameters() if p is not shared and all(p is not m for m in matrices)]
    scale = (model.config.n_embd / LR_REFERENCE_WIDTH) ** -0.5
    groups = [dict(params=[shared], lr=unembedding_lr * scale)]
    if others:
        groups.append(dict(params=others, lr=unembedding_lr * scale))
    on_cuda = model.get_device().type == "cuda"
    adamw = torch.optim.AdamW(groups, betas=ADAMW_BETAS, eps=ADAMW_EPS, weight_decay=weight_decay, fused=on_cuda)
    Muon = torch.optim.Muon if on_cuda else Float32Muon
    muon = Muon(matrices, lr=matrix_lr, momentum=MUON_MOMENTUM, nesterov=True, weight_decay=0.0,
                adjust_lr_fn="original")
    for opt in (adamw, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return [adamw, muon]
