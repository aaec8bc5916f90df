"""Crashes around checkpoints: a process killed (SIGKILL) in the middle of a save, and a disk that fills up while
saving. Either way the previous checkpoint stays loadable and the run continues from it with nothing lost."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_learner_support import _one_thread  # noqa: F401

import nanogpt_core.io.checkpoint as ckpt_mod
from nanogpt_cli.main import cli
from nanogpt_core.io.checkpoint import MODEL_FILE, OPTIM_FILE, TMP_PREFIX, latest_checkpoint, load_checkpoint
from nanogpt_core.train.run_log import read_metrics

TEXT = "\n\n".join(" ".join(["the cat sat on the mat and the dog ran far away"] * 20) for _ in range(40))
MARKER = "KILL-ME-NOW"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    from nanogpt_core.data.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("crash")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    Tokenizer.train([TEXT], 300).save(root / "tokenizer")
    return root / "text.txt", root / "tokenizer"


def train_args(data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    corpus, tokenizer = data
    return ["train", "--data", str(corpus), "--tokenizer", str(tokenizer), "--depth=1", "--n-head=2", "--n-kv-head=1",
            "--max-seq-len=32", "--device-batch-size=2", "--total-batch-size=64", "--eval-tokens=64",
            "--device=cpu", "--seed=3", "--out", str(out), *extra]


def train(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_sigkill_in_the_middle_of_a_save_leaves_the_previous_checkpoint(data, tmp_path):
    """A real `nanogpt train` process, killed with SIGKILL after the second save has written model.safetensors into
    its temporary folder (the test makes that save pause there), then resumed: nothing of the first save is lost."""
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, time
        import nanogpt_core.io.checkpoint as ckpt_mod
        from nanogpt_cli.main import cli

        real, saves = ckpt_mod._save_safetensors, []

        def pause_in_the_second_save(tensors, path, metadata):
            real(tensors, path, metadata)
            if path.name == {MODEL_FILE!r}:
                saves.append(path)
                if len(saves) == 2:
                    print({MARKER!r}, flush=True)
                    time.sleep(600)

        ckpt_mod._save_safetensors = pause_in_the_second_save
        cli(sys.argv[1:])
    """)
    args = train_args(data, run, "--num-iterations=4", "--save-every=2")
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    for line in proc.stdout:
        if line.strip() == MARKER or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    root = run / "checkpoints"
    partial = [p for p in root.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert len(partial) == 1 and (partial[0] / MODEL_FILE).is_file() and not (partial[0] / OPTIM_FILE).exists()
    assert latest_checkpoint(run).name == "step_000002"  # the pointer never moved
    ckpt = load_checkpoint(run)  # weights, optimizer state and training state, all checked against their checksums
    assert ckpt.step == 2 and ckpt.optimizer_states is not None

    resumed = train("train", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(run).step == 4
    assert not any(p.name.startswith(TMP_PREFIX) for p in root.iterdir())  # the half-written save is gone
    assert [r["step"] for r in read_metrics(run) if r["type"] == "train"] == [0, 1, 2, 3]
    # and the resumed run ends exactly where an uninterrupted one does
    whole = train(*train_args(data, tmp_path / "whole", "--num-iterations=4", "--save-every=2"))
    assert whole.exit_code == 0, whole.output
    a, b = load_checkpoint(run).model_state, load_checkpoint(tmp_path / "whole").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_fails_cleanly_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    real, saves = ckpt_mod._save_safetensors, []

    def disk_fills_up_in_the_second_save(tensors, path, metadata):
        saves.append(path.name)
        if saves.count(MODEL_FILE) == 2 and path.name == OPTIM_FILE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(tensors, path, metadata)

    monkeypatch.setattr(ckpt_mod, "_save_safetensors", disk_fills_up_in_the_second_save)
    run = tmp_path / "run"
    result = train(*train_args(data, run, "--num-iterations=4", "--save-every=2"))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert lines[0].startswith("Error: no space left on device while saving"), lines[0]
    assert f"the last good checkpoint, {run / 'checkpoints' / 'step_000002'}, is intact" in lines[0]
    assert "free some space" in lines[0] and f"nanogpt train --resume {run}" in lines[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000002"]  # no debris
    assert load_checkpoint(run).step == 2

    monkeypatch.setattr(ckpt_mod, "_save_safetensors", real)  # space freed: the run continues where it was
    resumed = train("train", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(run).step == 4
