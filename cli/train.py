"""`nanogpt train`: nanochat's `base_train` flags (dashes or underscores), on the built-in corpus by default.

    nanogpt train                                   # the CPU demo: ~5 minutes on 2 cores, learns visibly
    nanogpt train --depth=4 --max_seq_len=512 --device_batch_size=1 --eval_tokens=512 \\
        --core_metric_every=-1 --total_batch_size=512 --num_iterations=1      # the seed's command, verbatim
    nanogpt train --core-metric-every 500           # CORE as it trains (after `nanogpt data download core-eval`)
    nanogpt train --use student:attention           # your attention, the reference everywhere else
    nanogpt train --use student:attention --debug=inside --debug-layer 0   # the shapes inside your attention
    nanogpt train --resume runs/20250101-120000     # continue a run exactly where it stopped
    nanogpt train --log tensorboard --log wandb     # also to experiment trackers (docs/tracking.md)
    nanogpt train --data input.txt --time 5m        # the best model this machine makes in five minutes

Every default lives in `TrainSettings`; a flag left out keeps it (and, when resuming, keeps the checkpoint's value).
"""

from __future__ import annotations

import shlex
from dataclasses import fields

import click
from click.core import ParameterSource

from nanogpt_cli.errors import EXIT_INTERRUPTED, remember_debug, remember_use
from nanogpt_core.device import DEVICE_CHOICES
from nanogpt_core.train.budget import PLANNED, parse_duration
from nanogpt_core.train.distributed import Ranks
from nanogpt_core.train.loop import train
from nanogpt_core.train.run_log import format_duration
from nanogpt_core.train.settings import TrainSettings, find_resume_checkpoint, resume_settings
from nanogpt_core.train.trackers import TRACKERS

_DEFAULTS = {f.name: f.default for f in fields(TrainSettings)}


def _flag(name: str, type_, help_: str, *extra: str, **options):
    """An option spelled `--max-seq-len` and `--max_seq_len`, defaulting to TrainSettings' value (shown in help)."""
    dashed = "--" + name.replace("_", "-")
    spellings = [dashed, "--" + name] if "_" in name else [dashed]
    default = _DEFAULTS.get(name)
    shown = "" if default is None else f" [default: {default}]"
    return click.option(*spellings, *extra, name, type=type_, default=None, help=help_ + shown, **options)


OPTIONS = [
    # model
    _flag("depth", int, "Transformer layers; width = 64 x depth, heads of 128 (nanochat's sizing)."),
    _flag("max_seq_len", int, "Context length in tokens."),
    _flag("n_embd", int, "Override the width derived from --depth."),
    _flag("n_head", int, "Override the number of query heads."),
    _flag("n_kv_head", int, "Override the number of key/value heads (fewer than --n-head: grouped-query attention)."),
    _flag("vocab_size", int, "Vocabulary of the tokenizer trained for this run (tokenizer's default if omitted)."),
    _flag("use", str, "Implementations to use, e.g. 'student:attention' or 'student' (default: all reference).",
          callback=remember_use),
    # batch and horizon
    _flag("device_batch_size", int, "Sequences per forward pass on each device."),
    _flag("total_batch_size", int, "Tokens per optimizer step (gradient accumulation fills the gap)."),
    _flag("num_iterations", int, "Optimizer steps."),
    # optimisation
    _flag("embedding_lr", float, "AdamW learning rate of the token embedding."),
    _flag("unembedding_lr", float, "AdamW learning rate of the output head."),
    _flag("matrix_lr", float, "Muon learning rate of the block matrices."),
    _flag("weight_decay", float, "AdamW weight decay."),
    _flag("grad_clip", float, "Clip the gradient norm to this (0 disables)."),
    _flag("warmup_ratio", float, "Fraction of steps with linear learning-rate warm-up."),
    _flag("warmdown_ratio", float, "Fraction of steps with linear warm-down at the end."),
    _flag("final_lr_frac", float, "Learning rate at the end, as a fraction of the initial one."),
    # evaluation, samples, checkpoints
    _flag("eval_every", int, "Validation bits per byte every N steps (also at step 0 and at the end; -1: only those)."),
    _flag("eval_tokens", int, "Validation tokens per evaluation."),
    _flag("sample_every", int, "Print samples every N steps (-1: only at the end)."),
    _flag("save_every", int, "Save a checkpoint every N steps (-1: only at the end and on Ctrl-C)."),
    _flag("core_metric_every", int, "nanochat's CORE metric every N steps and at the end (-1: never; needs "
          "`nanogpt data download core-eval`)."),
    _flag("core_metric_max_per_task", int, "Items per CORE task during training (-1: all)."),
    _flag("inspect_every", int, "Save the attention grid of --inspect-prompt every N steps, at step 0 and at the end "
          "(RUN/inspect/step_XXXXXX/; -1: never). See them over time: nanogpt inspect RUN --steps."),
    _flag("inspect_prompt", str, "The prompt whose attention --inspect-every saves (default: a sentence that suits "
          "the built-in corpus)."),
    # where and how
    _flag("data", str, "Training text: a file, a folder of .txt/.md, or parquet shards (default: built-in corpus)."),
    _flag("tokenizer", str, "Use this tokenizer folder instead of training one."),
    _flag("out", str, "Run folder (default: runs/<timestamp>)."),
    _flag("seed", int, "Random seed (weights init)."),
]


