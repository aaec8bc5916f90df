"""loss.png: the training loss and the validation bits per byte of a run, side by side (and the CORE metric in a
third panel when the run evaluates it).

Separate panels rather than one shared axis: the training loss is nats per token, validation is bits per byte, CORE
a centred accuracy, and putting different units on one axis invites a wrong comparison. Drawn with matplotlib's
Agg backend (no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanogpt_core.files import save_figure

PLOT_FILE = "loss.png"


def plot_losses(records: list[dict[str, Any]], out_path: str | Path) -> Path:
    """Draw train loss (raw and smoothed), val bpb and CORE (if any) from metrics records into `out_path`,
    atomically."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    core = [r for r in records if r.get("type") == "core"]
    fig, axes = plt.subplots(1, 3 if core else 2, figsize=(16 if core else 11, 4))
    ax_train, ax_val = axes[0], axes[1]
    if train:
        steps = [r["step"] + 1 for r in train]  # a train record is logged after its step: the model has seen step+1
        ax_train.plot(steps, [r["loss"] for r in train], color="tab:blue", alpha=0.3, linewidth=1, label="loss")
        ax_train.plot(steps, [r["smooth_loss"] for r in train], color="tab:blue", linewidth=2, label="smoothed")
        ax_train.legend()
    ax_train.set(title="training loss", xlabel="step", ylabel="cross-entropy (nats/token)")
    if evals:
        ax_val.plot([r["step"] for r in evals], [r["val_bpb"] for r in evals], "o-", color="tab:orange")
    ax_val.set(title="validation", xlabel="step", ylabel="bits per byte")
    if core:
        axes[2].plot([r["step"] for r in core], [r["core"] for r in core], "o-", color="tab:green")
        axes[2].axhline(0.0, color="gray", linewidth=1, linestyle=":")  # what guessing scores
        axes[2].set(title="CORE (0 = random guessing)", xlabel="step", ylabel="mean centred accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, out_path)
