"""How much memory a model needs, checked against what the device has free before anything is allocated.

Without this, `--depth 1000` (or a checkpoint whose metadata claims 100000 layers) allocates until the kernel kills
the process, or until an allocation inside some component fails and the error looks like that component's fault.
The figures come from the config alone, with no tensor allocated:

- parameters: the contract's shapes (`model/contracts.py`): per layer c_q (C, C), c_k and c_v (Hkv*D, C),
  c_proj (C, C), c_fc (4C, C), c_proj (C, 4C); the embedding and the head (V, C) each; and the rotary table;
- training adds a gradient per parameter, the reference optimizer's state (AdamW keeps two numbers per embedding
  and head weight, Muon one momentum per matrix weight) and the activations autograd keeps for the backward pass:
  per token about n_layer * (15 C + 3 Hkv*D) + 2 V + 3 C numbers, measured with `saved_tensors_hooks` on the
  reference model (tests/test_memory.py compares the two on several shapes);
- sampling adds the KV cache for the whole context and one row of logits.

These are lower bounds on the peak (the backward pass holds some transient gradients on top, and an allocator keeps
some slack), so a refusal means the run cannot fit, not that it might not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nanogpt_core.device import available_memory, uses_bf16
from nanogpt_core.errors import ConfigError
from nanogpt_core.model.assembly import ROTARY_TABLE_FACTOR
from nanogpt_core.model.config import GPTConfig

FP32 = 4
BF16 = 2
ACTIVATIONS_PER_LAYER = (15, 3)  # numbers kept per token and layer: 15 per channel, 3 per key/value channel
ACTIVATIONS_PER_VOCAB = 2  # the softcapped logits and their log-softmax
ACTIVATIONS_PER_CHANNEL = 3  # the embedding, its norm and the final norm


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a model needs, by what they hold (parts absent from sampling are 0)."""

    parameters: int
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    buffers: int = 0  # the rotary table; for sampling also the KV cache and a row of logits

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations + self.buffers

    def describe(self) -> str:
        parts = [("parameters", self.parameters), ("gradients", self.gradients), ("optimizer state", self.optimizer),
                 ("activations", self.activations), ("tables and caches", self.buffers)]
        return ", ".join(f"{name} {format_bytes(size)}" for name, size in parts if size)


def parameter_counts(config: GPTConfig) -> tuple[int, int]:
    """(matrix parameters of the blocks, embedding + head parameters) of a model of this shape."""
    c, kv = config.n_embd, config.n_kv_head * config.head_dim
    per_layer = c * c + 2 * kv * c + c * c + 4 * c * c + 4 * c * c
    return config.n_layer * per_layer, 2 * config.vocab_size * c


def rotary_bytes(config: GPTConfig) -> int:
    """cos and sin, (1, 10 x sequence_len, 1, D/2) each, in bfloat16."""
    return 2 * ROTARY_TABLE_FACTOR * config.sequence_len * (config.head_dim // 2) * BF16


def training_need(config: GPTConfig, device_batch_size: int, device: torch.device) -> MemoryNeed:
    """What training a model of this shape holds at the peak of one micro-batch (fp32 weights, gradients and
    optimizer state; activations in bf16 where the forward runs under bf16 autocast, else fp32)."""
    matrices, embeddings = parameter_counts(config)
    params = matrices + embeddings
    c, kv = config.n_embd, config.n_kv_head * config.head_dim
    per_token = (config.n_layer * (ACTIVATIONS_PER_LAYER[0] * c + ACTIVATIONS_PER_LAYER[1] * kv)
                 + ACTIVATIONS_PER_VOCAB * config.vocab_size + ACTIVATIONS_PER_CHANNEL * c)
    activation_size = BF16 if uses_bf16(device) else FP32
    return MemoryNeed(parameters=FP32 * params, gradients=FP32 * params, optimizer=FP32 * (matrices + 2 * embeddings),
                      activations=activation_size * per_token * device_batch_size * config.sequence_len,
                      buffers=rotary_bytes(config))


def sampling_need(config: GPTConfig) -> MemoryNeed:
    """What sampling holds: the weights, a KV cache for the whole context (batch 1, fp32) and the rotary table."""
    params = sum(parameter_counts(config))
    kv_cache = 2 * config.n_layer * config.n_kv_head * config.sequence_len * config.head_dim * FP32
    return MemoryNeed(parameters=FP32 * params, buffers=kv_cache + rotary_bytes(config) + FP32 * config.vocab_size)


def check_memory(need: MemoryNeed, device: torch.device, what: str, fix: str, copies: int = 1) -> None:
    """ConfigError with the figures and `fix` when `copies` x `need` exceed what `device` has free (nothing where
    the free memory cannot be known, e.g. on MPS). `copies`: processes sharing the memory (CPU ranks of a node)."""
    free = available_memory(device)
    if not fits(need, free, copies):
        raise memory_error(need, free, what, fix, copies)


def fits(need: MemoryNeed, free: tuple[int, str] | None, copies: int = 1) -> bool:
    """Whether `copies` x `need` fit in `free` (what `device.available_memory` says; None: unknown, so yes)."""
    return free is None or copies * need.total <= free[0]


def memory_error(need: MemoryNeed, free: tuple[int, str], what: str, fix: str, copies: int = 1) -> ConfigError:
    each = f" for each of {copies} processes" if copies > 1 else ""
    return ConfigError(f"{what} needs at least {format_bytes(need.total)}{each} ({need.describe()}) but only "
                       f"{format_bytes(free[0])} is free ({free[1]}); {fix}.")


def format_bytes(size: int) -> str:
    for unit, scale in (("PB", 2**50), ("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
