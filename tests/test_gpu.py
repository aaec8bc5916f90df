"""The CUDA path: bf16 autocast, fused AdamW, the rotary table on the GPU, --compile, the KV cache, NCCL with torchrun.

Every test here is marked `cuda` and skipped without a GPU (tests/conftest.py); run them with `pytest -m cuda` on a
GPU machine. What runs on CPU (everything else) is the same code with autocast and fusion switched off.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from test_distributed import STEPS, _flags, _losses, _settings, _torchrun
from tiny_training import _one_thread, tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_core import GPTConfig, build_model
from nanogpt_core.data.loader import TokenLoader
from nanogpt_core.device import autocast_context, peak_flops, uses_bf16
from nanogpt_core.io.checkpoint import load_checkpoint
from nanogpt_core.train.loop import train
from nanogpt_core.train.step import accumulate_gradients

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")


@pytest.fixture
def fp32_matmuls():
    """Full fp32 matmuls (no TF32) for the duration of a test that compares against them."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def _random_head_model(config: GPTConfig) -> torch.nn.Module:
    """Initialised as training starts, but with a random head and output projections: logits that are not all 0."""
    torch.manual_seed(0)
    model = build_model(config, device=CUDA)
    model.init_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "lm_head.weight" or name.endswith("c_proj.weight"):
                p.normal_(0, 1.0 / math.sqrt(p.shape[1]))
    return model


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_model_lives_on_the_gpu_with_a_bf16_rotary_table_and_fused_adamw(tiny_config):
    model = _random_head_model(tiny_config)
    assert model.cos.device.type == "cuda" and model.cos.dtype == torch.bfloat16
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in model.parameters())
    adamw, muon = model.setup_optimizers()
    assert adamw.defaults["fused"] is True
    assert type(muon) is torch.optim.Muon  # torch's, Newton-Schulz in bf16 as nanochat's


def test_bf16_autocast_train_step_runs_and_matches_fp32(tiny_config, fp32_matmuls):
    if not uses_bf16(CUDA):
        pytest.skip("this GPU has no native bf16; training runs in fp32 there")
    model = _random_head_model(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (4 * 32 * 2 + 1,))

    def step(autocast):
        model.zero_grad(set_to_none=True)
        loader = TokenLoader(tokens, 4, 32, device=CUDA)
        loss = accumulate_gradients(model, loader, 2, autocast)
        return loss, _grads(model).clone()

    loss32, grad32 = step(None)
    loss16, grad16 = step(autocast_context(CUDA))
    # bf16 keeps 8 mantissa bits (~0.4% per rounding); the loss itself is computed in fp32 from bf16 logits
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    assert torch.isfinite(grad16).all()
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0).item()
    assert cosine > 0.99, cosine
    # and the optimizers step on them (fused AdamW, bf16 Muon) without leaving the GPU or producing NaN
    before = [p.detach().clone() for p in model.parameters()]
    for opt in model.setup_optimizers():
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sum(not torch.equal(b, p) for b, p in zip(before, model.parameters())) == len(before)


def test_greedy_generation_on_cuda_with_the_kv_cache_equals_recomputing_the_prefix(tiny_config, fp32_matmuls):
    model = _random_head_model(tiny_config).eval()
    prompt = [3, 14, 15, 92, 65]
    cached = list(model.generate(prompt, max_tokens=40, temperature=0.0))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(40):
            logits = model(torch.tensor([ids], device=CUDA))
            ids.append(int(logits[0, -1].argmax()))
    assert cached == ids[len(prompt):]
    assert len(set(cached)) > 3


def test_compiled_training_on_cuda_runs_and_matches_eager(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    quiet = open(os.devnull, "w")
    eager = train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "eager", num_iterations=2, device="cuda"),
                  stream=quiet)
    compiled = train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "compiled", num_iterations=2,
                                   device="cuda", compile=True), stream=quiet)
    assert len(compiled.losses) == 2 and all(math.isfinite(x) for x in compiled.losses)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-2)  # fused kernels round bf16 differently
    assert compiled.peak_memory_mib is not None and compiled.peak_memory_mib > 0
    records = [line for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(records) == 2
    if peak_flops(CUDA) is not None:  # a GPU in hardware.PEAK_BF16_FLOPS: the step line carries MFU
        assert all('"mfu": null' not in r for r in records)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_torchrun_nccl_on_two_gpus_trains_what_one_gpu_trains(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    one = train(_settings(tiny_corpus, tiny_tokenizer, tmp_path / "one", device="cuda"), stream=open(os.devnull, "w"))
    settings = _settings(tiny_corpus, tiny_tokenizer, tmp_path / "two", device="cuda")
    output = _torchrun(["train", *_flags(settings)], cwd=tmp_path)
    assert "Weights identical on all 2 ranks" in output
    two = _losses(tmp_path / "two")
    assert len(two) == STEPS
    # bf16 autocast: the two runs round in another order, so the bound is bf16's, not fp32's
    assert two == pytest.approx(one.losses, rel=1e-2)
    assert load_checkpoint(tmp_path / "two").state["train_loader"]["position"] == STEPS * 512
