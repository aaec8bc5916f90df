"""What a training run tells the person watching it, and what it leaves behind in its folder.

- one line per step (step, loss, lr multiplier, ms/step, tok/s, ETA, and MFU on CUDA): a live progress bar when
  stdout is a terminal, plain lines otherwise (a log file, CI, a notebook), so logs stay greppable;
- `metrics.jsonl`: one JSON object per step and per evaluation, the raw numbers behind the lines and `loss.png`;
- `samples.txt`: every batch of samples, headed by its step;
- any number of `MetricSink`s (an experiment tracker, say) that receive the run's config once, then every record
  and every batch of samples, exactly what metrics.jsonl and samples.txt hold.

Only rank 0 gets an enabled RunLog; the others get a silent one, so the loop needs no `if rank == 0` everywhere.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from nanogpt_core.files import write_text_atomic

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.txt"


def format_duration(seconds: float) -> str:
    """'42s', '3m07s', '1h02m': short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_step_line(record: dict[str, Any], num_iterations: int) -> str:
    """The one line a step prints, from its metrics record."""
    step = record["step"]
    parts = [
        f"step {step + 1:05d}/{num_iterations:05d} ({100 * (step + 1) / max(1, num_iterations):.1f}%)",
        f"loss {record['smooth_loss']:.4f}",
        f"lrm {record['lrm']:.2f}",
        f"{record['dt_ms']:.1f} ms/step",
        f"{record['tok_per_sec']:,.0f} tok/s",
    ]
    if record.get("mfu") is not None:
        parts.append(f"mfu {record['mfu']:.1f}%")
    if record.get("eta_s") is not None:
        parts.append(f"eta {format_duration(record['eta_s'])}")
    return " | ".join(parts)


def truncate_metrics(run_dir: str | Path, before_step: int, redone: Sequence[str] = ("eval",)) -> None:
    """Drop what a run resumed at `before_step` writes again, so the file never holds a step twice: every record of
    a later step, the training step `before_step` itself, and the records of types `redone` at `before_step`. (An
    evaluation at the checkpoint's step came before the save, so it stays unless the resumed run evaluates there
    again.) Rewritten atomically: a crash (or a full disk) leaves the old file, never half of it."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        step = record.get("step", 0) if isinstance(record, dict) else None
        if not isinstance(step, int):
            continue
        if step < before_step or (step == before_step and record.get("type") not in ("train", *redone)):
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class MetricSink(Protocol):
    """Somewhere else a run's numbers go (TensorBoard, wandb, ...): told what metrics.jsonl and samples.txt are told."""

    def start(self, config: dict[str, Any]) -> None:
        """The run's config.json, once, before the first record."""

    def record(self, record: dict[str, Any]) -> None:
        """One metrics record: {"type": "train" | "eval" | ..., "step": N, ...numbers}."""

    def samples(self, step: int, samples: list[tuple[str, str]]) -> None:
        """Prompt -> completion pairs generated at `step`."""

    def close(self) -> None:
        """The run ended (normally, interrupted or failed): flush and release."""


class RunLog:
    """Console output and the run folder's log files for one run (a silent no-op when `enabled` is False)."""

    def __init__(self, run_dir: str | Path | None, num_iterations: int, *, enabled: bool = True,
                 stream: TextIO | None = None, progress_bar: bool | None = None,
                 sinks: Sequence[MetricSink] = ()) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.sinks = list(sinks) if enabled else []
        self.num_iterations = num_iterations
        self.enabled = enabled
        self.stream = stream or sys.stdout
        if progress_bar is None:
            progress_bar = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._progress = None
        self._task = None
        self._use_bar = progress_bar
        self._cut_from: tuple[int, tuple[str, ...]] | None = None

    # --- console ---------------------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A line of its own (setup facts, evaluations, where the checkpoint went); printed above a live bar."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, first_step: int) -> None:
        """Begin showing steps (the bar appears now, after the setup notes)."""
        if not (self.enabled and self._use_bar):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.description}"), console=Console(file=self.stream),
                                  transient=False)
        self._progress.start()
        self._task = self._progress.add_task("", total=self.num_iterations, completed=first_step)

    def step(self, record: dict[str, Any]) -> None:
        """Record a finished step: metrics.jsonl, then the bar or a plain line."""
        if not self.enabled:
            return
        self.metrics(record)
        line = format_step_line(record, self.num_iterations)
        if self._progress is not None:
            self._progress.update(self._task, completed=record["step"] + 1, description=line.split(" | ", 1)[1])
        else:
            print(line, file=self.stream, flush=True)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        """The run is over: stop the bar and close every sink (each exactly once)."""
        self.stop()
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()

    # --- files -----------------------------------------------------------------------------------------------

    def config(self, config: dict[str, Any]) -> None:
        """The run's config (as config.json holds it), for the sinks."""
        for sink in self.sinks:
            sink.start(config)

    def resume_at(self, step: int, redone: Sequence[str] = ()) -> None:
        """The run continues from `step`: before its first record, metrics.jsonl loses what the run writes again
        (`truncate_metrics`: later steps, training step `step`, and the types in `redone` at `step`), so every step
        appears once; a resume that fails before writing anything leaves the file as it was."""
        self._cut_from = (step, tuple(redone))

    def metrics(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.run_dir is not None and self._cut_from is not None:
            truncate_metrics(self.run_dir, *self._cut_from)
            self._cut_from = None
        if self.run_dir is not None:
            with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        for sink in self.sinks:
            sink.record(record)

    def samples(self, step: int, samples: list[tuple[str, str]]) -> None:
        """Append prompt -> completion pairs to samples.txt and print them."""
        if not self.enabled:
            return
        for sink in self.sinks:
            sink.samples(step, samples)
        lines = [f"--- samples at step {step} ---"]
        lines += [f"{prompt}{completion}".replace("\n", "\\n") for prompt, completion in samples]
        if self.run_dir is not None:
            with open(self.run_dir / SAMPLES_FILE, "a", encoding="utf-8") as f:
                f.write(f"=== step {step} ===\n")
                for prompt, completion in samples:
                    f.write(f"[{prompt}]{completion}\n")
                f.write("\n")
        for line in lines:
            self.note(line)
