"""`nanogpt experiment`: train several variants on the same data, batches and seeds; one table, one plot.

    nanogpt experiment --variant base=reference --variant swiglu=swiglu:mlp --steps 200 --seeds 3
    nanogpt experiment --variant base=reference --variant all=swiglu,layernorm,window --depth 4 --out runs/exp

Each --variant is NAME=USE (USE as for --use); the first is the baseline. Results: a table here, and
OUT/results.json, OUT/results.md and OUT/loss_curves.png, with every run's own folder under OUT/runs/.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from nanogpt_cli.errors import debug_option
from nanogpt_core.compare.experiment import (
    DEFAULT_SEEDS,
    PLOT_FILE,
    RESULTS_JSON,
    RESULTS_MD,
    ExperimentResult,
    parse_variants,
    run_experiment,
)
from nanogpt_core.device import DEVICE_CHOICES


@click.command("experiment")
@click.option("--variant", "variants", multiple=True, required=True, metavar="NAME=USE",
              help="A variant to train, e.g. base=reference or swiglu=swiglu:mlp (repeat; the first is the baseline).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=1), help="Training steps per run.")
@click.option("--seeds", default=DEFAULT_SEEDS, show_default=True, type=click.IntRange(min=1),
              help="Runs per variant, with seeds 0..N-1 (the same seeds for every variant).")
@click.option("--out", default=None, help="Experiment folder (default: runs/experiment-<timestamp>).")
@click.option("--depth", type=int, default=None, help="Transformer layers (as nanogpt train). [default: 2]")
@click.option("--max-seq-len", "--max_seq_len", "max_seq_len", type=int, default=None, help="Context length.")
@click.option("--device-batch-size", "--device_batch_size", "device_batch_size", type=int, default=None,
              help="Sequences per forward pass.")
@click.option("--total-batch-size", "--total_batch_size", "total_batch_size", type=int, default=None,
              help="Tokens per optimizer step.")
@click.option("--eval-tokens", "--eval_tokens", "eval_tokens", type=int, default=None,
              help="Validation tokens for the final bits per byte.")
@click.option("--data", default=None, help="Training text (default: the built-in corpus).")
@click.option("--tokenizer", default=None, help="A tokenizer folder (default: trained once by the first run).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=None, help="Where to train. [default: auto]")
@click.option("--check/--no-check", default=True, show_default=True,
              help="First run the contract checks that apply to a different design; refuse a variant that fails.")
@debug_option
def experiment_command(variants: tuple[str, ...], steps: int, seeds: int, out: str | None, check: bool,
                       **flags) -> None:
    """Train variants side by side (same data, batches, seeds) and compare val bpb, speed, size and memory."""
    settings = {name: value for name, value in flags.items() if value is not None}
    chosen = parse_variants(variants)
    console = Console(width=max(120, Console().width))  # the table never wraps its numbers
    with console.status("starting…") as status:
        result = run_experiment(chosen, steps, seeds, out=out, check=check,
                                progress=lambda m: status.update(m.strip()), **settings)
    render(result, console)


def render(result: ExperimentResult, console: Console) -> None:
    table = Table(title=f"nanogpt experiment: {len(result.seeds)} seed(s) x {result.steps} steps on {result.device}")
    rows = result.rows()
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("variant", "use") else "right")
    for row in rows:
        table.add_row(*(Text(str(v)) for v in row.values()))  # variant names are the user's: no markup
    console.print(table)
    console.print("val bpb: final validation bits per byte, mean ± sample std over seeds (lower is better); "
                  f"Δ against '{escape(result.baseline.name)}'.", style="dim")
    out = result.out_dir
    console.print(Text(f"Results: {out}/{RESULTS_MD}, {out}/{RESULTS_JSON}; loss curves: {out}/{PLOT_FILE}"))
