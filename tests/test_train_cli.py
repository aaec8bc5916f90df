"""`nanogpt train` from the command line: the seed's command verbatim, both flag spellings, resume, the trace, the
output modes, and one-line errors."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from tiny_training import _one_thread, tiny_corpus, tiny_tokenizer  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.io.checkpoint import load_checkpoint
from nanogpt_core.train.run_log import RunLog, read_metrics

SEED_COMMAND = ["--depth=4", "--max_seq_len=512", "--device_batch_size=1", "--eval_tokens=512",
                "--core_metric_every=-1", "--total_batch_size=512", "--num_iterations=1"]


def run(*args: str):
    return CliRunner().invoke(cli, ["train", *args])


def tiny(corpus, tokenizer, out, *extra: str) -> list[str]:
    return ["--data", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out), "--depth=1", "--n-embd=64",
            "--n-head=1", "--max-seq-len=32", "--device-batch-size=2", "--total-batch-size=64", "--eval-tokens=64",
            "--device=cpu", *extra]


@pytest.mark.slow
def test_the_seeds_command_runs_verbatim(tmp_path):
    result = run(*SEED_COMMAND, "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "CORE metric" not in out  # -1: never, as in nanochat (and no bundle looked for)
    assert out.count("val bpb") >= 2 and "--- samples at step 1 ---" in out
    assert f"Checkpoint: {tmp_path / 'run' / 'checkpoints' / 'step_000001'}" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"] == {"sequence_len": 512, "vocab_size": 4096, "n_layer": 4, "n_head": 2, "n_kv_head": 2,
                               "n_embd": 256}
    assert config["grad_accum_steps"] == 1 and config["training"]["device_batch_size"] == 1
    records = read_metrics(tmp_path / "run")
    assert [(r["type"], r["step"]) for r in records] == [("eval", 0), ("train", 0), ("eval", 1)]
    assert load_checkpoint(tmp_path / "run").step == 1


def test_dashes_and_underscores_are_the_same_flags(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    dashed = run(*tiny(tiny_corpus, tiny_tokenizer, tmp_path / "a", "--num-iterations=0", "--matrix-lr=0.01"))
    under = run("--data", str(tiny_corpus), "--tokenizer", str(tiny_tokenizer), "--out", str(tmp_path / "b"),
                "--depth=1", "--n_embd=64", "--n_head=1", "--max_seq_len=32", "--device_batch_size=2",
                "--total_batch_size=64", "--eval_tokens=64", "--device_type=cpu", "--num_iterations=0",
                "--matrix_lr=0.01")
    assert dashed.exit_code == 0 and under.exit_code == 0, dashed.output + under.output
    a = json.loads((tmp_path / "a" / "config.json").read_text())
    b = json.loads((tmp_path / "b" / "config.json").read_text())
    a["training"].pop("out"), b["training"].pop("out")
    assert a == b and a["training"]["matrix_lr"] == 0.01 and a["model"]["sequence_len"] == 32


def test_plain_lines_when_not_a_terminal_and_resume_continues(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    first = run(*tiny(tiny_corpus, tiny_tokenizer, tmp_path / "run", "--num-iterations=2"))
    assert first.exit_code == 0, first.output
    assert "step 00001/00002 (50.0%) | loss " in first.stdout and " tok/s | eta " in first.stdout
    assert "Sample it:  nanogpt sample" in first.stdout
    again = run("--resume", str(tmp_path / "run"), "--num-iterations=4")
    assert again.exit_code == 0, again.output
    assert "Resuming from" in again.stdout and "step 00004/00004" in again.stdout
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if r["type"] == "train"]
    assert steps == [0, 1, 2, 3]
    assert load_checkpoint(tmp_path / "run").step == 4


def test_resume_auto_starts_fresh_when_there_is_nothing(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    result = run(*tiny(tiny_corpus, tiny_tokenizer, tmp_path / "run", "--num-iterations=1", "--resume=auto"))
    assert result.exit_code == 0, result.output
    assert "found no checkpoint to continue; starting a new run" in result.stdout
    again = run("--out", str(tmp_path / "run"), "--resume", "auto", "--num-iterations=2")
    assert again.exit_code == 0 and "Resuming from" in again.stdout


def test_debug_traces_the_first_step_only(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    result = run(*tiny(tiny_corpus, tiny_tokenizer, tmp_path / "run", "--num-iterations=2", "--debug"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "[DEBUG] Initializing GPT model" in out and "[DEBUG]   n_embd: 64" in out
    assert out.count("GPT.forward() called") == 1  # the run's first forward (step 0's evaluation); not step 2
    assert "Input shape: torch.Size([2, 32])" in out
    stats = run(*tiny(tiny_corpus, tiny_tokenizer, tmp_path / "run2", "--num-iterations=1", "--debug=stats"))
    assert stats.exit_code == 0, stats.output
    assert "dtype=torch.float32 device=cpu mean=" in stats.stdout


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    log = RunLog(None, 10, stream=stream)
    log.start(0)
    log.step({"step": 0, "smooth_loss": 5.0, "lrm": 1.0, "dt_ms": 10.0, "tok_per_sec": 100.0, "eta_s": 9, "mfu": None})
    log.note("step 00001 | val bpb 3.0000")
    log.stop()
    text = stream.getvalue()
    assert "1/10" in text and "loss 5.0000" in text and "val bpb 3.0000" in text
    assert "step 00001/00010" not in text  # the bar replaces the plain line


@pytest.mark.parametrize("args, message", [
    (["--total-batch-size=100"], "--total-batch-size 100 must be a multiple of"),
    (["--resume", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
    (["--use", "nosuchset:attention"], "unknown implementation set 'nosuchset'"),
    (["--vocab-size=300"], "has a 384-token tokenizer but --vocab-size is 300; drop --vocab-size"),
    (["--debug=loud"], "--debug takes no value, 'stats', 'inside' or 'inside,stats'"),  # (it shows the traceback)
    (["--debug-layer=3"], "--debug-layer 3 is not a layer of this model: it has one layer, layer 0"),
    pytest.param(["--device=cuda"], "torch sees no CUDA GPU; use --device cpu",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="has a GPU")),
])
def test_bad_flags_are_one_line_errors(tiny_corpus, tiny_tokenizer, tmp_path, args, message):  # noqa: F811
    result = run(*tiny(tiny_corpus, tiny_tokenizer, tmp_path / "run", "--num-iterations=1"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output or any(a.startswith("--debug") for a in args)


def test_ctrl_c_saves_and_exits_130(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    """The real thing: a `nanogpt train` process gets SIGINT mid-run, saves at a step boundary and exits 130."""
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "nanogpt_cli", "train",
            *tiny(tiny_corpus, tiny_tokenizer, tmp_path / "run", "--num-iterations=100000")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    lines = []
    deadline = time.time() + 120
    for line in proc.stdout:  # plain lines (not a terminal): wait for the second step
        lines.append(line)
        if line.startswith("step 00002/") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    out = "".join(lines) + out
    assert proc.returncode == 130, out + err
    assert "Interrupted at step" in out and "Continue with: nanogpt train --resume" in out
    assert "Interrupted." in err and "Traceback" not in err
    step = load_checkpoint(tmp_path / "run").step
    assert step >= 2
    assert [r["step"] for r in read_metrics(tmp_path / "run") if r["type"] == "train"] == list(range(step))