def _budget_seconds(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


def _apply(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@click.command("train")
@_apply(OPTIONS)
@click.option("--device", "--device-type", "--device_type", "device", type=click.Choice(DEVICE_CHOICES),
              default=None, help="Where to train. [default: auto = cuda, then mps, then cpu]")
@click.option("--resume", default=None, metavar="DIR|auto",
              help="Continue a run: a run or checkpoint folder, or 'auto' (the --out run's, else the newest in runs/).")
@click.option("--stream/--no-stream", "stream", default=None,
              help="Read --data piece by piece in a background thread (memory and start-up time independent of its "
                   "size) or all into memory. [default: stream above 64 MB]")
@click.option("--shuffle/--no-shuffle", "shuffle", default=None,
              help="Read the documents in a new seeded order every epoch, or always in stored order. "
                   "[default: shuffle]")
@click.option("--time", "--time-budget", "time_budget", default=None, metavar="DURATION", callback=_budget_seconds,
              help="Train for this wall-clock time (90s, 5m, 1h, 1h30m): measure this machine's speed, choose the "
                   "model size, batch and steps that should reach the lowest validation loss in it (flags given are "
                   "kept), print the choice and why, and end on time.")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the model (needs a compiler).")
@click.option("--bf16/--no-bf16", "bf16", default=None,
              help="Run the forward pass under bf16 autocast (weights, gradients and optimizer state stay fp32). "
                   "[default: on a CUDA GPU with bf16; off on a CPU, where it needs bf16 instructions (AVX512-BF16, "
                   "AMX)]")
@click.option("--debug", is_flag=False, flag_value="flow", default=None, metavar="[=stats|inside|inside,stats]",
              callback=remember_debug,
              help="Trace the component calls and shapes of the run's first forward; =stats adds tensor statistics; "
                   "=inside adds, inside your own components, the shape of every tensor each statement binds.")
@click.option("--debug-layer", "--debug_layer", "debug_layer", type=click.IntRange(min=0), default=None, metavar="N",
              callback=remember_debug, help="Limit the trace to layer N (implies --debug).")
# --tracker: torchrun reads any prefix of its own options, so under torchrun `--log` is taken for its --log-dir
@click.option("--log", "--tracker", "log", multiple=True, type=click.Choice(TRACKERS),
              help="Also log to an experiment tracker (repeatable; each needs its extra, e.g. pip install "
                   "'nanogpt[tensorboard]'). Under torchrun spell it --tracker. See docs/tracking.md.")
@click.pass_context
def train_command(ctx: click.Context, compile_: bool | None, bf16: bool | None, time_budget: float | None,
                  resume: str | None, log: tuple[str, ...], **flags) -> None:
    """Train a GPT (nanochat's base_train) and save checkpoints, samples, metrics and a loss plot."""
    flags["compile"] = compile_
    flags["bf16"] = bf16
    flags["time_budget"] = time_budget
    flags["log"] = list(log) if log else None  # not given: the default (none), or a resumed run's own trackers
    explicit = {name: value for name, value in flags.items()
                if value is not None and ctx.get_parameter_source(_param(name)) is not ParameterSource.DEFAULT}
    checkpoint = find_resume_checkpoint(resume, explicit.get("out"))
    if checkpoint is not None:
        settings = resume_settings(checkpoint, explicit)
    else:
        if resume == "auto":
            click.echo("Note: --resume auto found no checkpoint to continue; starting a new run.")
        settings = TrainSettings(**explicit)
        settings.time_budget_fixed = [name for name in PLANNED if name in explicit]  # --time keeps the flags given
    try:
        result = train(settings, resume=checkpoint)
    except KeyboardInterrupt as exc:  # click would make it "Aborted." and exit 1; the shell's is 128 + the signal
        code = getattr(exc, "exit_code", EXIT_INTERRUPTED)  # 130 for Ctrl-C, 143 for SIGTERM
        if Ranks.from_env().is_main:
            click.echo("Interrupted." if code == EXIT_INTERRUPTED else "Terminated.", err=True)
        ctx.exit(code)

    if not Ranks.from_env().is_main:
        return  # under torchrun only rank 0 reports
    budget = f" of a {format_duration(settings.time_budget)} budget" if settings.time_budget else ""
    click.echo(f"Done: {result.step} steps in {result.wall_time_s:.0f}s wall{budget} ({result.train_time_s:.0f}s "
               f"training, {result.tokens_per_sec:,.0f} tok/s)" + _bpb_summary(result))
    if result.checkpoint is not None:
        click.echo(f"Checkpoint: {result.checkpoint}")
        click.echo(f"Sample it:  {shlex.join(['nanogpt', 'sample', str(result.run_dir), '--prompt', 'The'])}")


def _param(name: str) -> str:
    return "compile_" if name == "compile" else name


def _bpb_summary(result) -> str:
    if result.val_bpb is None:
        return ""
    if result.first_val_bpb is None or result.first_val_bpb == result.val_bpb:
        return f"; val bpb {result.val_bpb:.4f}"
    return f"; val bpb {result.first_val_bpb:.4f} -> {result.val_bpb:.4f}"
