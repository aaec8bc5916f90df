"""Deliberately wrong top levels: each the classic mistake a learner makes in gpt.py, registered as its own set.

Each bug is the reference gpt with one thing broken, so a failure can only come from that one thing. The tests ask
the contract checks and `compare` for the diagnosis in GPT_BUGS, as the first thing they say.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_impls.reference.gpt import GPT

PLUGIN_NAME = "nanogpt-test-wrong-gpt"


class _GPT(GPT):
    """The reference forward cut into the steps a bug replaces."""

    softcap = 15.0

    def positions(self, idx, kv_cache):
        T0 = 0 if kv_cache is None else kv_cache.get_pos()
        return self.rotary_cos_sin(T0, idx.size(1))

    def embed(self, idx):
        return self.emb_norm(self.transformer.wte(idx))

    def head(self, x):
        logits = self.lm_head(self.final_norm(x))
        return self.softcap * torch.tanh(logits / self.softcap)

    def loss(self, logits, targets, loss_reduction):
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=loss_reduction)

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        cos_sin = self.positions(idx, kv_cache)
        x = self.embed(idx)
        for block in self.transformer.h:
            x = block(x, cos_sin, kv_cache)
        logits = self.head(x)
        return logits if targets is None else self.loss(logits, targets, loss_reduction)


class NoSoftcap(_GPT):
    """Returns the head's output as it is: nothing bounds the logits."""

    def head(self, x):
        return self.lm_head(self.final_norm(x))


class SoftcapThirty(_GPT):
    """Gemma 2's cap, 30, instead of the contract's 15."""

    softcap = 30.0


class NoFinalNorm(_GPT):
    """The head reads the residual stream unnormalised."""

    def head(self, x):
        logits = self.lm_head(x)
        return self.softcap * torch.tanh(logits / self.softcap)


class NoEmbeddingNorm(_GPT):
    """The blocks receive the raw embedding."""

    def embed(self, idx):
        return self.transformer.wte(idx)


class LossInBf16(_GPT):
    """No .float() before the cross-entropy: a bf16 model computes its loss in bf16."""

    def loss(self, logits, targets, loss_reduction):
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=loss_reduction)


class NoIgnoreIndex(_GPT):
    """Forgets ignore_index=-1: a -1 target is out of range."""

    def loss(self, logits, targets, loss_reduction):
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                               reduction=loss_reduction)


class NoReduction(_GPT):
    """Always the mean: bits per byte's loss_reduction='none' gets one number instead of one per token."""

    def loss(self, logits, targets, loss_reduction):
        return super().loss(logits, targets, "mean")


class LossBeforeSoftcap(_GPT):
    """Computes the loss from the raw head output and softcaps only the logits it returns."""

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        if targets is None:
            return super().forward(idx, kv_cache=kv_cache)
        cos_sin = self.positions(idx, kv_cache)
        x = self.embed(idx)
        for block in self.transformer.h:
            x = block(x, cos_sin, kv_cache)
        return self.loss(self.lm_head(self.final_norm(x)), targets, loss_reduction)


class FlatLogits(_GPT):
    """Returns the logits flattened to (B*T, vocab), as the cross-entropy wants them."""

    def head(self, x):
        logits = super().head(x)
        return logits.view(-1, logits.size(-1))

    def loss(self, logits, targets, loss_reduction):
        return F.cross_entropy(logits.float(), targets.reshape(-1), ignore_index=-1, reduction=loss_reduction)


class TiedByMistake(_GPT):
    """Reuses the embedding matrix as the head (GPT-2's tying) where the reference keeps two."""

    def __init__(self, config, *, make_block, norm):
        super().__init__(config, make_block=make_block, norm=norm)
        self.lm_head.weight = self.transformer.wte.weight


class NoCachePosition(_GPT):
    """Always slices the rotary table from position 0: with a KV cache, new tokens get the first tokens' angles."""

    def positions(self, idx, kv_cache):
        return self.rotary_cos_sin(0, idx.size(1))


class FlopsWithEmbedding(_GPT):
    """6 FLOPs for every parameter, the embedding (a lookup) included."""

    def estimate_flops(self):
        return super().estimate_flops() + 6 * self.transformer.wte.weight.numel()


class FlopsWithoutAttention(_GPT):
    """Forgets attention's scores and values (12 * n_layer * n_head * head_dim * sequence_len)."""

    def estimate_flops(self):
        c = self.config
        return super().estimate_flops() - 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len


# set -> (implementation, the diagnosis the checks and compare must give first)
GPT_BUGS: dict[str, tuple[type, str]] = {
    "bug-gpt-no-softcap": (NoSoftcap, "missing softcap"),
    "bug-gpt-softcap-30": (SoftcapThirty, "wrong softcap value"),
    "bug-gpt-no-final-norm": (NoFinalNorm, "final norm missing"),
    "bug-gpt-no-emb-norm": (NoEmbeddingNorm, "embedding norm missing"),
    "bug-gpt-bf16-loss": (LossInBf16, "loss not in fp32"),
    "bug-gpt-no-ignore-index": (NoIgnoreIndex, "targets -1 not ignored"),
    "bug-gpt-no-reduction": (NoReduction, "loss_reduction ignored"),
    "bug-gpt-loss-before-softcap": (LossBeforeSoftcap, "loss differs from the cross-entropy of the logits"),
    "bug-gpt-flat-logits": (FlatLogits, "logits of the wrong shape"),
    "bug-gpt-tied": (TiedByMistake, "embedding and head tied"),
    "bug-gpt-no-cache-position": (NoCachePosition, "KV-cache decode differs from full forward"),
    "bug-gpt-flops-embedding": (FlopsWithEmbedding, "estimate_flops off"),
    "bug-gpt-flops-no-attention": (FlopsWithoutAttention, "estimate_flops off"),
}


class WrongGPTPlugin:
    @hookimpl
    def register_components(self, register):
        for impl_set, (implementation, _) in GPT_BUGS.items():
            register(impl_set, "gpt", implementation, description=implementation.__doc__)
