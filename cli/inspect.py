"""`nanogpt inspect RUN`: look inside a trained model on one prompt — attention maps, the logit lens, per-layer numbers.

    nanogpt inspect runs/demo --prompt "The function returns"          # attention.png, logit_lens.png, tables
    nanogpt inspect runs/demo --use student:attention --against reference   # your attention beside the reference's
    nanogpt inspect runs/demo --steps                                  # the grids saved by --inspect-every, over time

RUN is a run folder (its latest checkpoint) or one checkpoint folder. The pictures go to RUN/inspect/ (or --out).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nanogpt_cli.errors import debug_option, remember_use
from nanogpt_cli.sample import _show_library_warnings
from nanogpt_core.device import DEVICE_CHOICES
from nanogpt_core.inspection.pictures import token_label
from nanogpt_core.inspection.report import DEFAULT_PROMPT, MAX_LENS_POSITIONS, Inspection, inspect_prompt
from nanogpt_core.inspection.snapshots import INSPECT_DIR, draw_steps
from nanogpt_core.io.checkpoint import load_model, resolve_checkpoint, run_dir_of


@click.command("inspect")
@click.argument("run", metavar="RUN_OR_CHECKPOINT")
@click.option("--prompt", default=None, help=f"The text to look at (after <|bos|>). [default: {DEFAULT_PROMPT!r}, "
              f"cut to the model's context]")
@click.option("--use", default=None, callback=remember_use,
              help="Assemble the weights from these implementations, e.g. 'student:attention' (default: the run's).")
@click.option("--against", default=None, metavar="SPEC",
              help="Also run the same weights through this set (e.g. 'reference') and draw both attention maps "
                   "with their difference.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Folder for the pictures and inspect.json [default: RUN/inspect].")
@click.option("--steps", is_flag=True,
              help="Only draw the attention grids `train --inspect-every` saved, one column per step (steps.png).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@debug_option
def inspect_command(run: str, prompt: str | None, use: str | None, against: str | None, out: str | None, steps: bool,
                    device: str) -> None:
    """Draw a trained model's attention and logit lens on a prompt, and print what each layer does."""
    console = Console(width=max(100, Console().width), highlight=False)
    if steps:
        run_dir = _run_dir(run)
        path, shown = draw_steps(run_dir, Path(out) / "steps.png" if out else None)
        console.print(f"Attention over {len(shown)} saved steps ({', '.join(str(s.step) for s in shown)}): {path}")
        return
    _show_library_warnings()
    model, tokenizer, meta = load_model(run, use=use, device=device)
    other = load_model(run, use=against, device=device)[0] if against is not None else None
    checkpoint = Path(meta["path"])
    out_dir = Path(out) if out else run_dir_of(checkpoint) / INSPECT_DIR
    result = inspect_prompt(model, tokenizer, prompt, out_dir, against=other,
                            title=f"{run_dir_of(checkpoint).name} step {meta['step']}")
    console.print(f"[bold]nanogpt inspect[/bold] {escape(str(checkpoint))} (step {meta['step']}, "
                  f"{escape(result.use_spec)}) · {len(result.tokens)} tokens with <|bos|>")
    render(result, tokenizer, console)


def _run_dir(run: str) -> Path:
    path = Path(run)
    if (path / INSPECT_DIR).is_dir():
        return path
    return run_dir_of(resolve_checkpoint(path))


def render(result: Inspection, tokenizer, console: Console) -> None:
    """The logit-lens table, the per-layer table, the comparison (with --against) and where the pictures are."""
    lens = result.lens
    console.print("[bold]Logit lens[/]: the top next-token guess read from each residual stream (its probability)")
    table = Table()
    for column in ("pos", "token", "next", *lens.rows):
        table.add_column(column, overflow="fold")
    T = len(result.tokens)
    for t in range(max(0, T - MAX_LENS_POSITIONS), T):
        real = result.tokens[t + 1] if t + 1 < T else None
        cells = []
        for r in range(len(lens.rows)):
            guess = int(lens.top_ids[r, t])
            text = f"{escape(token_label(tokenizer.decode([guess]), 12))} [dim]{lens.top_probs[r, t].item():.2f}[/]"
            cells.append(f"[bold green]{text}[/]" if guess == real else text)
        nxt = escape(token_label(result.labels[t + 1], 12)) if real is not None else "[dim]?[/]"
        table.add_row(str(t), escape(token_label(result.labels[t], 12)), nxt, *cells)
    console.print(table)
    console.print("[dim]green: the guess is the token that really comes next.[/]")

    console.print("[bold]Per layer[/]")
    layers = Table()
    uniform = next((s.uniform_entropy for s in result.stats if s.uniform_entropy is not None), None)
    entropy_title = "attention entropy per head, nats" + (f" (uniform: {uniform:.2f})" if uniform is not None else "")
    for column in ("layer", "residual RMS in → out", entropy_title, "MLP hidden units = 0"):
        layers.add_column(column)
    for s in result.stats:
        entropy = "-" if s.attn_entropy is None else "  ".join(f"{e:.2f}" for e in s.attn_entropy)
        zeros = "-" if s.mlp_zero_fraction is None else f"{100 * s.mlp_zero_fraction:.1f}%"
        layers.add_row(str(s.layer), f"{s.resid_rms_in:.3g} → {s.resid_rms_out:.3g}", entropy, zeros)
    console.print(layers)

    if result.against is not None:
        a = result.against
        console.print(f"[bold]{escape(result.use_spec)} against {escape(a.use_spec)}[/], same weights")
        if a.pattern_diff is not None:
            diff = Table()
            diff.add_column("layer")
            diff.add_column("max |attention weight difference| per head")
            for i, heads in enumerate(a.pattern_diff):
                diff.add_row(str(i), "  ".join(f"{d:.2g}" for d in heads))
            console.print(diff)
        console.print(f"logits max |difference|: {a.logits_max_diff:.3g}")

    for name, reason in result.cache.missing.items():
        console.print(f"[yellow]not captured[/] {name}: {escape(reason)}")
    if result.against is not None:
        for name, reason in result.against.cache.missing.items():
            console.print(f"[yellow]not captured[/] ({escape(result.against.use_spec)}) {name}: {escape(reason)}")
    for what, path in result.files.items():
        console.print(f"{what:>10}: {escape(str(path))}")
