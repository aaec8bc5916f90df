"""The memory estimate that refuses a run before allocation (`nanogpt_core.model.memory`) against what a real train
step holds on this machine: the estimate must stay below the measured peak (a refusal then means the run cannot
fit), and should not be far below it (or it refuses nothing).

    python benchmarks/memory_estimate.py

Each shape runs in a fresh process: its resident set is read before the model is built and at the peak of three
train steps (forward, backward, optimizer step); the estimate is `training_need(config, batch, cpu).total`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import machine_name, peak_rss_mb, train_step_fn  # noqa: E402

from nanogpt_core import GPTConfig, build_model  # noqa: E402
from nanogpt_core.model.memory import training_need  # noqa: E402

VOCAB = 4096
SHAPES = [(2, 4, 256), (4, 4, 256), (8, 2, 256), (12, 1, 512)]  # (depth, device batch, sequence length)


def child(depth: int, batch: int, seq: int) -> None:
    torch.set_num_threads(1)
    cfg = GPTConfig.from_depth(depth, vocab_size=VOCAB, sequence_len=seq)
    idx = torch.randint(0, VOCAB, (batch, seq))
    before = peak_rss_mb()
    model = build_model(cfg)
    model.init_weights()
    optimizers = model.setup_optimizers()
    step = train_step_fn(model, lambda i, t: model(i, targets=t), optimizers, idx, idx)
    for _ in range(3):
        step()
    measured = peak_rss_mb() - before
    estimate = training_need(cfg, batch, torch.device("cpu")).total / 2**20
    print(json.dumps({"depth": depth, "batch": batch, "seq": seq, "measured_mb": measured, "estimate_mb": estimate,
                      "estimate_over_measured": estimate / measured}))


def main() -> None:
    if len(sys.argv) > 1:
        child(*(int(v) for v in sys.argv[1].split(",")))
        return
    print(f"Machine: {machine_name()} (torch {torch.__version__}).\n")
    print("| depth | batch x seq | measured peak growth | estimate | estimate / measured |")
    print("|---|---|---|---|---|")
    for depth, batch, seq in SHAPES:
        out = subprocess.run([sys.executable, __file__, f"{depth},{batch},{seq}"], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {depth} | {batch} x {seq} | {r['measured_mb']:.0f} MB | {r['estimate_mb']:.0f} MB | "
              f"{r['estimate_over_measured']:.2f} |")


if __name__ == "__main__":
    main()
