"""The memory estimate (`nanogpt_core.model.memory`) against independent measurements: the parameters of the model the
assembly really builds, and the bytes autograd really keeps for the backward pass (counted with
`torch.autograd.graph.saved_tensors_hooks`). A refusal must mean the run cannot fit, so the estimate must never be
above what the model holds, and close enough below it to catch a run that is far too big."""

from __future__ import annotations

import pytest
import torch

from nanogpt_core import GPTConfig, build_model
from nanogpt_core.errors import ConfigError
from nanogpt_core.model.memory import (
    FP32,
    MemoryNeed,
    check_memory,
    format_bytes,
    parameter_counts,
    sampling_need,
    training_need,
)
from nanogpt_core.train.settings import TrainSettings, model_config

CPU = torch.device("cpu")
SHAPES = [  # (n_layer, n_embd, n_head, n_kv_head, vocab_size, batch, seq_len): plain, GQA, MQA, a large vocabulary
    (1, 64, 1, 1, 384, 2, 64),
    (2, 128, 1, 1, 4096, 4, 256),
    (4, 256, 4, 2, 1000, 2, 128),
    (3, 128, 2, 1, 8000, 2, 64),
    (8, 512, 4, 4, 512, 1, 256),
]
# Measured on the shapes above: the estimate is 0.4%..1.3% below the saved bytes (what it leaves out are the
# per-head log-sum-exp rows of attention and a few scalars). 5% below is the most the test allows; forgetting the
# logits, or a per-layer tensor, puts it 10%..40% off.
ACTIVATION_SHORTFALL = 0.05


def _config(n_layer, n_embd, n_head, n_kv_head, vocab_size, seq_len) -> GPTConfig:
    return GPTConfig(sequence_len=seq_len, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                     n_kv_head=n_kv_head, n_embd=n_embd)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"L{s[0]}-C{s[1]}-H{s[2]}-KV{s[3]}-V{s[4]}" for s in SHAPES])
def test_parameters_are_those_of_the_model_the_assembly_builds(shape):
    n_layer, n_embd, n_head, n_kv_head, vocab, _, seq_len = shape
    config = _config(n_layer, n_embd, n_head, n_kv_head, vocab, seq_len)
    model = build_model(config, device="meta")  # shapes only, nothing allocated
    matrices, embeddings = parameter_counts(config)
    assert matrices + embeddings == model.num_params()
    assert matrices == sum(p.numel() for p in model.transformer.h.parameters())
    assert training_need(config, 1, CPU).parameters == FP32 * model.num_params()


def _saved_activation_bytes(config: GPTConfig, batch: int) -> int:
    """Bytes of every tensor autograd keeps from one forward with a loss, weights and buffers not counted."""
    model = build_model(config)
    model.init_weights()
    kept = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    idx = torch.randint(0, config.vocab_size, (batch, config.sequence_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, idx)
    return sum(size for ptr, size in storages.items() if ptr not in kept)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"L{s[0]}-C{s[1]}-H{s[2]}-KV{s[3]}-V{s[4]}" for s in SHAPES])
def test_activations_are_a_close_lower_bound_of_what_autograd_keeps(shape):
    n_layer, n_embd, n_head, n_kv_head, vocab, batch, seq_len = shape
    config = _config(n_layer, n_embd, n_head, n_kv_head, vocab, seq_len)
    measured = _saved_activation_bytes(config, batch)
    estimated = training_need(config, batch, CPU).activations
    assert (1 - ACTIVATION_SHORTFALL) * measured <= estimated <= measured, (estimated, measured)


def test_optimizer_state_is_what_the_reference_optimizers_hold_after_a_step(tiny_config):
    """AdamW: exp_avg and exp_avg_sq per embedding and head weight; Muon: one momentum buffer per matrix."""
    model = build_model(tiny_config)
    model.init_weights()
    optimizers = model.setup_optimizers()
    idx = torch.randint(0, tiny_config.vocab_size, (2, tiny_config.sequence_len))
    model(idx, idx).backward()
    for opt in optimizers:
        opt.step()
    held = sum(v.numel() * v.element_size() for opt in optimizers for state in opt.state.values()
               for v in state.values() if torch.is_tensor(v) and v.numel() > 1)
    assert training_need(tiny_config, 1, CPU).optimizer == held


def test_the_cpu_demo_fits_a_small_laptop():
    """`nanogpt train` with no flags must never be refused on a machine with 1 GB free."""
    settings = TrainSettings()
    need = training_need(model_config(settings, 4096), settings.device_batch_size, CPU)
    assert need.total < 2**30 / 4, format_bytes(need.total)


def test_a_model_that_cannot_fit_is_refused_with_the_figures():
    config = GPTConfig.from_depth(1000, sequence_len=256, vocab_size=4096)
    with pytest.raises(ConfigError) as info:
        check_memory(training_need(config, 4, CPU), CPU, "training this model", "use a smaller --depth")
    message = str(info.value)
    assert "training this model needs at least 540.7 TB (parameters 178.8 TB, gradients 178.8 TB" in message
    assert "is free (" in message and message.endswith("; use a smaller --depth.")
    check_memory(MemoryNeed(parameters=1024), CPU, "a tiny model", "never said")  # fits: no error


def test_sampling_needs_the_weights_the_kv_cache_and_the_tables():
    config = _config(2, 128, 2, 1, 4096, 256)
    need = sampling_need(config)
    params = sum(parameter_counts(config))
    kv_cache = 2 * 2 * 1 * 256 * 64 * FP32  # keys and values, per layer, per kv head, per position, per channel
    rotary = 2 * 10 * 256 * 32 * 2  # cos and sin, 10 x the context, head_dim / 2, bfloat16
    assert need.total == FP32 * params + kv_cache + rotary + FP32 * 4096
