"""`nanogpt data`: get training data (`nanogpt data download NAME`, `nanogpt data list`) and tokenize it once for
many runs (`nanogpt data tokenize SRC OUT`)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from nanogpt_cli.errors import debug_option
from nanogpt_core.data.download import DATASETS, ENV_DATA_DIR, data_dir, download_dataset, get_dataset
from nanogpt_core.data.tokenized import SHARD_TOKENS, refuse_tokenized, tokenize_to_shards
from nanogpt_core.data.tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer, tokenizer_folder
from nanogpt_core.data.training_data import open_training_data
from nanogpt_core.errors import ConfigError

PROGRESS_EVERY_S = 5.0


@click.group("data")
def data_group() -> None:
    """Download public datasets to train on (the built-in corpus needs no download)."""


@data_group.command("list")
@debug_option
def list_command() -> None:
    """Show the datasets `nanogpt data download` knows."""
    for dataset in DATASETS.values():
        shards = f" (up to {dataset.max_shards} shards)" if dataset.max_shards > 1 else ""
        click.echo(f"{dataset.name:16} {dataset.description}{shards}")
    click.echo(f"\nDownloads go to {data_dir()} (change with --dir or ${ENV_DATA_DIR}).")


@data_group.command("download")
@click.argument("name")
@click.option("--shards", type=int, default=None, help="How many shards of a sharded dataset (fineweb-edu: 1).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help=f"Data folder (default: ${ENV_DATA_DIR} or ~/.cache/nanogpt/data).")
@click.option("--base-url", default=None, help="Fetch from a mirror: <base-url>/<dataset>/<file>.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@debug_option
def download_command(name: str, shards: int | None, directory: str | None, base_url: str | None,
                     progress: bool | None) -> None:
    """Download dataset NAME (see `nanogpt data list`), resuming partial downloads and checking SHA-256s."""
    target = download_dataset(name, shards=shards, directory=directory, base_url=base_url, progress=progress,
                              log=lambda line: click.echo(line, err=True))
    click.echo(f"Ready: {target}\n{get_dataset(name).next_step.format(target=target)}")


@data_group.command("tokenize")
@click.argument("src", type=click.Path())
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--tokenizer", "tokenizer_path", default=None,
              help="Tokenizer folder (or a run/checkpoint folder) to tokenize with [default: train one on SRC's "
                   "training text, as `nanogpt train` would].")
@click.option("--vocab-size", "--vocab_size", type=int, default=None,
              help=f"Vocabulary of the tokenizer trained here. [default: {DEFAULT_VOCAB_SIZE}]")
@click.option("--shard-tokens", type=int, default=SHARD_TOKENS, show_default=True, help="Tokens per .bin shard.")
@click.option("--stream/--no-stream", "stream", default=None,
              help="Hold out what a streamed run holds out (the last file) or what an in-memory one does (every "
                   "20th document). [default: by size, as `nanogpt train`]")
@debug_option
def tokenize_command(src: str, out: str, tokenizer_path: str | None, vocab_size: int | None, shard_tokens: int,
                     stream: bool | None) -> None:
    """Tokenize SRC (a text file, a folder, parquet shards) once into OUT: uint16/uint32 .bin shards that
    `nanogpt train --data OUT` reads through np.memmap, with no tokenizing at train time."""
    data = open_training_data(src, stream=stream)
    refuse_tokenized(Path(out))  # before the minutes a tokenizer may take to train
    if tokenizer_path is not None and vocab_size is not None:
        raise ConfigError("--vocab-size is for a tokenizer trained here; drop it when passing --tokenizer")
    if tokenizer_path is not None:
        tokenizer = Tokenizer.load(tokenizer_folder(tokenizer_path))
    else:
        t0 = time.perf_counter()
        tokenizer = Tokenizer.train(data.tokenizer_texts(), vocab_size or DEFAULT_VOCAB_SIZE)
        click.echo(f"Tokenizer: trained {tokenizer.vocab_size} tokens in {time.perf_counter() - t0:.1f}s", err=True)
    train_docs, val_docs = data.documents()
    started = time.perf_counter()
    last = [started]

    def progress(part: str, documents: int, tokens: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            click.echo(f"{part}: {documents:,} documents, {tokens:,} tokens ({tokens / (now - started):,.0f} "
                       f"tokens/s)", err=True)

    folder = tokenize_to_shards(train_docs, val_docs, tokenizer, Path(out), source=str(src),
                                shard_tokens=shard_tokens, progress=progress)
    train_tokens = sum(n for _, n in folder.train)
    val_tokens = sum(n for _, n in folder.val)
    click.echo(f"Tokenized {src} in {time.perf_counter() - started:.0f}s: {train_tokens:,} train tokens in "
               f"{len(folder.train)} shard(s), {val_tokens:,} held-out tokens, {folder.dtype.name}, tokenizer "
               f"{tokenizer.fingerprint}")
    click.echo(f"Ready: {folder.path}\nTrain on it with: nanogpt train --data {folder.path}")
