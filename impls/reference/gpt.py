"""gpt: the model's top level, nanochat's GPT — token embedding, the blocks, final norm, head, logit softcap, loss."""

import torch
import torch.nn as nn
import torch.nn.functional as F

SOFTCAP = 15.0  # logits = 15 * tanh(z / 15): bounded, so no single logit can run away early in training


class GPT(nn.Module):
    def __init__(self, config, *, make_block, norm) -> None:
        super().__init__()
        self.config = config
        self.emb_norm = norm(config.n_embd)
        blocks = [make_block(layer_idx) for layer_idx in range(config.n_layer)]  # each ready-made by the core
        self.transformer = nn.ModuleDict(
            {"wte": nn.Embedding(config.vocab_size, config.n_embd), "h": nn.ModuleList(blocks)}
        )
        self.final_norm = norm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # its own matrix: not tied to wte

    def forward(self, idx: torch.Tensor, targets=None, kv_cache=None, loss_reduction: str = "mean") -> torch.Tensor:
        """idx (B, T) -> softcapped logits (B, T, vocab); with targets (B, T), the fp32 cross-entropy instead.

        Targets equal to -1 are skipped; `loss_reduction="none"` gives one loss per token (B*T,), for bits per byte.
        """
        B, T = idx.size()
        T0 = 0 if kv_cache is None else kv_cache.get_pos()  # with a cache, this call's tokens follow the cached ones
        cos_sin = self.rotary_cos_sin(T0, T)  # the core's rotary table, positions T0 .. T0 + T - 1
        x = self.transformer.wte(idx)
        x = self.emb_norm(x)
        for block in self.transformer.h:
            x = block(x, cos_sin, kv_cache)
        x = self.final_norm(x)
        logits = self.lm_head(x)
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        if targets is None:
            return logits
        logits = logits.float()  # the loss in fp32, even when the model runs in bf16
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=loss_reduction)

    def estimate_flops(self) -> int:
        """Training FLOPs per token, nanochat's formula: 6 per weight a token is multiplied by (2 forward, 4 backward;
        the embedding is a lookup, no multiply) plus attention's 12 * n_layer * n_head * head_dim * sequence_len."""
        c = self.config
        nparams = sum(p.numel() for p in self.parameters())
        nparams_embedding = self.transformer.wte.weight.numel()
        return 6 * (nparams - nparams_embedding) + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.sequence_len
