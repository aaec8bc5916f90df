"""gpt variant: tied embeddings — the head reads out with the embedding matrix itself (GPT-2, nanoGPT).

Tying touches two components, so the set `tied` holds two, each a small change to the reference:

- gpt: the reference top level with `lm_head.weight` set to `transformer.wte.weight` (one parameter, two names: both
  keys stay in the state dict, as in nanoGPT), and `estimate_flops` counting the head;
- init: the reference init zeroes lm_head, which is now the embedding too; the shared matrix is drawn again.

The reference optimizer needs no change: it trains a tied matrix once, in the head's AdamW group (at the embedding's
learning rate it would not learn as a head: loss 5.06 against 2.10 after 60 synthetic steps of
`nanogpt compare --design`; the untied reference 2.03).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from nanogpt_impls.reference.gpt import GPT
from nanogpt_impls.reference.init import init_weights

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
