"""Attention over training: a snapshot of the attention grid at chosen steps, and all of them in one picture.

`nanogpt train --inspect-every N` saves, at step 0, every N steps and at the end,

    RUN/inspect/step_000050/attention.png           the grid of that step (layers x heads)
    RUN/inspect/step_000050/attention.safetensors   the patterns behind it, with the prompt's tokens

and `nanogpt inspect RUN --steps` draws RUN/inspect/steps.png from the saved patterns: one row per head, one column
per step, on one colour scale, so a learner watches heads form (from near-uniform at step 0 to sharp patterns).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from nanogpt_core.errors import ConfigError
from nanogpt_core.files import atomic_write
from nanogpt_core.inspection.capture import run_with_cache
from nanogpt_core.inspection.layer_stats import attention_entropy
from nanogpt_core.inspection.pictures import draw_attention, draw_attention_over_steps

INSPECT_DIR = "inspect"
PATTERNS_FILE = "attention.safetensors"
STEPS_FILE = "steps.png"
MAX_STEP_COLUMNS = 10  # more columns than this make every panel too small to read: evenly spaced steps are kept


@dataclass
class Snapshot:
    step: int
    patterns: list[torch.Tensor]  # per layer (H, T, T), float32
    tokens: list[int]
    labels: list[str]
    use_spec: str


def snapshot_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / INSPECT_DIR / f"step_{step:06d}"


def save_snapshot(model: nn.Module, tokens: list[int], labels: list[str], run_dir: str | Path, step: int
                  ) -> Snapshot | None:
    """The attention grid of `tokens` at `step`, drawn and saved under RUN/inspect/step_XXXXXX/; None when the
    model's attention records no pattern (see `cache.missing`)."""
    idx = torch.tensor([tokens], dtype=torch.long, device=model.get_device())
    _, cache = run_with_cache(model, idx, names="blocks.*.attn.pattern")
    if cache.missing:
        return None
    patterns = [p[0].float().cpu() for p in cache.per_layer("attn.pattern")]
    snapshot = Snapshot(step, patterns, list(tokens), list(labels), model.use_spec)
    folder = snapshot_dir(run_dir, step)
    metadata = {"step": str(step), "tokens": json.dumps(snapshot.tokens), "labels": json.dumps(snapshot.labels),
                "use": snapshot.use_spec}
    tensors = {f"layer_{i}": p.contiguous() for i, p in enumerate(patterns)}
    atomic_write(folder / PATTERNS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    entropies = [attention_entropy(p[None]).tolist() for p in patterns]
    draw_attention(patterns, labels, f"attention of {snapshot.use_spec} at step {step}", folder / "attention.png",
                   entropies=entropies)
    return snapshot


def load_snapshot(path: Path) -> Snapshot:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    patterns = [tensors[f"layer_{i}"] for i in range(len(tensors))]
    return Snapshot(int(meta["step"]), patterns, json.loads(meta["tokens"]), json.loads(meta["labels"]),
                    meta.get("use", "?"))


def load_snapshots(run_dir: str | Path) -> tuple[list[Snapshot], list[Path]]:
    """Every readable snapshot of a run, by step, and the files that could not be read (cut short by a crash)."""
    snapshots, unreadable = [], []
    for path in sorted((Path(run_dir) / INSPECT_DIR).glob(f"step_*/{PATTERNS_FILE}")):
        try:
            snapshots.append(load_snapshot(path))
        except (SafetensorError, OSError, KeyError, ValueError):
            unreadable.append(path)
    return sorted(snapshots, key=lambda s: s.step), unreadable


def evenly_spaced(items: list, n: int) -> list:
    """At most n of `items`, the first and the last always among them."""
    if len(items) <= n:
        return list(items)
    picks = sorted({round(k * (len(items) - 1) / (n - 1)) for k in range(n)})
    return [items[i] for i in picks]


def draw_steps(run_dir: str | Path, out_path: str | Path | None = None) -> tuple[Path, list[Snapshot]]:
    """RUN/inspect/steps.png from the saved snapshots; returns the path and the snapshots drawn.

    Only snapshots of the latest one's prompt are drawn together (a resumed run may have changed --inspect-prompt)."""
    run_dir = Path(run_dir)
    snapshots, _ = load_snapshots(run_dir)
    if not snapshots:
        raise ConfigError(f"{run_dir} has no saved attention grids ({INSPECT_DIR}/step_*/{PATTERNS_FILE}); train "
                          f"with --inspect-every N to save them, e.g. nanogpt train --inspect-every 50.")
    same_prompt = [s for s in snapshots if s.tokens == snapshots[-1].tokens]
    shown = evenly_spaced(same_prompt, MAX_STEP_COLUMNS)
    last = shown[-1]
    prompt = "".join(last.labels[1:]) if len(last.labels) > 1 else ""
    path = Path(out_path) if out_path else run_dir / INSPECT_DIR / STEPS_FILE
    draw_attention_over_steps([s.step for s in shown], [s.patterns for s in shown], last.labels,
                              f"attention of {last.use_spec} over training · prompt {prompt!r}", path)
    return path, shown
