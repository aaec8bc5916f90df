"""A learner's files in the three states the learner tools must handle: pristine, half-written, finished.

- pristine: the skeleton as shipped (`nanogpt_core.learn.workspace.pristine_text`);
- half-written: the skeleton with its first TODO method written (the reference's body put in its place), the rest
  still raising their TODOs — what a learner has after the first round of the loop;
- finished: a complete attention (and rotary) written for these tests in a learner's own words (not the reference's
  lines), so a tool that shows, diffs or traces "your code" is shown to read the learner's file and not the
  reference.
"""

from __future__ import annotations

from pathlib import Path

from nanogpt_core.learn.source import component_source, find_part
from nanogpt_core.learn.workspace import pristine_text, todo_methods, write_pristine_dir
from nanogpt_core.model.component_files import load_set_from_dir

FINISHED_ATTENTION = '''\
"""attention, as a learner wrote it: q, k, v per head, rotary and QK-norm, causal attention over the cache."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx: int, *, norm, rotary) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.q_norm, self.k_norm = norm(self.head_dim), norm(self.head_dim)
        self.rotary = rotary

    def forward(self, x: torch.Tensor, cos_sin, kv_cache) -> torch.Tensor:
        B, T, C = x.shape
        cos, sin = cos_sin
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        q = self.q_norm(self.rotary.apply(q, cos, sin)).transpose(1, 2)
        k = self.k_norm(self.rotary.apply(k, cos, sin)).transpose(1, 2)
        v = v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        Tq, Tk = q.size(2), k.size(2)
        grouped = self.n_head != self.n_kv_head
        if Tq == Tk or Tq == 1:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=Tq == Tk, enable_gqa=grouped)
        else:
            visible = torch.ones(Tq, Tk, dtype=torch.bool, device=x.device).tril(Tk - Tq)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=grouped)
        out = out.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(out)
'''

FINISHED_ROTARY = '''\
"""rotary, as a learner wrote it: channel i is paired with channel i + D/2 and turned by t * base^(-2i/D)."""

import torch


class Rotary:
    @staticmethod
    def precompute(seq_len: int, head_dim: int, base: float = 10000, device=None):
        even = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (base ** (even / head_dim))
        positions = torch.arange(seq_len, dtype=torch.float32, device=device)
        angles = positions[:, None] * inv_freq[None, :]  # (seq_len, head_dim / 2)
        return angles.cos().bfloat16()[None, :, None, :], angles.sin().bfloat16()[None, :, None, :]

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.size(-1) // 2
        first, second = x[..., :half], x[..., half:]
        turned = (first * cos + second * sin, second * cos - first * sin)
        return torch.cat(turned, dim=-1).to(x.dtype)
'''


def half_written(component: str) -> str:
    """The skeleton with its first TODO method replaced by the reference's method (the others still TODO)."""
    skeleton = component_source("pristine", component)
    _, method = todo_methods(skeleton.text)[0]
    mine = find_part(skeleton, method)
    theirs = find_part(component_source("reference", component), method)
    lines = skeleton.text.splitlines()
    return "\n".join(lines[:mine.start - 1] + theirs.text.splitlines() + lines[mine.end:]) + "\n"


def workspace_in(directory: Path, state: str, component: str = "attention") -> Path:
    """A fresh workspace where `component` is in `state` ("pristine", "half" or "finished"); returns its file."""
    write_pristine_dir(directory)
    path = directory / f"{component}.py"
    text = {"pristine": lambda: pristine_text(component), "half": lambda: half_written(component),
            "finished": lambda: FINISHED_ATTENTION}[state]()
    path.write_text(text, encoding="utf-8")
    return path


def finished_set(directory: Path) -> object:
    """A plugin registering the finished attention (from `directory`) as set 'finished'."""
    workspace_in(directory, "finished")
    return load_set_from_dir("finished", directory, ["attention"])
