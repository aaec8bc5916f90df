"""`nanogpt sample CKPT`: stream text from a trained model, token by token.

    nanogpt sample runs/20250101-120000 --prompt "The function" --max-tokens 100 --temperature 0.8 --seed 1

CKPT is a run folder (its latest checkpoint) or one checkpoint folder. The prompt is preceded by <|bos|>, as every
training document was; an empty prompt (the default) starts a fresh document from <|bos|> alone.
"""

from __future__ import annotations

import logging

import click

from nanogpt_cli.errors import debug_option, remember_use
from nanogpt_core.device import DEVICE_CHOICES
from nanogpt_core.io.checkpoint import load_model
from nanogpt_core.train.sampling import prompt_tokens, stream_text


@click.command("sample")
@click.argument("checkpoint", metavar="CKPT")
@click.option("--prompt", default="", show_default=True, help="Text to continue ('' starts from <|bos|> alone).")
@click.option("--max-tokens", "--max_tokens", "max_tokens", type=int, default=100, show_default=True,
              help="Tokens to generate.")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="0 is greedy; higher is more random.")
@click.option("--top-k", "--top_k", "top_k", type=int, default=None,
              help="Sample among the k most likely tokens only (default: all).")
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed, same text.")
@click.option("--use", default=None, callback=remember_use,
              help="Swap implementations at load time, e.g. 'student:attention'.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@debug_option
def sample_command(checkpoint: str, prompt: str, max_tokens: int, temperature: float, top_k: int | None, seed: int,
                   use: str | None, device: str) -> None:
    """Generate text from a checkpoint, printed as it is produced."""
    _show_library_warnings()
    model, tokenizer, _ = load_model(checkpoint, use=use, device=device)
    tokens = prompt_tokens(tokenizer, prompt)
    pieces = stream_text(model, tokenizer, tokens, max_tokens, temperature=temperature, top_k=top_k, seed=seed)
    first = next(pieces, None)  # argument errors surface here, before the prompt is echoed
    click.echo(prompt, nl=False)
    if first is not None:
        click.echo(first, nl=False)
        for piece in pieces:
            click.echo(piece, nl=False)
    click.echo()


class _StderrHandler(logging.Handler):
    """The library's warnings (e.g. a --use other than the checkpoint's) as plain lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"Note: {record.getMessage()}", err=True)


def _show_library_warnings() -> None:
    logger = logging.getLogger("nanogpt")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.WARNING))
