"""Loop overhead: what a `nanogpt train` step costs beyond the bare model + optimizer step of the same model.

    python benchmarks/loop_overhead.py [--steps 30] [--out benchmarks/loop_overhead.json]

For each size (the demo's depth 2, and depth 4 with batch 8 x 256 as issue 21 measured), one `train()` runs on the
built-in corpus, and at every step boundary a StepHook makes the candidates below take one step each, on their own
copies of the model, so the loop and every candidate meet the machine in the same state (interleaved, as
benchmarks/run.py times). Medians over the steps, after the first (warm-up).

- `bare`: forward + backward of the step's micro-batches, made in memory beforehand (a different batch each
  micro-step, cycling through PREMADE_STEPS steps' worth), then every optimizer's step and zero_grad: the least
  any loop can do;
- `+ loader`, `+ loss`, `+ clip`, `+ schedule`: the bare step with one more piece of the real step each (batches
  read by the TokenLoader; the micro-batch losses averaged into a Python float; the gradient norm clipped and read;
  nanochat's lr and momentum schedule applied);
- `train_step`: `nanogpt_core.train.step`'s accumulate_gradients + optimizer_step, the one step the loop runs;
- `loop`: the time from one step boundary of `train()` to the next, the hook's own time taken out: the step, its
  bookkeeping, the log line, metrics.jsonl. Boundaries with an evaluation are counted apart (`eval`), as the
  evaluation's own cost: `eval_every` and `eval_tokens` decide it, not the loop.

Every figure is a ratio to `bare` measured in the same run; the overhead is `loop / bare - 1`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import machine_name  # noqa: E402

from nanogpt_core import TrainSettings, build_model  # noqa: E402
from nanogpt_core.data.loader import TokenLoader  # noqa: E402
from nanogpt_core.train.loop import StepHook, train  # noqa: E402
from nanogpt_core.train.settings import grad_accum_steps, model_config  # noqa: E402
from nanogpt_core.train.step import accumulate_gradients, apply_schedule, optimizer_step  # noqa: E402

SIZES = {"demo": {}, "depth 4": {"depth": 4, "device_batch_size": 8, "total_batch_size": 2048}}
PREMADE_STEPS = 64  # the bare step cycles through this many steps' batches, made before timing
PIECES = ("bare", "+ loader", "+ loss", "+ clip", "+ schedule", "train_step")


class Candidates:
    """Copies of the run's model, each stepped by one candidate; built from the run's own tokens and tokenizer."""

    def __init__(self, settings: TrainSettings, tokens: torch.Tensor, vocab_size: int) -> None:
        self.settings = settings
        self.accum = grad_accum_steps(settings.total_batch_size, settings.device_batch_size, settings.max_seq_len)
        self.tokens = tokens
        self.vocab_size = vocab_size
        self.steps: dict[str, Callable[[int], None]] = {name: self._make(name) for name in PIECES}

    def _make(self, name: str) -> Callable[[int], None]:
        s = self.settings
        torch.manual_seed(s.seed)
        model = build_model(model_config(s, self.vocab_size))
        model.init_weights()
        optimizers = model.setup_optimizers(**s.optimizer_lrs())
        loader = TokenLoader(self.tokens, s.device_batch_size, s.max_seq_len)
        # the bare step's batches are made beforehand, a different one every micro-step as a real run's: the same
        # batch every time measured 3% faster at the demo size (the embedding's backward over the same rows), a
        # price of the data, not of the loop
        fixed = [loader.next_batch() for _ in range(self.accum * PREMADE_STEPS)]
        level = PIECES.index(name)

        if name == "train_step":
            def step(i: int) -> None:
                accumulate_gradients(model, loader, self.accum)
                optimizer_step(model, optimizers, i, s)
            return step

        def step(i: int) -> None:
            losses = []
            for k in range(self.accum):
                x, y = loader.next_batch() if level >= 1 else fixed[(i % PREMADE_STEPS) * self.accum + k]
                loss = model(x, y)
                losses.append(loss.detach())
                (loss / self.accum).backward()
            if level >= 2:
                torch.stack(losses).mean().item()
            if level >= 3:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip).item()
            if level >= 4:
                apply_schedule(optimizers, i, s)
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
        return step


def measure(size: str, overrides: dict, steps: int) -> dict:
    settings = TrainSettings(**{**overrides, "num_iterations": steps, "out": tempfile.mkdtemp() + "/run",
                                "sample_every": -1, "save_every": -1})
    times: dict[str, list[float]] = {name: [] for name in (*PIECES, "loop", "eval")}
    state: dict = {"last": None, "candidates": None}

    def round_of_candidates(run, step: int) -> None:
        """A StepHook at every boundary: first the interval since the last one (a step of the loop and what
        surrounds it), then one step of every candidate."""
        now = time.perf_counter()
        if state["last"] is not None:
            evaluated = settings.eval_every > 0 and step % settings.eval_every == 0 or step == steps
            times["eval" if evaluated else "loop"].append(now - state["last"])
        if state["candidates"] is None:
            state["candidates"] = Candidates(settings, run.train_tokens, run.tokenizer.vocab_size)
            for fn in state["candidates"].steps.values():
                fn(0)  # warm-up
        for name, fn in state["candidates"].steps.items():
            t0 = time.perf_counter()
            fn(step)
            times[name].append(time.perf_counter() - t0)
        state["last"] = time.perf_counter()

    hook = StepHook("overhead", 1, round_of_candidates, at_start=True)
    train(settings, stream=io.StringIO(), hooks=[hook])
    med = {name: statistics.median(ts[1:] or ts) for name, ts in times.items() if ts}
    bare = med["bare"]
    return {"size": size, "depth": settings.depth, "device_batch_size": settings.device_batch_size,
            "total_batch_size": settings.total_batch_size, "steps": steps,
            "ms": {name: 1000 * v for name, v in med.items()},
            "ratio": {name: v / bare for name, v in med.items()}, "overhead": med["loop"] / bare - 1,
            "load": os.getloadavg()[0]}


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']} (torch {results['torch']}).", "",
             "| size | bare step | " + " | ".join(PIECES[1:]) + " | loop | overhead | load |",
             "|---|---|" + "---|" * (len(PIECES) - 1) + "---|---|---|"]
    for r in results["sizes"]:
        cells = " | ".join(f"{r['ratio'][name]:.3f}" for name in (*PIECES[1:], "loop"))
        lines.append(f"| {r['size']} (depth {r['depth']}, {r['device_batch_size']} x 256, "
                     f"{r['total_batch_size']:,} tokens) | {r['ms']['bare']:.0f} ms | {cells} | "
                     f"{100 * r['overhead']:+.1f}% | {r['load']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    results = {"machine": machine_name(), "torch": torch.__version__, "sizes": []}
    for size in args.sizes.split(","):
        results["sizes"].append(measure(size, SIZES[size], args.steps))
        print(markdown(results), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n(written to {args.out})")


if __name__ == "__main__":
    main()
