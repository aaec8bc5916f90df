"""Data-parallel training as users launch it: `torchrun --nproc_per_node=2 -m nanogpt_cli train ... --device cpu`.

Two Gloo processes on CPU must train the model one process trains with the same total batch: the same losses step by
step, the same validation bits per byte, weights equal on both ranks, files written by rank 0 alone; and a run
resumed under two processes continues exactly where it stopped.

Why a tolerance and not equality with the 1-process run: the two runs add the same numbers in another order. One
process accumulates the 4 micro-batch gradients of a step into .grad one after the other; two processes each add 2,
then DDP sums the two halves and divides by 2. fp32 addition is not associative, so gradients differ in the last bits
(~1e-7 relative), and a few steps of training carry that into the loss at about 1e-7..1e-6 relative (measured:
<= 1.1e-7 over these 6 steps). 1e-5 is ~100 times above that and far below what a real bug does (both measured by
breaking the code): ranks reading the same rows change the second step's loss by 1.7e-3 relative, gradients not
averaged (no DDP) by 2.8e-3 and leave the ranks' weights different. Between two 2-process runs (resume) the order of
operations is the same, so there the comparison is exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from tiny_training import _one_thread, tiny_corpus, tiny_settings, tiny_shards, tiny_tokenizer  # noqa: F401

from nanogpt_core.data.loader import TokenLoader
from nanogpt_core.errors import ConfigError
from nanogpt_core.io.checkpoint import load_checkpoint
from nanogpt_core.train.distributed import Ranks, mean_over_ranks, rank_device, weights_digest
from nanogpt_core.train.loop import train
from nanogpt_core.train.run_log import read_metrics
from nanogpt_core.train.settings import TrainSettings

STEPS = 6
LOSS_RTOL = 1e-5  # see the module docstring
WEIGHT_RTOL = 5e-5  # of each tensor's largest weight; measured in test_two_processes_train_what_one_process_trains


def _settings(corpus: Path, tokenizer: Path, out: Path, **overrides) -> TrainSettings:
    """512 tokens a step: 1 process x 4 micro-batches of 2 x 64, or 2 processes x 2 micro-batches (no_sync used)."""
    return tiny_settings(corpus, tokenizer, out, **{"total_batch_size": 512, "num_iterations": STEPS,
                                                    "eval_every": 3, "save_every": 3, **overrides})


def _flags(settings: TrainSettings) -> list[str]:
    """The command-line flags that give `settings` (what a user would type)."""
    flags = []
    for f in fields(TrainSettings):
        value = getattr(settings, f.name)
        if value is None or value == [] or isinstance(value, bool) or f.name == "debug":
            continue
        flags += [f"--{f.name.replace('_', '-')}", str(value)]
    return flags


def _torchrun(args: list[str], cwd: Path, nproc: int = 2) -> str:
    """`torchrun --standalone --nproc_per_node=N -m nanogpt_cli ARGS` (standalone: a free port picked for us)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "nanogpt_cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def _losses(run: Path, kind: str = "train") -> list[float]:
    key = "loss" if kind == "train" else "val_bpb"
    return [r[key] for r in read_metrics(run) if r["type"] == kind]


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tiny_corpus, tiny_tokenizer, tmp_path_factory):  # noqa: F811
    """One 1-process run in this process and the same run under torchrun with 2 processes."""
    root = tmp_path_factory.mktemp("ddp")
    one = train(_settings(tiny_corpus, tiny_tokenizer, root / "one"), stream=open(os.devnull, "w"))
    two_dir = root / "two"
    output = _torchrun(["train", *_flags(_settings(tiny_corpus, tiny_tokenizer, two_dir))], cwd=root)
    two = {"dir": two_dir, "output": output, "losses": _losses(two_dir), "bpb": _losses(two_dir, "eval"),
           "files": _files(two_dir), "weights": load_checkpoint(two_dir).model_state}
    return one, two


def test_two_processes_train_what_one_process_trains(runs):
    one, two = runs
    assert len(two["losses"]) == STEPS  # each step logged once: only rank 0 writes metrics.jsonl
    for step, (a, b) in enumerate(zip(one.losses, two["losses"])):
        assert b == pytest.approx(a, rel=LOSS_RTOL), f"step {step}: 1 process {a}, 2 processes {b}"
    assert two["losses"][-1] < two["losses"][0] - 0.5  # it trained (so the equality above is not of constants)
    assert two["bpb"] == pytest.approx(_losses(one.run_dir, "eval"), rel=LOSS_RTOL)  # summed over both ranks
    # the weights after 6 steps, 1 process vs 2: the same up to the summation-order noise above, which AdamW turns
    # into whole lr-sized steps on embedding rows whose gradient is nearly zero (m / sqrt(v) does not care about
    # scale). Measured, per tensor, max |difference| / max |weight|: <= 7.2e-6 (c_proj; wte 4.3e-6) in stored
    # order, <= 6.3e-6 shuffled; an element-wise rtol fails on small embedding entries by chance. 5e-5 is ~7x that.
    weights = load_checkpoint(one.checkpoint).model_state
    for name, tensor in weights.items():
        worst = (two["weights"][name] - tensor).abs().max().item()
        assert worst <= WEIGHT_RTOL * tensor.abs().max().item(), f"{name}: differs by up to {worst:.3g}"


