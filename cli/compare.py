"""`nanogpt compare`: your components against the reference — in isolation, by probes, and training side by side."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from nanogpt_cli.errors import debug_option, invocation_debug, remember_use
from nanogpt_cli.interop import pretrained_compare_command
from nanogpt_core.compare import Report, compare
from nanogpt_core.compare.curves import DATA_CHOICES, every, sparkline
from nanogpt_core.compare.plot import plot_comparison

STYLE = {"pass": "bold green", "fail": "bold red", "not implemented": "bold yellow", "skipped": "dim"}


@click.command("compare")
@click.option("--use", "use", default="student", show_default=True, callback=remember_use,
              help="The candidate: 'student:attention,student:mlp', or a whole set like 'student'.")
@click.option("--steps", default=50, show_default=True, type=click.IntRange(min=0),
              help="Training steps of the side-by-side run (0 skips training).")
@click.option("--device", default="auto", show_default=True, help="Where to train: auto, cpu, cuda, mps.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the whole report as JSON to this file ('-' prints JSON instead of the tables).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the overlaid loss curves to this PNG.")
@click.option("--data", type=click.Choice(DATA_CHOICES), default="corpus", show_default=True,
              help="Training text: the built-in corpus (as bytes) or a synthetic token stream.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--checkpoint", default=None, metavar="CKPT",
              help="Compare inside a trained or imported model (e.g. a nanochat import): its weights assembled "
                   "all-reference and with --use, logits difference and greedy text side by side "
                   "(`nanogpt pretrained-compare` has the prompt and tolerance options).")
@click.option("--design", is_flag=True,
              help="The candidate is a different design (an experiment such as swiglu:mlp), not a re-implementation: "
                   "no equality verdict, only the checks that still apply, the loss curves, speed and memory.")
@debug_option
def compare_command(use: str, steps: int, device: str, json_path: str | None, plot_path: str | None, data: str,
                    batch_size: int, seed: int, checkpoint: str | None, design: bool) -> int:
    """Compare components with the reference and give a verdict per component.

    Exit code 0 when everything passes, 1 when anything fails, 3 when a component is not implemented yet.
    """
    if checkpoint:
        return click.get_current_context().invoke(pretrained_compare_command, checkpoint=checkpoint, use=use,
                                                  device=device, as_json=json_path == "-")
    quiet = json_path == "-"
    console = Console(stderr=quiet)
    with console.status("comparing…") as status:
        report = compare(use, steps=steps, device=device, seed=seed, batch_size=batch_size, data=data,
                         mode="design" if design else "equal", progress=lambda message: status.update(message + "…"))
    if plot_path and report.training is not None:
        plot_comparison(report.training, plot_path)
    if json_path == "-":
        click.echo(json.dumps(report.to_dict(), indent=2))
        return report.exit_code
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    render(report, console, debug=invocation_debug())
    if plot_path and report.training is not None:
        console.print(Text(f"loss curves: {plot_path}"))
    return report.exit_code


def render(report: Report, console: Console, debug: bool = False) -> None:
    """The report as tables and lines. Every string that comes from a component, a check or a user (details,
    source lines, paths) is escaped: rich would read `[y1, y2]` in `torch.cat([y1, y2], 3)` as markup and drop it."""
    cc = report.check_config
    console.print(f"[bold]nanogpt compare[/bold] {escape(report.use_spec)} vs reference  (mode: {report.mode}; checks "
                  f"on n_layer={cc['n_layer']} n_embd={cc['n_embd']} n_head={cc['n_head']}/{cc['n_kv_head']} kv)")
    table = Table()
    for col in ("component", "verdict", "diagnosis", "isolation (worst / its tolerance)"):
        table.add_column(col, overflow="fold")
    for v in report.components:
        iso = v.isolation
        iso_text = ""
        if iso is not None and iso.numbers.get("tensors"):
            worst = max(iso.numbers["tensors"].values(), key=lambda t: t["rel"] / max(t.get("tolerance", 0), 1e-300))
            iso_text = f"{worst['rel']:.1e} / {worst.get('tolerance', iso.numbers['tolerance']):.1e}"
        elif iso is not None:
            iso_text = iso.status
        diagnosis = (v.detail.split(" — ")[0].replace("Implement ", "") if v.status == "not implemented"
                     else v.diagnosis)
        table.add_row(Text(f"{v.impl_set}:{v.component}"), Text(v.status, style=STYLE.get(v.status, "")),
                      Text(diagnosis), iso_text)
    console.print(table)
    for v in report.components:
        if v.status == "fail":
            console.print(f"[red]✗ {v.component}[/red]: [bold]{escape(v.diagnosis)}[/bold] — {escape(v.detail)}")
            if v.where:
                console.print(f"    [bold]where:[/bold] {escape(v.where)}")
            console.print(f"    [bold]fix:[/bold] {escape(v.next_step)}")
            failing = [c for c in [*v.checks, *([v.isolation] if v.isolation else [])]
                       if c.passed is False and c.diagnosis != v.diagnosis]
            for c in failing[:3]:
                detail = c.detail if len(c.detail) <= 200 else c.detail[:200] + "… (--json has it all)"
                console.print(f"    also {escape(c.name)} ({escape(c.diagnosis)}): {escape(detail)}")
            if debug:
                for c in [*v.checks, *([v.isolation] if v.isolation else [])]:
                    if c.traceback:
                        console.print(Text(c.traceback))
        elif v.status == "not implemented":
            console.print(f"[yellow]… {v.component}[/yellow]: {escape(v.detail)}")
    if report.not_implemented:
        first = report.verdict(report.not_implemented[0])
        console.print(f"    [bold]next:[/bold] implement it, then run: nanogpt compare --use "
                      f"{escape(first.impl_set)}:{first.component}")
    if report.probes:
        probes = Table(title="probes of the assembled model", show_header=True)
        for col in ("probe", "result", "detail"):
            probes.add_column(col, overflow="fold")
        for p in report.probes:
            label = p.status if p.passed is not False else f"fail: {p.diagnosis}"
            probes.add_row(Text(p.name), Text(label, style=STYLE.get(p.status, "")), Text(p.detail))
        console.print(probes)
    if report.training is not None:
        render_training(report, console)
    for note in report.notes:
        console.print(Text(f"note: {note}", style="dim"))
    if report.failed:
        console.print(f"[bold red]FAIL[/bold red]: {escape(', '.join(report.failed))}  ({report.elapsed_s:.1f} s)")
    elif report.not_implemented:
        console.print(f"[bold yellow]NOT IMPLEMENTED[/bold yellow]: {', '.join(report.not_implemented)}  "
                      f"({report.elapsed_s:.1f} s)")
    else:
        console.print(f"[bold green]PASS[/bold green]  ({report.elapsed_s:.1f} s)")


def render_training(report: Report, console: Console) -> None:
    t = report.training
    table = Table(title=f"training: {t.steps} steps, batch {t.batch_size} x {t.seq_len} tokens ({t.data}) on "
                  f"{report.device}")
    for col in ("step", "reference", "candidate", "difference"):
        table.add_column(col, justify="right")
    diffs = t.diffs
    for step, ref in every(t.reference.losses, 10):
        cand = t.candidate.losses[step] if step < len(t.candidate.losses) else float("nan")
        diff = diffs[step] if step < len(diffs) else float("nan")
        table.add_row(str(step + 1), f"{ref:.4f}", f"{cand:.4f}", f"{diff:+.2e}")
    console.print(table)
    console.print(f"  reference  {sparkline(t.reference.losses)}")
    console.print(f"  candidate  {sparkline(t.candidate.losses)}")
    verdict = {True: "[green]within[/green]", False: "[red]beyond[/red]", None: "(no verdict in this mode)"}
    within = "" if t.passed is None else f", {verdict[t.passed]} tolerance {t.tolerance:.0e}"
    console.print(f"  max |loss difference| {t.max_abs_diff:.2e}{within}"
                  + ("" if t.candidate.shared_weights else " (candidate starts from its own init)"))
    peak = f", peak GPU memory x{t.peak_memory_ratio:.2f}" if t.peak_memory_ratio else ""
    console.print(f"  speed x{t.speed_ratio:.2f} of the reference ({t.candidate.tokens_per_s:,.0f} vs "
                  f"{t.reference.tokens_per_s:,.0f} tokens/s), activation memory x{t.memory_ratio:.2f}{peak} "
                  f"[dim](informational, never a verdict)[/dim]")
