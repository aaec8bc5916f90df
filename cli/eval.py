"""`nanogpt eval RUN_OR_CHECKPOINT --core [--bpb]`: how good is this checkpoint, in the numbers nanochat reports.

    nanogpt data download core-eval                       # once: nanochat's eval bundle (DCLM's 22 tasks)
    nanogpt eval runs/20250101-120000 --core              # the CORE metric, task by task, and the mean
    nanogpt eval runs/20250101-120000 --core --max-per-task 100 --bpb --json
    torchrun --standalone --nproc_per_node=8 -m nanogpt_cli eval RUN --core   # items split over 8 GPUs

CORE is nanochat's `base_eval` (see docs/evaluation.md for what it measures and what to expect); --bpb is the
validation bits per byte as the run's training reports it (its own validation documents, loader and batch).
"""

from __future__ import annotations

import json

import click

from nanogpt_cli.errors import debug_option, remember_use
from nanogpt_core.device import DEVICE_CHOICES, autocast_context, resolve_device
from nanogpt_core.errors import CheckpointError
from nanogpt_core.evals import TaskResult, evaluate_core, load_bundle
from nanogpt_core.evals.bundle import CORE_DATASET
from nanogpt_core.evals.core import DEFAULT_BATCH_TOKENS
from nanogpt_core.io.checkpoint import load_model
from nanogpt_core.train.bpb import validation_bpb, validation_tokens
from nanogpt_core.train.distributed import Ranks, process_group, rank_device
from nanogpt_core.train.settings import TrainSettings

# What the numbers mean at scale (docs/evaluation.md): printed under the table so a small number is not read as a bug.
FOR_SCALE = ("For scale: random guessing scores 0; OpenAI's GPT-2 (1.5B) 0.2565; nanochat's d20 (561M) 0.2219 and "
             "d26 0.2578. A CPU demo model scores about 0 (see docs/evaluation.md).")


@click.command("eval")
@click.argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
@click.option("--core", is_flag=True, help="nanochat's CORE metric on the eval bundle (DCLM's tasks).")
@click.option("--bpb", is_flag=True, help="Validation bits per byte, as the run's training reports it.")
@click.option("--max-per-task", "--max_per_task", "max_per_task", type=int, default=-1, show_default=True,
              help="Items per CORE task (-1: all); the same subsample nanochat takes.")
@click.option("--bundle", type=click.Path(file_okay=False), default=None,
              help=f"The eval bundle folder (default: `nanogpt data download {CORE_DATASET}`'s, else nanochat's).")
@click.option("--batch-tokens", type=int, default=None,
              help="Tokens per forward pass (default: the run's device batch x context).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option("--use", default=None, callback=remember_use,
              help="Swap implementations at load time, e.g. 'student:attention'.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@debug_option
def eval_command(checkpoint: str, core: bool, bpb: bool, max_per_task: int, bundle: str | None,
                 batch_tokens: int | None, as_json: bool, use: str | None, device: str) -> None:
    """Evaluate a checkpoint: the CORE metric (--core) and/or validation bits per byte (--bpb)."""
    if not (core or bpb):
        raise click.UsageError("say what to evaluate: --core (the CORE metric) and/or --bpb (validation bits per "
                               "byte).")
    if batch_tokens is not None and batch_tokens < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch-tokens")
    core_bundle = load_bundle(bundle) if core else None  # before the model: a missing bundle fails in a second
    ranks = Ranks.from_env()
    dev = rank_device(resolve_device(device), ranks)
    say = (lambda line: click.echo(line, err=True)) if ranks.is_main else (lambda line: None)
    with process_group(ranks, dev):
        model, tokenizer, meta = load_model(checkpoint, use=use, device=dev)
        saved = meta["state"].get("settings")
        settings = TrainSettings.from_dict(saved) if isinstance(saved, dict) else None
        report = {"checkpoint": meta["path"], "step": meta["step"], "core": None, "val_bpb": None}
        if bpb:
            if settings is None:
                raise CheckpointError(f"{meta['path']} records no training settings, so which text it was "
                                      f"validated on is unknown; --bpb needs a checkpoint of `nanogpt train`.")
            val = validation_tokens(settings, tokenizer)
            report["val_bpb"] = validation_bpb(model, val, settings, ranks, dev, tokenizer.token_bytes())
            say(f"val bpb: {report['val_bpb']:.4f} ({settings.data or 'built-in corpus'}, "
                f"{settings.eval_tokens:,} tokens)")
        if core_bundle is not None:
            if batch_tokens is None:
                batch_tokens = (settings.device_batch_size * settings.max_seq_len if settings is not None
                                else DEFAULT_BATCH_TOKENS)
            say(f"CORE: {len(core_bundle.tasks)} tasks of {core_bundle.folder}, "
                f"{'all' if max_per_task <= 0 else f'up to {max_per_task}'} items each")
            with autocast_context(dev):
                result = evaluate_core(model, tokenizer, core_bundle, max_per_task=max_per_task,
                                       batch_tokens=batch_tokens, on_task=lambda t: say(_task_line(t)))
            report["core"] = result.to_dict()
    if not ranks.is_main:
        return
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{meta['path']} (step {meta['step']})")
    if report["val_bpb"] is not None:
        click.echo(f"val bpb {report['val_bpb']:.4f}")
    if report["core"] is not None:
        click.echo(_table(result.tasks, result.core))
        click.echo(FOR_SCALE)


def _task_line(t: TaskResult) -> str:
    return (f"{t.label} ({t.num_fewshot}-shot, {t.task_type}): accuracy {t.accuracy:.4f} | centered "
            f"{t.centered:.4f} | {t.correct}/{t.items} items | {t.seconds:.1f}s")


def _table(tasks: list[TaskResult], core: float) -> str:
    width = max(len("task"), *(len(t.label) for t in tasks))
    lines = [f"{'task':<{width}}  {'type':<17}  shots  items  random  accuracy  centered"]
    for t in tasks:
        lines.append(f"{t.label:<{width}}  {t.task_type:<17}  {t.num_fewshot:>5}  {t.items:>5}  "
                     f"{t.random_baseline:>5.1f}%  {t.accuracy:>8.4f}  {t.centered:>8.4f}")
    lines.append(f"{'CORE (mean centred accuracy)':<{width + 51}}  {core:>8.4f}")
    return "\n".join(lines)