def test_ranks_end_with_identical_weights_and_only_rank_0_writes(runs):
    one, two = runs
    # every rank hashed its weights and rank 0 compared the digests (a mismatch prints a warning instead)
    assert "Weights identical on all 2 ranks" in two["output"]
    assert "Warning" not in two["output"]
    assert two["output"].count("Done: 6 steps") == 1  # rank 1 computes silently
    assert two["output"].count("step 00006/00006") == 1
    assert two["files"] == _files(one.run_dir)  # nothing extra (no second metrics file, no rank-1 checkpoint)
    config = json.loads((two["dir"] / "config.json").read_text())
    assert config["world_size"] == 2 and config["grad_accum_steps"] == 2  # 512 = 2 x 64 x 2 ranks x 2
    assert json.loads((one.run_dir / "config.json").read_text())["grad_accum_steps"] == 4
    state = load_checkpoint(two["dir"]).state
    assert state["train_loader"]["position"] == STEPS * 512  # the global position, whatever the world size


def test_resume_under_two_processes_continues_exactly(runs, tmp_path):
    _, two = runs
    copy = tmp_path / "two"
    shutil.copytree(two["dir"], copy)
    # continue from the step-3 checkpoint: every rank loads it, and the loader's global position gives each its rows
    output = _torchrun(["train", "--resume", str(copy / "checkpoints" / "step_000003")], cwd=tmp_path)
    assert "Resuming from" in output and "Weights identical on all 2 ranks" in output
    assert _losses(copy) == two["losses"]  # steps 0-2 kept, 3-5 recomputed bit for bit
    resumed = load_checkpoint(copy).model_state
    assert all(torch.equal(resumed[k], two["weights"][k]) for k in resumed)


@pytest.fixture(scope="module")
def streamed(tiny_shards, tiny_tokenizer, tmp_path_factory):  # noqa: F811
    """The run of `runs` under torchrun with 2 processes, its data streamed: each rank reads its own files."""
    root = tmp_path_factory.mktemp("ddp-stream")
    output = _torchrun(["train", *_flags(_settings(tiny_shards, tiny_tokenizer, root / "run")), "--stream"],
                       cwd=root)
    return root / "run", output


def test_streamed_data_resumes_exactly_under_two_processes(streamed, tmp_path):
    run, output = streamed
    assert "streamed from 7 file(s)" in output and "Weights identical on all 2 ranks" in output
    state = load_checkpoint(run).state["train_loader"]
    assert state["kind"] == "stream" and [s["rank"] for s in state["ranks"]] == [0, 1]
    assert state["ranks"][0]["file"] != state["ranks"][1]["file"]  # rank r reads units r, r+2, ...: other files
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    # every rank takes its own position from the step-3 checkpoint that rank 0 saved for both
    resumed = _torchrun(["train", "--resume", str(copy / "checkpoints" / "step_000003")], cwd=tmp_path)
    assert "Resuming from" in resumed and "Warning" not in resumed
    assert _losses(copy) == _losses(run)  # steps 3-5 read the same tokens on each rank: bit for bit
    weights, again = load_checkpoint(run).model_state, load_checkpoint(copy).model_state
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    # one process cannot continue what two processes streamed (each read its own share): one line, nothing touched
    before = (copy / "metrics.jsonl").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "nanogpt_cli", "train", "--resume", str(copy), "--num-iterations",
                           str(STEPS + 2)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "streamed its data with 2 process(es)" in proc.stderr and "--nproc_per_node=2" in proc.stderr
    assert "Traceback" not in proc.stderr and (copy / "metrics.jsonl").read_bytes() == before


# --- the pieces, in one process ----------------------------------------------------------------------------------


