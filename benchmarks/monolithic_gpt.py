"""A single-file GPT with the reference's math and nanochat's module layout, written without the plugin system.

It is the baseline the assembly-overhead benchmark measures the plugin-assembled model against: same parameters,
same state-dict keys, same operations, but every call direct (no injected parts, no registry).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.n_embd // cfg.n_head
        self.c_q = nn.Linear(cfg.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(cfg.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(cfg.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=self.n_head != self.n_kv_head)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attn(norm(x), cos, sin)
        return x + self.mlp(norm(x))


class MonolithicGPT(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict({"wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
                                          "h": nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])})
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        hd = cfg.n_embd // cfg.n_head
        inv_freq = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        freqs = torch.outer(torch.arange(cfg.sequence_len * 10, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", freqs.cos().bfloat16()[None, :, None, :], persistent=False)
        self.register_buffer("sin", freqs.sin().bfloat16()[None, :, None, :], persistent=False)

    def forward(self, idx, targets):
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.transformer.wte(idx))
        for block in self.transformer.h:
            x = block(x, cos, sin)
        logits = self.lm_head(norm(x))
        logits = (15 * torch.tanh(logits / 15)).float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
