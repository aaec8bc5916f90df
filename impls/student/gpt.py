"""gpt (student): the model's top level — token embedding, the blocks, final norm, head, logit softcap, loss.

Contract: `GPT(config, *, make_block, norm)` builds
    self.transformer = nn.ModuleDict({"wte": nn.Embedding(vocab_size, n_embd), "h": nn.ModuleList(n_layer blocks)})
    self.emb_norm, self.final_norm = norm(n_embd), norm(n_embd);  self.lm_head = nn.Linear(n_embd, vocab_size, no bias)
where `make_block(i)` returns layer i ready-made (the core builds its attention and MLP and hands them to the block).
`forward(idx, targets=None, kv_cache=None, loss_reduction="mean")`: idx (B, T) token ids -> logits (B, T, vocab);
with targets (B, T), the cross-entropy instead. `self.rotary_cos_sin(T0, T)` gives the rotary table every block
receives, for positions T0 .. T0 + T - 1 (T0 = kv_cache.get_pos() with a cache, else 0).
`estimate_flops()`: training FLOPs per token (nanochat's formula).

These names are the checkpoint keys (`transformer.wte.weight`, `transformer.h.0.attn.c_q.weight`, `lm_head.weight`),
so a checkpoint of the reference, or of nanochat, loads into your model.

Why the softcap: 15 * tanh(logits / 15) keeps every logit in (-15, 15), so no single logit can run away early in
training. Why the loss in fp32: under bf16 the log-softmax over a large vocabulary loses most of its digits.
"""

import torch
import torch.nn as nn


class GPT(nn.Module):
    def __init__(self, config, *, make_block, norm) -> None:
        super().__init__()
        raise NotImplementedError(
            "TODO: Implement gpt.__init__ — keep self.config = config; create self.emb_norm = norm(n_embd); "
            "self.transformer = nn.ModuleDict with 'wte' (nn.Embedding(vocab_size, n_embd)) and 'h' "
            "(nn.ModuleList([make_block(i) for i in range(n_layer)])); self.final_norm = norm(n_embd); "
            "self.lm_head = nn.Linear(n_embd, vocab_size, bias=False), its own matrix. "
            "Reference: `nanogpt show reference:gpt.__init__`"
        )

    def forward(self, idx: torch.Tensor, targets=None, kv_cache=None, loss_reduction: str = "mean") -> torch.Tensor:
        raise NotImplementedError(
            "TODO: Implement gpt.forward — T0 = kv_cache.get_pos() if a cache is given, else 0; cos_sin = "
            "self.rotary_cos_sin(T0, T); x = emb_norm(wte(idx)); x = block(x, cos_sin, kv_cache) for every block; "
            "logits = lm_head(final_norm(x)), softcapped: 15 * tanh(logits / 15); without targets return the "
            "logits (B, T, vocab); else the cross-entropy of logits.float() against targets, ignore_index=-1, "
            "reduction=loss_reduction. Reference: `nanogpt show reference:gpt.forward`"
        )

    def estimate_flops(self) -> int:
        raise NotImplementedError(
            "TODO: Implement gpt.estimate_flops — 6 * (all parameters - the embedding's) + 12 * n_layer * n_head * "
            "head_dim * sequence_len: 6 FLOPs per weight a token meets (2 forward, 4 backward) plus attention's "
            "scores and values. Reference: `nanogpt show reference:gpt.estimate_flops`"
        )
