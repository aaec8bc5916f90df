"""`nanogpt data`: get training data (`nanogpt data download NAME`, `nanogpt data list`)."""

from __future__ import annotations

import click

from nanogpt_cli.errors import debug_option
from nanogpt_core.data.download import DATASETS, ENV_DATA_DIR, data_dir, download_dataset, get_dataset


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