def test_ranks_from_env_refuses_a_launch_torchrun_would_not_make(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert Ranks.from_env() == Ranks(0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="MASTER_ADDR/MASTER_PORT are not set; launch .* with torchrun"):
        Ranks.from_env()
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert Ranks.from_env() == Ranks(1, 2, 0)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK=2 is not one of WORLD_SIZE=2 ranks"):
        Ranks.from_env()


def test_rank_device_and_single_process_helpers(tiny_config):
    two = Ranks(1, 2, 1)
    assert rank_device(torch.device("cpu"), two) == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA \\(NCCL\\) or CPU \\(Gloo\\), not mps"):
        rank_device(torch.device("mps"), two)
    assert mean_over_ranks(2.5, torch.device("cpu")) == 2.5  # no process group: the value itself
    from nanogpt_core import build_model

    model = build_model(tiny_config)
    model.init_weights()
    before = weights_digest(model)
    assert weights_digest(model) == before
    with torch.no_grad():  # one ulp in one weight is a different digest
        w = model.lm_head.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(1.0))
    assert weights_digest(model) != before


def test_the_commands_in_docs_distributed_use_real_flags_and_valid_batch_sizes():
    """Every torchrun command in docs/distributed.md: train flags the CLI has, and a total batch that divides."""
    import re
    import shlex

    from nanogpt_cli.train import train_command
    from nanogpt_core.train.settings import grad_accum_steps

    known = {opt for param in train_command.params for opt in param.opts}
    doc = (Path(__file__).parent.parent / "docs" / "distributed.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", doc, flags=re.S)
    commands = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()
                if "nanogpt_cli train" in line]
    assert len(commands) >= 5
    for command in commands:
        words = shlex.split(command)
        launcher, args = words[:words.index("train")], words[words.index("train") + 1:]
        flags = dict(w.lstrip("-").split("=", 1) if "=" in w else (w.lstrip("-"), "") for w in args if
                     w.startswith("--"))
        assert {f"--{name}" for name in flags} <= known, command
        if "resume" in flags:
            continue
        nodes = next((int(w.split("=")[1]) for w in launcher if w.startswith("--nnodes=")), 1)
        nproc = next(int(w.split("=")[1]) for w in launcher if w.startswith("--nproc_per_node="))
        sizes = [int(flags.get(name.replace("_", "-"), getattr(TrainSettings(), name)))
                 for name in ("total_batch_size", "device_batch_size", "max_seq_len")]
        grad_accum_steps(*sizes, world_size=nodes * nproc)  # a ConfigError if the total batch does not divide


def test_a_parameter_the_loss_never_reaches_is_named_before_ddp_fails_on_it(tiny_config, tmp_path):
    """Under DDP (here a 1-process Gloo group: the same reducer) an unused weight is one ComponentError line."""
    import torch.distributed as dist

    from nanogpt_core import build_model
    from nanogpt_core.errors import ComponentError
    from nanogpt_core.train.distributed import check_every_parameter_used, data_parallel
    from nanogpt_core.train.step import accumulate_gradients

    model = build_model(tiny_config)
    model.init_weights()
    model.transformer.h[1].mlp.spare = torch.nn.Linear(4, 4)  # created, never called
    loader = TokenLoader(torch.randint(0, tiny_config.vocab_size, (2000,)), 2, 16)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = data_parallel(model, torch.device("cpu"))
        accumulate_gradients(ddp, loader, 2)
        with pytest.raises(ComponentError, match=r"transformer\.h\.1\.mlp\.spare\.weight \(and 1 more\) got no "
                                                 r"gradient: the loss does not depend on it"):
            check_every_parameter_used(model)
        with pytest.raises(RuntimeError, match="finished reduction in the prior iteration"):
            accumulate_gradients(ddp, loader, 2)  # what the user would otherwise get, one step later
        reference = build_model(tiny_config)
        reference.init_weights()
        accumulate_gradients(data_parallel(reference, torch.device("cpu")), loader, 2)
        check_every_parameter_used(reference)  # the reference model uses every parameter
    finally:
        dist.destroy_process_group()


def test_gradient_accumulation_all_reduces_once_per_step_not_once_per_micro_batch(tiny_config, tmp_path):
    """no_sync() on all but the last micro-batch: DDP's communication hook runs for the last backward only."""
    import torch.distributed as dist

    from nanogpt_core import build_model
    from nanogpt_core.train.distributed import data_parallel
    from nanogpt_core.train.step import accumulate_gradients

    model = build_model(tiny_config)
    model.init_weights()
    loader = TokenLoader(torch.randint(0, tiny_config.vocab_size, (2000,)), 2, 16)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = data_parallel(model, torch.device("cpu"))
        calls = []

        def counting_allreduce(state, bucket):
            calls.append(bucket.index())
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, counting_allreduce)
        accumulate_gradients(ddp, loader, 1)  # one micro-batch: one sync of every bucket
        buckets_per_sync = len(calls)
        assert buckets_per_sync >= 1
        accumulate_gradients(ddp, loader, 4)
        assert len(calls) == 2 * buckets_per_sync  # 4 micro-batches: still one sync
    finally:
        dist.destroy_process_group()
