"""Muon's Newton-Schulz dtype, chosen by measurement: the faster of fp32 and bf16 on this machine, cached, the same
on every rank, kept by a checkpoint, and said in the run log."""

from __future__ import annotations

import io
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_training import _one_thread, tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_core import device as device_mod
from nanogpt_core.device import DtypeChoice, newton_schulz_dtype
from nanogpt_core.errors import ConfigError

SHAPES = [(64, 256), (256, 64), (64, 64)]


@pytest.fixture
def measured(monkeypatch):
    """The auto path (the suite pins float32 for cross-process determinism), with a fresh cache."""
    monkeypatch.delenv("NANOGPT_NS_DTYPE", raising=False)
    monkeypatch.setattr(device_mod, "_NS_CHOICES", {})


def test_the_faster_measured_dtype_is_chosen_and_cached(measured, monkeypatch):
    calls = []

    def fake_timing(counts, device):
        calls.append(dict(counts))
        return DtypeChoice(torch.bfloat16, "measured: 1 ms fp32, 0.5 ms bf16", {"float32": 1.0, "bfloat16": 0.5})

    monkeypatch.setattr(device_mod, "_time_newton_schulz", fake_timing)
    choice = newton_schulz_dtype(SHAPES, torch.device("cpu"))
    assert choice.dtype == torch.bfloat16
    assert calls == [{(64, 256): 2, (64, 64): 1}]  # tall and wide matrices iterate alike: one shape, weighted 2
    assert newton_schulz_dtype(list(reversed(SHAPES)), torch.device("cpu")) is choice and len(calls) == 1


def test_the_real_measurement_picks_the_smaller_median(measured):
    choice = newton_schulz_dtype(SHAPES, torch.device("cpu"))
    faster = min(choice.ms, key=choice.ms.get)
    assert str(choice.dtype).removeprefix("torch.") == faster
    assert set(choice.ms) == {"float32", "bfloat16"} and all(ms > 0 for ms in choice.ms.values())
    assert "ms fp32" in choice.reason and "ms bf16" in choice.reason


def test_cuda_is_bf16_without_measuring_and_the_env_pins_it(measured, monkeypatch):
    assert newton_schulz_dtype(SHAPES, torch.device("cuda")).dtype == torch.bfloat16
    monkeypatch.setenv("NANOGPT_NS_DTYPE", "float32")
    assert newton_schulz_dtype(SHAPES, torch.device("cuda")).dtype == torch.float32
    monkeypatch.setenv("NANOGPT_NS_DTYPE", "fp8")
    with pytest.raises(ConfigError, match="use auto, float32 or bfloat16"):
        newton_schulz_dtype(SHAPES, torch.device("cpu"))


def _rank(rank: int, port: int, results) -> None:
    os.environ.pop("NANOGPT_NS_DTYPE", None)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        mine = torch.float32 if rank == 0 else torch.bfloat16  # the two ranks measure differently
        device_mod._time_newton_schulz = lambda counts, device: DtypeChoice(mine, f"measured: rank {rank}")
        results[rank] = str(newton_schulz_dtype(SHAPES, torch.device("cpu")).dtype)
    finally:
        dist.destroy_process_group()


def test_every_rank_takes_rank_0s_choice():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.start_processes(_rank, args=(port, results), nprocs=2, start_method="spawn")
    assert dict(results) == {0: "torch.float32", 1: "torch.float32"}


def test_the_run_log_says_the_choice_and_a_resume_keeps_it(tiny_corpus, tiny_tokenizer, tmp_path,  # noqa: F811
                                                            monkeypatch):
    from nanogpt_core.train.loop import train
    from nanogpt_core.train.settings import resume_settings

    monkeypatch.setenv("NANOGPT_NS_DTYPE", "bfloat16")
    out = io.StringIO()
    train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", num_iterations=2), stream=out)
    assert "Muon: Newton-Schulz in bfloat16 (pinned by $NANOGPT_NS_DTYPE)" in out.getvalue()
    monkeypatch.setenv("NANOGPT_NS_DTYPE", "float32")  # this machine would now choose fp32
    out = io.StringIO()
    train(resume_settings(tmp_path / "run", {"num_iterations": 3}), resume=tmp_path / "run", stream=out)
    assert "Newton-Schulz in bfloat16, kept from the checkpoint" in out.getvalue()
