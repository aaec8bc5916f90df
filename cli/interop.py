"""`nanogpt import`/`export` (nanochat, hf) and `nanogpt pretrained-compare`: models from and for other codebases.

    nanogpt import nanochat ~/.cache/nanochat/base_checkpoints/d20 runs/d20      # nanochat -> nanogpt
    nanogpt sample runs/d20 --prompt "The capital of France is" --use student:attention
    nanogpt pretrained-compare runs/d20 --use student:attention                 # your part inside the real model
    nanogpt export nanochat runs/d20 out/d20                                     # nanogpt -> nanochat
    nanogpt export hf runs/demo out/demo-hf                                      # nanogpt -> transformers' NanoChat
    nanogpt import hf out/demo-hf runs/from-hf                                   # transformers' NanoChat -> nanogpt

See docs/nanochat.md and docs/huggingface.md for where models come from and what is supported.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from nanogpt_cli.errors import debug_option, remember_use
from nanogpt_core.compare.pretrained import DEFAULT_TOLERANCE, PretrainedComparison, compare_in_pretrained
from nanogpt_core.device import DEVICE_CHOICES
from nanogpt_core.io.checkpoint import load_checkpoint
from nanogpt_core.io.huggingface import TransformersAgreement, export_hf, import_hf
from nanogpt_core.io.nanochat import SUPPORTED_NANOCHAT, export_nanochat, import_nanochat
from nanogpt_core.train.sampling import SAMPLE_MAX_TOKENS, SAMPLE_PROMPTS


@click.group("import")
def import_group() -> None:
    """Convert a checkpoint from another codebase into a nanogpt run folder."""


@import_group.command("nanochat")
@click.argument("src_dir", metavar="SRC_DIR", type=click.Path(exists=True))
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False))
@click.option("--step", type=click.IntRange(min=0), default=None, help="Which saved step (default: the newest).")
@click.option("--tokenizer", "tokenizer_dir", type=click.Path(file_okay=False), default=None,
              help="Folder with tokenizer.pkl (default: SRC_DIR/tokenizer, SRC_DIR, or SRC_DIR/../../tokenizer).")
@debug_option
def import_nanochat_command(src_dir: str, out_dir: str, step: int | None, tokenizer_dir: str | None) -> None:
    """Import a nanochat checkpoint (model_N.pt + meta_N.json + tokenizer.pkl) into OUT_DIR.

    Reads tensors with torch.load(weights_only=True) and the tokenizer pickle with a restricted unpickler: nothing in
    the files is executed. Supported: the first nanochat release's GPT (October 2025).
    """
    folder = import_nanochat(src_dir, out_dir, step=step, tokenizer_dir=tokenizer_dir)
    ckpt = load_checkpoint(folder, load_optimizer=False)
    c = ckpt.config
    params = sum(t.numel() for t in ckpt.model_state.values())
    imported = ckpt.state.get("imported_from", {})
    click.echo(f"imported nanochat step {ckpt.step}: {params:,} parameters, n_layer={c.n_layer} n_embd={c.n_embd} "
               f"n_head={c.n_head}/{c.n_kv_head} kv, vocab {c.vocab_size}, context {c.sequence_len}")
    click.echo(f"tokenizer from {imported.get('tokenizer')}")
    if imported.get("upcast_to_float32"):
        click.echo(f"widened to float32 (exact): {', '.join(imported['upcast_to_float32'])}")
    click.echo(f"wrote {folder}")
    click.echo(f"next: nanogpt sample {out_dir} --prompt 'The capital of France is'   "
               f"(add --use student:attention to run your part)")


@import_group.command("hf")
@click.argument("src_dir", metavar="SRC_DIR", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False))
@debug_option
def import_hf_command(src_dir: str, out_dir: str) -> None:
    """Import a Hugging Face transformers NanoChat folder (config.json, model.safetensors, tokenizer.json).

    Reads JSON and safetensors only: nothing in the folder is unpickled or run. The imported model is compared with
    transformers' own NanoChat on fixed tokens before it is saved. Needs the [hf] extra.
    """
    folder, agreement = import_hf(src_dir, out_dir)
    ckpt = load_checkpoint(folder, load_optimizer=False)
    c = ckpt.config
    params = sum(t.numel() for t in ckpt.model_state.values())
    click.echo(f"imported {src_dir}: {params:,} parameters, n_layer={c.n_layer} n_embd={c.n_embd} "
               f"n_head={c.n_head}/{c.n_kv_head} kv, vocab {c.vocab_size}, context {c.sequence_len}")
    upcast = ckpt.state.get("imported_from", {}).get("upcast_to_float32")
    if upcast:
        click.echo(f"widened to float32 (exact): {len(upcast)} tensors ({upcast[0]}, ...)")
    click.echo(_agreement_line("checked against transformers' NanoChat", agreement))
    click.echo(f"wrote {folder}")
    click.echo(f"next: nanogpt sample {out_dir} --prompt 'The capital of France is'")


def _agreement_line(lead: str, agreement: TransformersAgreement) -> str:
    return (f"{lead}: max |logit difference| {agreement.reference:.1e} on {agreement.positions} positions "
            f"(nanochat's bfloat16 rotary table; {agreement.exact:.1e} given transformers' float32 table)")


@click.group("export")
def export_group() -> None:
    """Write a nanogpt checkpoint in another codebase's format."""


