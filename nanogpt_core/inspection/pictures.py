"""The pictures of `nanogpt inspect`: attention grids, yours against another set, the logit lens, heads over time.

Every picture is drawn for a reader who has not seen it before: a title that says what it shows and for which
model, the prompt's tokens on the axes when they fit, one colour scale per picture with its colorbar and units.
Attention uses a white-to-blue scale fixed at 0..1, so a weight means the same in every cell, every picture and
every step; a difference uses a red-blue scale centred on 0. Drawn with matplotlib's Agg backend (no display) and
written atomically (`nanogpt_core.files.save_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from nanogpt_core.files import save_figure
from nanogpt_core.inspection.lens import LogitLens

ATTENTION_CMAP = "Blues"
DIFF_CMAP = "RdBu_r"
LENS_CMAP = "Greens"
MAX_LABELLED_TOKENS = 24  # above this, token strings on the axes overlap: positions are numbered instead
MIN_DIFF_SCALE = 0.01  # the difference scale spans at least ±0.01, so rounding noise (~1e-7) stays white
LABEL_CHARS = 10


def _pyplot():
    import matplotlib  # late: matplotlib costs a second to import, and most commands draw nothing

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


VISIBLE = {" ": "·", "\n": "↵", "\t": "⇥"}


def token_label(text: str, width: int = LABEL_CHARS) -> str:
    """A token's text as an axis label: spaces as '·', newlines as '↵', other unprintable characters escaped
    (\\x00), so ' the' and 'the' look different and no glyph is missing from the font."""
    shown = "".join(VISIBLE.get(ch, ch if ch.isprintable() else ascii(ch)[1:-1]) for ch in text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _cell_inches(tokens: int) -> float:
    return 2.6 if tokens <= 10 else min(6.0, 1.2 + 0.2 * tokens)


def _token_axes(ax, labels: Sequence[str] | None, tokens: int, fontsize: float = 7, y: bool = True) -> None:
    if labels is not None and tokens <= MAX_LABELLED_TOKENS:
        ax.set_xticks(range(tokens), [token_label(t) for t in labels], rotation=90, fontsize=fontsize)
        ax.set_yticks(range(tokens), [token_label(t) for t in labels] if y else [], fontsize=fontsize)
    else:
        ax.tick_params(labelsize=fontsize)
        if not y:
            ax.set_yticklabels([])


def _panels(plt, rows: int, cols: int, cell: float, extra_width: float = 1.4, extra_height: float = 1.0):
    """A figure of rows x cols square panels, laid out by matplotlib's constrained layout (titles, suptitle and
    the colorbars shared by several panels each get their room)."""
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + extra_width, cell * rows + extra_height), squeeze=False,
                             layout="constrained")
    return fig, axes


def _bar_shrink(rows: int) -> float:
    """A colorbar about two panels tall: the whole height for one or two rows, a third of it for eight."""
    return max(0.3, min(0.9, 2.5 / rows))


def draw_attention(patterns: Sequence[torch.Tensor], labels: Sequence[str] | None, title: str, path: str | Path,
                   entropies: Sequence[Sequence[float]] | None = None) -> Path:
    """attention.png: one panel per layer (rows) and head (columns), each (T, T) with queries down, keys across.

    `patterns[i]` is layer i's (H, T, T) for one sequence; `entropies[i][h]` (nats) is added to the panel title."""
    plt = _pyplot()
    n_layer, n_head, T = len(patterns), patterns[0].size(0), patterns[0].size(-1)
    fig, panels = _panels(plt, n_layer, n_head, _cell_inches(T))
    image = None
    for i, layer in enumerate(patterns):
        for h in range(n_head):
            ax = panels[i][h]
            image = ax.imshow(layer[h].float().cpu().numpy(), cmap=ATTENTION_CMAP, vmin=0.0, vmax=1.0)
            entropy = f" · entropy {entropies[i][h]:.2f} nats" if entropies is not None else ""
            ax.set_title(f"layer {i}, head {h}{entropy}", fontsize=9)
            _token_axes(ax, labels, T, y=h == 0)
            if h == 0:
                ax.set_ylabel("query (attending)", fontsize=8)
            if i == n_layer - 1:
                ax.set_xlabel("key (attended to)", fontsize=8)
    fig.colorbar(image, ax=panels, shrink=_bar_shrink(n_layer), label="attention weight (each row sums to 1)")
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def draw_attention_against(mine: Sequence[torch.Tensor], theirs: Sequence[torch.Tensor], labels: Sequence[str] | None,
                           names: tuple[str, str], title: str, path: str | Path) -> Path:
    """One row per (layer, head): the pattern of `names[0]`, that of `names[1]` and their difference, side by side.

    The difference's colour scale is symmetric, ±max |difference| (at least ±MIN_DIFF_SCALE), printed in each title."""
    plt = _pyplot()
    n_layer, n_head, T = len(mine), mine[0].size(0), mine[0].size(-1)
    diffs = [(a.float() - b.float()).cpu() for a, b in zip(mine, theirs)]
    scale = max(MIN_DIFF_SCALE, max(d.abs().max().item() for d in diffs))
    rows = n_layer * n_head
    fig, panels = _panels(plt, rows, 3, _cell_inches(T), extra_width=2.4)
    attention_image = diff_image = None
    for i in range(n_layer):
        for h in range(n_head):
            r = i * n_head + h
            for c, (pattern, who) in enumerate(((mine[i][h], names[0]), (theirs[i][h], names[1]))):
                ax = panels[r][c]
                attention_image = ax.imshow(pattern.float().cpu().numpy(), cmap=ATTENTION_CMAP, vmin=0, vmax=1)
                ax.set_title(f"{who}\nlayer {i}, head {h}", fontsize=9)
                _token_axes(ax, labels, T, y=c == 0)
            ax = panels[r][2]
            d = diffs[i][h]
            diff_image = ax.imshow(d.numpy(), cmap=DIFF_CMAP, vmin=-scale, vmax=scale)
            ax.set_title(f"{names[0]} − {names[1]}\nmax |diff| {d.abs().max().item():.2g}", fontsize=9)
            _token_axes(ax, labels, T, y=False)
            panels[r][0].set_ylabel("query", fontsize=8)
    for c in range(3):
        panels[-1][c].set_xlabel("key", fontsize=8)
    # both at the right of the grid, the difference's nearest its column (one beside some columns of a grid would
    # sit between them; one below them loses its label to constrained layout)
    fig.colorbar(attention_image, ax=panels, shrink=_bar_shrink(rows), label="attention weight")
    fig.colorbar(diff_image, ax=panels, shrink=_bar_shrink(rows), label="difference of weights")
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def draw_logit_lens(lens: LogitLens, ids: Sequence[int], decode, title: str, path: str | Path) -> Path:
    """logit_lens.png: rows are the residual streams (embedding at the top, the last block at the bottom), columns
    the input positions `ids`; each cell is the top next-token guess (`decode(id)` its text), coloured by its
    probability, in bold with a frame where it is the token that really comes next."""
    plt = _pyplot()
    R, T = lens.top_ids.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 1.05 * T + 2.5), 0.55 * R + 2.6), layout="constrained")
    image = ax.imshow(lens.top_probs.numpy(), cmap=LENS_CMAP, vmin=0.0, vmax=1.0, aspect="auto")
    labels = [decode(int(i)) for i in ids]
    real_next = labels[1:] + [""]
    for r in range(R):
        for t in range(T):
            guess = decode(int(lens.top_ids[r, t]))
            right = t < T - 1 and int(lens.top_ids[r, t]) == int(ids[t + 1])
            dark = lens.top_probs[r, t].item() > 0.6
            ax.text(t, r, token_label(guess, 8), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black", fontweight="bold" if right else "normal")
            if right:
                ax.add_patch(plt.Rectangle((t - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="tab:orange", lw=2))
    rotation = 0 if T <= 12 else 90  # up to 12 columns a label fits across its cell
    ax.set_yticks(range(R), lens.rows, fontsize=8)
    ax.set_xticks(range(T), [token_label(t) for t in labels], rotation=rotation, fontsize=8)
    ax.set_xlabel("input token at each position")
    ax.set_ylabel("residual stream read")
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(T), [token_label(t) for t in real_next], rotation=rotation, fontsize=8)
    top.set_xlabel("token that really comes next (framed where a layer guesses it)", fontsize=8)
    fig.colorbar(image, ax=ax, label="probability of the top guess", fraction=0.04)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def draw_attention_over_steps(steps: Sequence[int], patterns: Sequence[Sequence[torch.Tensor]],
                              labels: Sequence[str] | None, title: str, path: str | Path) -> Path:
    """steps.png: one row per (layer, head), one column per saved step, so a head can be watched as it forms.

    `patterns[s][i]` is layer i's (H, T, T) at `steps[s]`."""
    plt = _pyplot()
    n_layer, n_head, T = len(patterns[0]), patterns[0][0].size(0), patterns[0][0].size(-1)
    rows = n_layer * n_head
    fig, panels = _panels(plt, rows, len(steps), min(2.4, _cell_inches(T)))
    image = None
    for s, (step, layers) in enumerate(zip(steps, patterns)):
        for i in range(n_layer):
            for h in range(n_head):
                ax = panels[i * n_head + h][s]
                image = ax.imshow(layers[i][h].float().cpu().numpy(), cmap=ATTENTION_CMAP, vmin=0, vmax=1)
                if i == 0 and h == 0:
                    ax.set_title(f"step {step}", fontsize=10)
                if s == 0:
                    ax.set_ylabel(f"layer {i}, head {h}", fontsize=9)
                _token_axes(ax, labels if T <= 12 else None, T, fontsize=6, y=s == 0)
    fig.colorbar(image, ax=panels, shrink=_bar_shrink(rows), label="attention weight")
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
