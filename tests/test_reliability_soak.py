"""Soak: one run stopped and resumed 20 times (Ctrl-C at a step boundary, or a finished shorter run continued with
more steps), and nothing lost: every save loads, the metrics hold each step once, and the final weights are bit for
bit those of the same run trained in one go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from test_learner_support import _one_thread  # noqa: F401

from nanogpt_core.io.checkpoint import TMP_PREFIX, latest_checkpoint, load_checkpoint
from nanogpt_core.train.loop import TrainingInterrupted, train
from nanogpt_core.train.run_log import read_metrics
from nanogpt_core.train.settings import TrainSettings, resume_settings

TEXT = "\n\n".join(" ".join(["the cat sat on the mat and the dog ran far away"] * 20) for _ in range(40))
ROUNDS = 20
STEPS_PER_ROUND = 2
TOTAL = ROUNDS * STEPS_PER_ROUND


def settings(corpus: Path, tokenizer: Path, out: Path, num_iterations: int) -> TrainSettings:
    # warmdown_ratio=0: a flat learning rate, so a run continued with a larger --num-iterations follows the same
    # schedule as one trained in one go (the warm-down depends on the total)
    return TrainSettings(depth=1, n_head=2, n_kv_head=1, max_seq_len=32, device_batch_size=2, total_batch_size=64,
                         num_iterations=num_iterations, warmdown_ratio=0.0, eval_every=-1, eval_tokens=64,
                         sample_every=-1, data=str(corpus), tokenizer=str(tokenizer), out=str(out), device="cpu",
                         seed=11)


def stop_after(steps: int, start: int, losses: list[float]):
    """on_step: record each step's loss, and stop the run after `steps` steps from `start`."""
    def on_step(step, record):
        losses.append(record["loss"])
        if step == start + steps - 1:
            raise KeyboardInterrupt  # what the Ctrl-C handler raises at a step boundary

    return on_step


@pytest.mark.slow
def test_twenty_stops_and_resumes_lose_nothing(tmp_path):
    from nanogpt_core.data.tokenizer import Tokenizer

    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    Tokenizer.train([TEXT], 300).save(tmp_path / "tokenizer")
    quiet = open(os.devnull, "w")
    run = tmp_path / "run"

    losses: list[float] = []
    step = 0
    for round_ in range(ROUNDS):
        if round_ == 0:
            s = settings(corpus, tmp_path / "tokenizer", run, TOTAL)
        elif round_ % 2:  # a finished run, continued with more steps
            s = resume_settings(run, {"num_iterations": step + STEPS_PER_ROUND})
        else:
            s = resume_settings(run, {"num_iterations": TOTAL})
        resume = run if round_ else None
        if s.num_iterations == step + STEPS_PER_ROUND:
            result = train(s, resume=resume, stream=quiet)
            losses += result.losses
            assert result.step == step + STEPS_PER_ROUND
        else:
            with pytest.raises(TrainingInterrupted) as info:
                train(s, resume=resume, stream=quiet, on_step=stop_after(STEPS_PER_ROUND, step, losses))
            assert info.value.step == step + STEPS_PER_ROUND and info.value.checkpoint is not None
        step += STEPS_PER_ROUND
        assert load_checkpoint(run).step == step

    # every save is still there and loads (weights, optimizer state, training state, all checksummed)
    root = run / "checkpoints"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert names == [f"step_{k:06d}" for k in range(STEPS_PER_ROUND, TOTAL + 1, STEPS_PER_ROUND)]
    fingerprints = {load_checkpoint(root / name).tokenizer_fingerprint for name in names}
    assert len(fingerprints) == 1
    assert latest_checkpoint(run).name == f"step_{TOTAL:06d}"
    assert not any(p.name.startswith(TMP_PREFIX) for p in root.iterdir())
    # each step's metrics exactly once, in order
    assert [r["step"] for r in read_metrics(run) if r["type"] == "train"] == list(range(TOTAL))

    # the same run in one go: the same losses and, bit for bit, the same weights and optimizer state
    whole = train(settings(corpus, tmp_path / "tokenizer", tmp_path / "whole", TOTAL), stream=quiet)
    assert losses == whole.losses
    a, b = load_checkpoint(run), load_checkpoint(whole.checkpoint)
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    for sa, sb in zip(a.optimizer_states, b.optimizer_states):
        for pid in sa["state"]:
            for key, value in sa["state"][pid].items():
                other = sb["state"][pid][key]
                assert torch.equal(value, other) if torch.is_tensor(value) else value == other
