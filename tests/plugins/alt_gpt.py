"""A finished student gpt.py, written by hand and differently from the reference: the loss by hand (log-softmax,
gather, a mask for the -1 targets), the softcap as a named function, the FLOPs counted from the matrices a token
meets. It imports only torch, like a learner's file, so tests copy it into a workspace as `gpt.py`."""

import torch
import torch.nn as nn

CAP = 15.0


def softcap(z: torch.Tensor) -> torch.Tensor:
    return CAP * torch.tanh(z / CAP)


class GPT(nn.Module):
    def __init__(self, config, *, make_block, norm) -> None:
        super().__init__()
        self.config = config
        C, V = config.n_embd, config.vocab_size
        self.emb_norm = norm(C)
        layers = nn.ModuleList()
        for i in range(config.n_layer):
            layers.append(make_block(i))
        self.transformer = nn.ModuleDict({"wte": nn.Embedding(V, C), "h": layers})
        self.final_norm = norm(C)
        self.lm_head = nn.Linear(C, V, bias=False)

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        start = kv_cache.get_pos() if kv_cache is not None else 0
        cos_sin = self.rotary_cos_sin(start, idx.shape[1])
        h = self.emb_norm(self.transformer["wte"](idx))
        for layer in self.transformer["h"]:
            h = layer(h, cos_sin, kv_cache)
        logits = softcap(self.lm_head(self.final_norm(h)))
        if targets is None:
            return logits
        logp = logits.float().flatten(0, 1).log_softmax(dim=-1)
        t = targets.flatten()
        keep = t != -1
        nll = -logp.gather(1, torch.where(keep, t, 0).unsqueeze(1)).squeeze(1) * keep
        if loss_reduction == "none":
            return nll
        if loss_reduction == "sum":
            return nll.sum()
        return nll.sum() / keep.sum()

    def estimate_flops(self):
        c = self.config
        matrices = sum(p.numel() for p in self.transformer["h"].parameters()) + self.lm_head.weight.numel()
        attention = c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.sequence_len
        return 6 * matrices + 12 * attention
