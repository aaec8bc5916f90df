"""Model configuration: the six numbers that fix a GPT's shape, exactly nanochat's `GPTConfig`.

Sizes usually come from one knob, `depth`, as nanochat's `base_train` derives them: the width grows with depth
(`n_embd = 64 * depth`) and heads are 128 wide, so a deeper model is also a wider one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from nanogpt_core.errors import ConfigError

HEAD_DIM_TARGET = 128  # nanochat aims for 128-wide attention heads
WIDTH_PER_LAYER = 64  # nanochat's aspect ratio: n_embd = 64 * depth


@dataclass
class GPTConfig:
    """The shape of a GPT. Field names and meanings are nanochat's, so configs move between the two unchanged."""

    sequence_len: int = 1024  # the longest context the model is trained on
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6  # query heads
    n_kv_head: int = 6  # key/value heads: fewer than n_head means grouped-query attention (GQA), 1 means MQA
    n_embd: int = 768

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_depth(cls, depth: int, **overrides: Any) -> GPTConfig:
        """nanochat's sizing rule: `n_embd = 64*depth`, heads of ~128 dims, one KV head per query head."""
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"depth must be a positive integer, got {depth!r}; try --depth 4.")
        n_embd = WIDTH_PER_LAYER * depth
        n_head = max(1, math.ceil(n_embd / HEAD_DIM_TARGET))
        base = dict(n_layer=depth, n_embd=n_embd, n_head=n_head, n_kv_head=n_head)
        base.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls(**base)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known fields are {sorted(known)}.")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> GPTConfig:
        """Raise ConfigError with a one-line fix for any shape the model cannot be built with."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{f.name} must be a positive integer, got {value!r}.")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"head_dim = n_embd // n_head must be a whole number."
            )
        if self.n_kv_head > self.n_head or self.n_head % self.n_kv_head:
            raise ConfigError(
                f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head}): "
                f"each key/value head serves a whole group of query heads."
            )
        if self.head_dim % 2:
            raise ConfigError(
                f"head_dim = n_embd // n_head = {self.head_dim} is odd; rotary embeddings rotate pairs of "
                f"channels, so choose n_embd and n_head with an even head_dim."
            )
        return self
