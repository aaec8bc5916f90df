"""Time to quality: how good a model `nanogpt train` makes in a fixed wall-clock budget, on tinyshakespeare.

    python benchmarks/time_to_quality.py [--data input.txt] [--time 5m] [--runs time,defaults] [--out FILE]
    python benchmarks/time_to_quality.py --run d4="--depth 4 --num-iterations 300 --bf16 --compile"

The text is cut at 90% of its characters, as nanoGPT's shakespeare_char does: `nanogpt train` sees the first 90%
(split again into its own train and validation documents) and the last 10% is held out, never read in training.
Every run is a fresh `nanogpt train` process on the first part; its final checkpoint is then scored on the held-out
part by `nanogpt_core.train.bpb.text_bpb` in fp32: every byte predicted exactly once, as bits per byte (the score
does not depend on the run's tokenizer, batch or precision, so runs with different settings compare).

Runs: `time` is `nanogpt train --time BUDGET` (the settings it picks on this machine, `train.budget`); `defaults`
is today's `nanogpt train` with no flags (the demo's depth-2, 450-step run, whatever time that takes); `--run
NAME="FLAGS"` adds any other. The machine's load average is recorded before and after every run: figures taken on
a busy machine say so. The text: --data, else the copy `nanogpt data download tinyshakespeare` keeps (fetched if
missing).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import machine_name  # noqa: E402

from nanogpt_core.data.download import download_dataset
from nanogpt_core.io.checkpoint import latest_checkpoint, load_model
from nanogpt_core.train.bpb import text_bpb

HELD_OUT_FRACTION = 0.1
DEFAULT_RUNS = ("time", "defaults")


def load_text(path: str | None) -> tuple[str, str]:
    """(the text, where it came from): --data, else the downloaded tinyshakespeare."""
    if path is None:
        path = str(download_dataset("tinyshakespeare", progress=False) / "input.txt")
    return Path(path).read_text(encoding="utf-8"), path


def split_held_out(text: str) -> tuple[str, str]:
    """The first 90% of the characters to train on, the last 10% held out (nanoGPT's shakespeare_char cut)."""
    cut = int(len(text) * (1 - HELD_OUT_FRACTION))
    return text[:cut], text[cut:]


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def train_and_score(name: str, flags: list[str], train_file: Path, held_out: str, work: Path) -> dict:
    """One `nanogpt train` process on `train_file`, timed; its final checkpoint scored on `held_out`."""
    out = work / name
    command = [sys.executable, "-m", "nanogpt_cli", "train", "--data", str(train_file), "--out", str(out), *flags]
    load_before = load_average()
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load_after = load_average()
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: nanogpt train failed ({proc.returncode}); see {work / name}.log:\n"
                         f"{(proc.stdout + proc.stderr)[-2000:]}")
    model, tokenizer, meta = load_model(latest_checkpoint(out), device="cpu")
    config = json.loads((out / "config.json").read_text())
    t1 = time.perf_counter()
    bpb = text_bpb(model, tokenizer, held_out, model.config.sequence_len)
    training = config["training"]
    return {"name": name, "flags": shlex.join(flags), "wall_s": wall, "held_out_bpb": bpb,
            "score_s": time.perf_counter() - t1, "steps": meta["step"], "depth": training["depth"],
            "num_params": config["num_params"], "total_batch_size": training["total_batch_size"],
            "device_batch_size": training["device_batch_size"], "compile": training["compile"],
            "bf16": training.get("bf16"), "vocab_size": config["tokenizer"]["vocab_size"],
            "tokens": meta["step"] * training["total_batch_size"], "load_before": load_before,
            "load_after": load_after, "train_tokens": _train_tokens(proc.stdout), "plan": _plan_lines(proc.stdout)}


def _plan_lines(stdout: str) -> list[str]:
    """What a --time run printed about its choice (the lines starting with "Budget")."""
    return [line for line in stdout.splitlines() if line.startswith("Budget")]


def _train_tokens(stdout: str) -> int | None:
    """The run's training tokens, from its "Data: ... N train / M val tokens" line."""
    match = re.search(r"([\d,]+) train / [\d,]+ val tokens", stdout)
    return int(match.group(1).replace(",", "")) if match else None


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']} (torch {results['torch']}); text: {results['text']} "
             f"({results['train_chars']:,} characters to train on, {results['held_out_chars']:,} held out).", "",
             "| run | flags | model | steps x tokens | wall | held-out bits per byte | load average |",
             "|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        flags = f"`{r['flags']}`" if r["flags"] else "(none)"
        precision = " bf16" if r["bf16"] else ""
        compiled = " compiled" if r["compile"] else ""
        lines.append(f"| {r['name']} | {flags} | depth {r['depth']}, {r['num_params'] / 1e6:.2f}M params"
                     f"{precision}{compiled} | {r['steps']} x {r['total_batch_size']:,} | {r['wall_s']:.0f} s | "
                     f"{r['held_out_bpb']:.3f} | {r['load_before']:.1f} -> {r['load_after']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="tinyshakespeare's input.txt (default: the downloaded copy)")
    parser.add_argument("--time", default="5m", help="the budget of the `time` run (default: 5m)")
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                        help="which of the built-in runs: time, defaults (comma-separated; '' for none)")
    parser.add_argument("--run", action="append", default=[], metavar='NAME="FLAGS"',
                        help="another run: its name and its `nanogpt train` flags (repeatable)")
    parser.add_argument("--work", help="where the runs go (default: a temporary folder, removed afterwards)")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()

    text, source = load_text(args.data)
    train_text, held_out = split_held_out(text)
    runs = {"time": ["--time", args.time], "defaults": []}
    chosen = [(name, runs[name]) for name in filter(None, args.runs.split(","))]
    for spec in args.run:
        name, _, flags = spec.partition("=")
        chosen.append((name, shlex.split(flags)))
    results = {"machine": machine_name(), "torch": torch.__version__, "text": Path(source).name,
               "train_chars": len(train_text), "held_out_chars": len(held_out), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        train_file = work / "train.txt"
        train_file.write_text(train_text, encoding="utf-8")
        for name, flags in chosen:
            print(f"{name}: nanogpt train {shlex.join(flags)} ...", flush=True)
            result = train_and_score(name, flags, train_file, held_out, work)
            print(f"  {result['held_out_bpb']:.4f} bits per byte held out, {result['wall_s']:.0f} s wall, "
                  f"{result['steps']} steps, load {result['load_before']:.1f} -> {result['load_after']:.1f}",
                  flush=True)
            results["runs"].append(result)
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")  # saved as it goes
    print(markdown(results))
    print(f"\n(written to {args.out})")


if __name__ == "__main__":
    main()
