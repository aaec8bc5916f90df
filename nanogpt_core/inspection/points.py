"""The capture points: every named place in the forward pass whose activation `capture` can keep, in one table.

A point is named after the component call it watches, in TransformerLens' style (`blocks.{i}.attn.out`), and says
where that call is in the module tree (the assembly's nanochat paths, `transformer.h.{i}.attn`), which side of the
call it reads (its input or its output) and which component of the contracts (`model/contracts.py`) makes the call,
so the `--debug` trace, `nanogpt components` and this table talk about the same things. Shapes use the contracts'
letters: B batch, T tokens, C n_embd, H n_head, V vocab_size.

The docs (`docs/inspect.md`) list the same table; a test keeps the two equal.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from nanogpt_core.errors import ConfigError

Side = Literal["input", "output", "pattern"]
LAYER = "{i}"  # the layer index in a point's name and path


@dataclass(frozen=True)
class CapturePoint:
    name: str  # e.g. "blocks.{i}.attn.out"
    path: str  # the module whose call is watched, e.g. "transformer.h.{i}.attn" ("" is the whole model)
    side: Side  # its first input, its output, or (attention) the weights it computes
    component: str  # the contract's component making the call (the embedding and the logits: the top level, gpt)
    shape: str
    meaning: str

    @property
    def per_layer(self) -> bool:
        return LAYER in self.name

    def name_at(self, layer: int | None) -> str:
        return self.name.replace(LAYER, str(layer)) if self.per_layer else self.name

    def path_at(self, layer: int | None) -> str:
        return self.path.replace(LAYER, str(layer)) if self.per_layer else self.path


POINTS: tuple[CapturePoint, ...] = (
    CapturePoint("embed", "transformer.wte", "output", "gpt", "(B, T, C)",
                 "the token embeddings, before any norm"),
    CapturePoint("emb_norm.out", "emb_norm", "output", "norm", "(B, T, C)",
                 "the normalised embeddings: the residual stream that enters block 0"),
    CapturePoint("blocks.{i}.resid_pre", "transformer.h.{i}", "input", "block", "(B, T, C)",
                 "the residual stream entering block i"),
    CapturePoint("blocks.{i}.attn.in", "transformer.h.{i}.attn", "input", "attention", "(B, T, C)",
                 "what attention reads: the block's normalised residual stream"),
    CapturePoint("blocks.{i}.attn.pattern", "transformer.h.{i}.attn", "pattern", "attention", "(B, H, T, T)",
                 "the attention weights: row t is how query t spreads over the keys; each row sums to 1"),
    CapturePoint("blocks.{i}.attn.out", "transformer.h.{i}.attn", "output", "attention", "(B, T, C)",
                 "what attention adds to the residual stream (after c_proj)"),
    CapturePoint("blocks.{i}.mlp.in", "transformer.h.{i}.mlp", "input", "mlp", "(B, T, C)",
                 "what the MLP reads: the normalised residual stream after attention"),
    CapturePoint("blocks.{i}.mlp.hidden", "transformer.h.{i}.mlp.c_proj", "input", "mlp", "(B, T, 4C)",
                 "the hidden activations after relu², the input of the MLP's c_proj"),
    CapturePoint("blocks.{i}.mlp.out", "transformer.h.{i}.mlp", "output", "mlp", "(B, T, C)",
                 "what the MLP adds to the residual stream"),
    CapturePoint("blocks.{i}.resid_post", "transformer.h.{i}", "output", "block", "(B, T, C)",
                 "the residual stream leaving block i"),
    CapturePoint("final_norm.out", "final_norm", "output", "norm", "(B, T, C)",
                 "the normalised last residual stream, which the head reads"),
    CapturePoint("logits", "", "output", "gpt", "(B, T, V)",
                 "the softcapped logits the model returns (when called without targets)"),
)

def point_names(n_layer: int) -> list[str]:
    """Every capture point's name for a model of `n_layer` blocks, in forward order."""
    return [name for name, _, _ in expand(n_layer)]


def expand(n_layer: int) -> list[tuple[str, CapturePoint, int | None]]:
    """(name, point, layer) for every point of a model of `n_layer` blocks, in the order the forward meets them."""
    before = [(p.name, p, None) for p in POINTS if not p.per_layer and p.name in ("embed", "emb_norm.out")]
    blocks = [(p.name_at(i), p, i) for i in range(n_layer) for p in POINTS if p.per_layer]
    after = [(p.name, p, None) for p in POINTS if not p.per_layer and p.name not in ("embed", "emb_norm.out")]
    return before + blocks + after


def select(n_layer: int, names: Iterable[str] | None) -> list[tuple[str, CapturePoint, int | None]]:
    """The points `names` asks for: exact names or shell patterns (`blocks.*.attn.pattern`); None: all of them.

    A name that matches no point is a one-line ConfigError listing what exists."""
    every = expand(n_layer)
    if names is None:
        return every
    wanted = [names] if isinstance(names, str) else list(names)
    for pattern in wanted:
        if not any(fnmatch.fnmatchcase(name, pattern) for name, _, _ in every):
            examples = ", ".join(p.name_at(0) for p in POINTS[:6])
            raise ConfigError(f"no capture point matches {pattern!r} in a {n_layer}-layer model; the points are "
                              f"{examples}, ... (nanogpt_core.inspection.POINTS lists them all, docs/inspect.md).")
    return [entry for entry in every if any(fnmatch.fnmatchcase(entry[0], p) for p in wanted)]
