"""`nanogpt tokenizer train`: learn a BPE tokenizer on your data (or the built-in corpus) and save it."""

from __future__ import annotations

import itertools
import time

import click

from nanogpt_cli.errors import debug_option
from nanogpt_core.data.tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer
from nanogpt_core.data.training_data import open_training_data

VAL_SAMPLE_DOCUMENTS = 10_000  # held-out documents the bytes-per-token figure is measured on


@click.group("tokenizer")
def tokenizer_group() -> None:
    """Train and inspect BPE tokenizers (rustbpe to learn, tiktoken to run: nanochat's recipe)."""


@tokenizer_group.command("train")
@click.option("--vocab-size", "--vocab_size", type=int, default=DEFAULT_VOCAB_SIZE, show_default=True,
              help="Tokens in the vocabulary, the 9 special tokens included.")
@click.option("--data", "data_path", type=click.Path(), default=None,
              help="Text file, folder of .txt/.md files or parquet shards (default: the built-in corpus).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="tokenizer", show_default=True,
              help="Folder to save the tokenizer in.")
@debug_option
def train_command(vocab_size: int, data_path: str | None, out_dir: str) -> None:
    """Train a tokenizer on the training split of the data (validation text stays unseen) and save it: the text a
    run on this data would train its own tokenizer on (streamed data: its first 32 million characters)."""
    data = open_training_data(data_path)
    train_docs = list(data.tokenizer_texts())
    val_docs = list(itertools.islice(data.documents()[1], VAL_SAMPLE_DOCUMENTS))
    start = time.perf_counter()
    tokenizer = Tokenizer.train(train_docs, vocab_size)
    seconds = time.perf_counter() - start
    tokenizer.save(out_dir)
    val_bytes = sum(len(doc.encode("utf-8")) for doc in val_docs)
    val_tokens = sum(len(ids) for ids in tokenizer.encode_batch(val_docs))
    click.echo(f"Trained in {seconds:.2f} s on {sum(len(d.encode('utf-8')) for d in train_docs):,} bytes; "
               f"vocab size {tokenizer.vocab_size:,}; id {tokenizer.fingerprint}")
    if tokenizer.vocab_size < vocab_size:
        click.echo(f"Note: the data had no more pairs to merge, so the vocabulary stopped at {tokenizer.vocab_size:,} "
                   f"of the {vocab_size:,} asked for.")
    click.echo(f"Validation text: {val_bytes / max(val_tokens, 1):.2f} bytes per token")
    click.echo(f"Saved to {out_dir}")
