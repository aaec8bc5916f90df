"""The overlay plot of a compare: both loss curves on one axis (same units), their difference below."""

from __future__ import annotations

from pathlib import Path

from nanogpt_core.compare.report import TrainingComparison
from nanogpt_core.files import save_figure


def plot_comparison(training: TrainingComparison, out_path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ref, cand = training.reference, training.candidate
    fig, (ax, ax_diff) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(range(1, len(ref.losses) + 1), ref.losses, color="tab:blue", linewidth=2, label="reference")
    ax.plot(range(1, len(cand.losses) + 1), cand.losses, color="tab:orange", linewidth=1.5, linestyle="--",
            label=f"candidate ({cand.use})")
    ax.set(ylabel="training loss (nats/token)", title="nanogpt compare: loss curves")
    ax.legend()
    diffs = training.diffs
    ax_diff.plot(range(1, len(diffs) + 1), diffs, color="tab:red")
    ax_diff.axhline(0, color="black", linewidth=0.5)
    if training.passed is not None:
        for sign in (1, -1):
            ax_diff.axhline(sign * training.tolerance, color="gray", linewidth=0.8, linestyle=":")
    ax_diff.set(xlabel="step", ylabel="candidate - reference")
    for a in (ax, ax_diff):
        a.grid(alpha=0.3)
    return save_figure(fig, out_path)