def export_arguments(command):
    """CKPT OUT_DIR [--overwrite] [--debug]: what every export takes."""
    for decorate in reversed((
        click.argument("checkpoint", metavar="CKPT"),
        click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False)),
        click.option("--overwrite", is_flag=True, help="Replace files of the same names in OUT_DIR."),
        debug_option,
    )):
        command = decorate(command)
    return command


@export_group.command("nanochat")
@export_arguments
def export_nanochat_command(checkpoint: str, out_dir: str, overwrite: bool) -> None:
    """Export CKPT (a run folder or checkpoint folder) as nanochat's model_N.pt, meta_N.json and tokenizer/.

    nanochat's GPT.load_state_dict(strict=True) accepts the state dict as is. To use it in nanochat, put the model
    and meta files in $NANOCHAT_BASE_DIR/base_checkpoints/d<n_layer>/ and tokenizer/ in $NANOCHAT_BASE_DIR/.
    """
    for path in export_nanochat(checkpoint, out_dir, overwrite=overwrite):
        click.echo(f"wrote {path}")
    click.echo(f"format: {SUPPORTED_NANOCHAT}")


@export_group.command("hf")
@export_arguments
def export_hf_command(checkpoint: str, out_dir: str, overwrite: bool) -> None:
    """Export CKPT as a Hugging Face transformers NanoChat folder: config.json, model.safetensors, tokenizer.json.

    transformers' AutoModelForCausalLM and AutoTokenizer load OUT_DIR with no custom code. The folder is loaded back
    with transformers and compared (logits, tokenizer ids) before it is moved into place. Needs the [hf] extra.
    """
    files, agreement = export_hf(checkpoint, out_dir, overwrite=overwrite)
    for path in files:
        click.echo(f"wrote {path}")
    click.echo(_agreement_line("checked: transformers loads it", agreement) + "; tokenizer ids identical")
    if agreement.candidate is not None:
        click.echo(f"your implementations: max |logit difference| {agreement.candidate:.1e} against transformers")
    click.echo(f"load it: AutoModelForCausalLM.from_pretrained({out_dir!r}), "
               f"AutoTokenizer.from_pretrained({out_dir!r})")


@click.command("pretrained-compare")
@click.argument("checkpoint", metavar="CKPT")
@click.option("--use", "use", default="student", show_default=True, callback=remember_use,
              help="The candidate assembly, e.g. 'student:attention'; compared with all-reference on the same weights.")
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeatable; default: a few fixed ones).")
@click.option("--max-tokens", "--max_tokens", "max_tokens", type=click.IntRange(min=1), default=SAMPLE_MAX_TOKENS,
              show_default=True, help="Tokens each model generates greedily per prompt.")
@click.option("--tolerance", type=float, default=DEFAULT_TOLERANCE, show_default=True,
              help="Largest |logit difference| that still passes.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@debug_option
def pretrained_compare_command(checkpoint: str, use: str, prompts: tuple[str, ...], max_tokens: int,
                               tolerance: float, device: str, as_json: bool) -> int:
    """Run your components inside a pretrained model: logits difference and generated text, side by side.

    Exit code 0 when the logits agree within --tolerance, 1 when they do not.
    """
    report = compare_in_pretrained(checkpoint, use, list(prompts) or list(SAMPLE_PROMPTS), max_tokens,
                                   device=device, tolerance=tolerance)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render(report, Console())
    return report.exit_code


def render(report: PretrainedComparison, console: Console) -> None:
    console.print(f"[bold]nanogpt pretrained-compare[/bold] {escape(report.use_spec)} vs reference on "
                  f"{escape(str(report.checkpoint))} (step {report.step}), greedy")
    table = Table(show_lines=True)
    for col in ("prompt", "reference", report.use_spec, "max |Δlogit|", "mean |Δlogit|", "same top-1"):
        table.add_column(col, overflow="fold")
    for p in report.prompts:
        style = "" if p.max_abs_diff <= report.tolerance else "red"
        candidate = Text(p.candidate_text, style="" if p.same_text else "yellow")
        table.add_row(Text(p.prompt), Text(p.reference_text), candidate,
                      Text(f"{p.max_abs_diff:.2e}", style=style), f"{p.mean_abs_diff:.2e}",
                      f"{p.top1_agreement:.0%} of {p.positions}")
    console.print(table)
    verdict = "[bold green]PASS[/bold green]" if report.passed else "[bold red]FAIL[/bold red]"
    console.print(f"{verdict}: max |logit difference| {report.max_abs_diff:.2e} (tolerance {report.tolerance:.0e}), "
                  f"mean {report.mean_abs_diff:.2e}")
