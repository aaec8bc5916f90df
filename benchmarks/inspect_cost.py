"""What looking inside costs: nothing when it is off, something while it is on, and `nanogpt inspect` on the demo run.

    python benchmarks/inspect_cost.py [--run runs/demo] [--repeats 9] [--out benchmarks/inspect_results.json]

1. off: a train step (forward + backward + optimizer) of the demo-sized model never inspected, against the same
   model (same weights, its own optimizers) after a `capture` was opened and closed on it: the ratio should be 1
   within noise (goal <= 1.03, the assembly benchmark's);
2. on: a forward with every capture point kept against a plain forward, on the demo prompt (B=1, T=11) and on a
   training batch (B=4, T=256): what `capture` costs while it is on;
3. `nanogpt inspect RUN`: wall time of the whole command (a fresh process: imports, load, forward, three pictures),
   median of `--commands` runs (goal <= 10 s on 2 CPU cores), and the same work in-process by phase.

Timings interleave the candidates and report medians after warm-up (`benchmarks/run.py`'s `interleaved_medians`).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import VOCAB, interleaved_medians, machine_name, train_step_fn  # noqa: E402

from nanogpt_core import GPTConfig, TrainSettings, build_model, load_model  # noqa: E402
from nanogpt_core.inspection import capture, run_with_cache  # noqa: E402
from nanogpt_core.inspection.report import inspect_prompt  # noqa: E402


def demo_model() -> torch.nn.Module:
    demo = TrainSettings()
    cfg = GPTConfig.from_depth(demo.depth, vocab_size=VOCAB, sequence_len=demo.max_seq_len)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    return model


def bench_off(repeats: int) -> dict:
    fresh = demo_model()
    inspected = copy.deepcopy(fresh)
    idx = torch.randint(0, VOCAB, (4, 256))
    with torch.no_grad(), capture(inspected):
        inspected(idx[:1, :16])
    steps = {name: train_step_fn(m, lambda i, t, m=m: m(i, targets=t), m.setup_optimizers(), idx, idx)
             for name, m in (("never inspected", fresh), ("inspected before", inspected))}
    med = interleaved_medians(steps, repeats=repeats, warmup=2)
    return {"never_ms": med["never inspected"] * 1e3, "after_capture_ms": med["inspected before"] * 1e3,
            "ratio": med["inspected before"] / med["never inspected"]}


def bench_on(repeats: int, batch: int, seq: int) -> dict:
    model = demo_model()
    model.eval()
    idx = torch.randint(0, VOCAB, (batch, seq))

    def plain() -> None:
        with torch.no_grad():
            model(idx)

    def captured() -> None:
        run_with_cache(model, idx)

    med = interleaved_medians({"plain": plain, "captured": captured}, repeats=repeats, warmup=2)
    return {"batch": batch, "seq": seq, "plain_ms": med["plain"] * 1e3, "captured_ms": med["captured"] * 1e3,
            "ratio": med["captured"] / med["plain"]}


def bench_command(run: Path, commands: int) -> dict:
    nanogpt = Path(sys.executable).parent / "nanogpt"
    walls = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(commands):
            t0 = time.perf_counter()
            subprocess.run([str(nanogpt), "inspect", str(run), "--out", out], check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model, tokenizer, _ = load_model(run, device="cpu")
        t1 = time.perf_counter()
        inspect_prompt(model, tokenizer)
        t2 = time.perf_counter()
        inspect_prompt(model, tokenizer, out_dir=out)
        t3 = time.perf_counter()
    return {"run": str(run), "command_s": statistics.median(walls), "command_runs_s": walls,
            "load_s": t1 - t0, "forward_lens_stats_s": t2 - t1, "with_pictures_s": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="the run `nanogpt inspect` is timed on (make demo)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--commands", type=int, default=3, help="runs of the `nanogpt inspect` command")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the ratios (default: torch's; 1 is steadier on a busy machine)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "inspect_results.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"machine": machine_name(), "torch": torch.__version__, "repeats": args.repeats,
               "off": bench_off(args.repeats),
               "on": [bench_on(args.repeats, 1, 11), bench_on(args.repeats, 4, 256)]}
    if Path(args.run).is_dir():
        results["command"] = bench_command(Path(args.run), args.commands)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    off = results["off"]
    print(f"{results['machine']}, torch {results['torch']}")
    print(f"off: train step after a capture / never inspected = {off['ratio']:.3f} "
          f"({off['after_capture_ms']:.1f} / {off['never_ms']:.1f} ms)")
    for on in results["on"]:
        print(f"on:  forward with every point captured / plain, B={on['batch']} T={on['seq']} = {on['ratio']:.2f} "
              f"({on['captured_ms']:.2f} / {on['plain_ms']:.2f} ms)")
    if "command" in results:
        c = results["command"]
        print(f"nanogpt inspect {c['run']}: {c['command_s']:.1f} s (median of {len(c['command_runs_s'])}); in-process: "
              f"load {c['load_s']:.2f} s, forward + lens + stats {c['forward_lens_stats_s']:.2f} s, with the "
              f"pictures {c['with_pictures_s']:.2f} s")
    print(f"(written to {args.out})")


if __name__ == "__main__":
    main()
