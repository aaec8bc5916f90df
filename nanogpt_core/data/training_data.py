"""What a training run reads, for data of any size: the training part as batches, the held-out part as validation
tokens, and the text a new tokenizer learns from.

Two ways to read, chosen by the data's size on disk (or by `--stream` / `--no-stream`):

- in memory, for data up to AUTO_STREAM_BYTES (the built-in corpus, a book, a few MB of text): every document read,
  every k-th one held out (`corpus.split_documents`), the training part tokenized into one tensor and cut into
  batches by `data.loader.TokenLoader`. What nanogpt always did: the demo's figures, and N ranks reading exactly the
  tokens one rank reads.
- streamed, for larger data: files read unit by unit (`data.sources`), the last file (or a single file's last unit)
  held out, each rank reading its own units in a background tokenizer thread (`data.stream.StreamingLoader`).
  Memory and the time to the first step do not depend on the data's size.

A pre-tokenized folder (`nanogpt data tokenize`, `data.tokenized`) carries its split in its shards and is read
either way (into memory, or streamed through np.memmap).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from nanogpt_core.data.corpus import load_documents, split_documents
from nanogpt_core.data.loader import TokenLoader, encode_documents, tokenize_documents
from nanogpt_core.data.sources import (
    FileRange,
    ParquetShard,
    data_files,
    documents_in_order,
    held_out_split,
    units_in_order,
)
from nanogpt_core.data.stream import StreamingLoader
from nanogpt_core.data.tokenized import TokenizedFolder, is_tokenized, pack_token_documents
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import ConfigError, DataError

MEMORY, STREAM = "memory", "stream"
AUTO_STREAM_BYTES = 64 << 20  # above this much data on disk a run streams: in memory it would be ~10x that in RAM
TOKENIZER_TRAIN_CHARS = 32_000_000  # a tokenizer trained by a streamed run learns from this much training text
BUILTIN = "built-in corpus (Python's documentation)"


def open_training_data(path: str | Path | None, stream: bool | None = None) -> TrainingData:
    """The data at `path` (None: the built-in corpus), to be read in memory or streamed: `stream` True or False
    forces one, None chooses by size. Cheap: it only looks at which files there are and how large they are."""
    if path is None:
        if stream:
            raise ConfigError("the built-in corpus is read in memory (it is 1.5 MB); drop --stream, or pass --data")
        return TrainingData(None, MEMORY, [], None)
    path = Path(path).expanduser()
    if path.name == "tokens.json" and path.is_file():
        path = path.parent
    if not path.exists():
        raise DataError(f"{path} does not exist; pass a text file, a folder of .txt/.md files or parquet shards")
    if path.is_dir() and is_tokenized(path):
        tokenized = TokenizedFolder.open(path)
        size = tokenized.num_bytes
        files: list[Path] = []
    else:
        tokenized = None
        files = data_files(path) if path.is_dir() else [path]
        size = sum(f.stat().st_size for f in files)
    mode = STREAM if (stream if stream is not None else size > AUTO_STREAM_BYTES) else MEMORY
    return TrainingData(path, mode, files, tokenized)


class TrainingData:
    """One run's data, read the way `mode` says (see the module docstring)."""

    def __init__(self, path: Path | None, mode: str, files: list[Path], tokenized: TokenizedFolder | None):
        self.path = path
        self.mode = mode
        self.files = files
        self.tokenized = tokenized
        self.train_tokens: torch.Tensor | None = None  # in memory: the training part, tokenized
        self.num_val_tokens = 0

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else BUILTIN

    @property
    def tokenizer_dir(self) -> Path | None:
        """The tokenizer a pre-tokenized folder was made with (None for text: a run trains or is given one)."""
        return self.tokenized.tokenizer_dir if self.tokenized is not None else None

    # --- the parts ------------------------------------------------------------------------------------------------

    @functools.cached_property
    def _documents(self) -> tuple[list[str], list[str]]:
        """In memory: every document, split into the training and held-out documents."""
        return split_documents(load_documents(self.path))

    @functools.cached_property
    def _parts(self) -> tuple[list[FileRange], list[FileRange]]:
        """Streamed: the training and held-out files (or ranges of their units)."""
        if self.tokenized is not None:
            return self.tokenized.part("train"), self.tokenized.part("val")
        return held_out_split(self.files)

    def documents(self) -> tuple[Iterable[str], Iterable[str]]:
        """The training and the held-out documents in stored order (`nanogpt data tokenize` writes them)."""
        if self.tokenized is not None:
            raise ConfigError(f"{self.path} is already tokenized; train on it with --data {self.path}")
        if self.mode == MEMORY:
            return self._documents
        train, val = self._parts
        return documents_in_order(train), documents_in_order(val)

    def tokenizer_texts(self) -> Iterable[str]:
        """The training text a new tokenizer learns from: all the training documents in memory (as nanogpt always
        did), the first TOKENIZER_TRAIN_CHARS characters of the training part when streamed."""
        train = self.documents()[0]
        return train if self.mode == MEMORY else _first_chars(train, TOKENIZER_TRAIN_CHARS)

    def train_loader(self, tokenizer: Tokenizer, batch_size: int, seq_len: int, *, rank: int = 0,
                     world_size: int = 1, device: str | torch.device = "cpu",
                     shuffle_seed: int | None = None) -> TokenLoader | StreamingLoader:
        """Batches of the training part for one rank; `shuffle_seed` reorders the documents every epoch."""
        if self.tokenized is not None:
            self.tokenized.check_tokenizer(tokenizer)
        if self.mode == STREAM:
            train, _ = self._parts
            encode = pack_token_documents if self.tokenized is not None else \
                functools.partial(encode_documents, tokenizer=tokenizer)
            return StreamingLoader(train, encode, batch_size, seq_len, rank=rank, world_size=world_size,
                                   device=device, shuffle_seed=shuffle_seed)
        if self.tokenized is not None:
            self.train_tokens = torch.from_numpy(self.tokenized.read_all("train"))
        else:
            self.train_tokens = tokenize_documents(self._documents[0], tokenizer)
        return TokenLoader(self.train_tokens, batch_size, seq_len, rank=rank, world_size=world_size, device=device,
                           shuffle_seed=shuffle_seed, bos_id=tokenizer.bos_id)

    def val_tokens(self, tokenizer: Tokenizer, max_tokens: int | None = None) -> torch.Tensor:
        """The held-out part as one int64 stream (the same for every run on this data). Streamed data reads only
        its first `max_tokens` (what the evaluations use); in memory it is all of it, as before."""
        if self.tokenized is not None:
            self.tokenized.check_tokenizer(tokenizer)
            if self.mode == MEMORY or max_tokens is None:
                tokens = torch.from_numpy(self.tokenized.read_all("val"))
            else:
                tokens = _first_tokens(_pieces(self._parts[1], pack_token_documents), max_tokens)
        elif self.mode == MEMORY:
            tokens = tokenize_documents(self._documents[1], tokenizer)
        else:
            tokens = _first_tokens(_pieces(self._parts[1], functools.partial(encode_documents, tokenizer=tokenizer)),
                                   max_tokens)
        if len(tokens) == 0:
            raise DataError(f"the held-out part of {self.source} has no text; add more data")
        self.num_val_tokens = len(tokens)
        return tokens

    def train_chars(self) -> float:
        """About how many characters the training part holds (a --time run sizes its tokenizer by it): counted in
        memory; streamed, the files' bytes, a unit range its share of them (compressed parquet says less than it
        holds, which only errs toward a smaller vocabulary)."""
        if self.mode == MEMORY:
            return float(sum(len(doc) for doc in self._documents[0]))
        total = 0.0
        for piece in self._parts[0]:
            size = piece.reader.path.stat().st_size
            total += size if piece.units is None else size * len(piece.units) / max(1, piece.reader.num_units())
        return total

    # --- what the run says about its data --------------------------------------------------------------------------

    def describe(self) -> str:
        """One line for the run's log, after the loader and the validation tokens are made."""
        if self.mode == MEMORY:
            if self.tokenized is not None:
                what = "pre-tokenized"
            else:
                what = f"{len(self._documents[0]) + len(self._documents[1]):,} documents"
            return (f"{self.source}: {what}, {len(self.train_tokens):,} train / {self.num_val_tokens:,} val tokens "
                    f"(in memory)")
        train, val = self._parts
        held_out = ", ".join(_range_name(piece) for piece in val)
        kind = "pre-tokenized shards" if self.tokenized is not None else "file(s)"
        return (f"{self.source}: streamed from {len(train)} {kind} by a background tokenizer thread per rank; "
                f"held out: {held_out} ({self.num_val_tokens:,} val tokens read)")

    def digest(self) -> str:
        """What identifies the training data a loader position points into: the tokens themselves in memory, the
        files' names, sizes and unit ranges when streamed (hashing a dataset of GBs would defeat streaming)."""
        if self.mode == MEMORY:
            return hashlib.sha256(self.train_tokens.numpy().tobytes()).hexdigest()[:16]
        train, _ = self._parts
        listing = [(str(piece.reader.path), piece.reader.path.stat().st_size,
                    None if piece.units is None else [piece.units.start, piece.units.stop]) for piece in train]
        return hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()[:16]


def _first_chars(docs: Iterable[str], limit: int) -> Iterator[str]:
    """Documents until `limit` characters are reached (the one that crosses it included)."""
    total = 0
    for doc in docs:
        if total >= limit:
            return
        total += len(doc)
        yield doc


def _pieces(part: list[FileRange], encode) -> Iterator[np.ndarray]:
    """A part's tokens in stored order, a unit at a time."""
    return (encode(docs)[0] for docs in units_in_order(part) if docs)


def _first_tokens(pieces: Iterator[np.ndarray], limit: int | None) -> torch.Tensor:
    taken, total = [], 0
    for tokens in pieces:
        taken.append(tokens)
        total += len(tokens)
        if limit is not None and total >= limit:
            break
    if not taken:
        return torch.zeros(0, dtype=torch.int64)
    stream = np.concatenate(taken)
    return torch.from_numpy(stream[:limit].astype(np.int64))


def _range_name(piece: FileRange) -> str:
    """`shard_00009.parquet`, or `book.txt (block 24)` for a range of one file's units."""
    name = piece.reader.path.name
    if piece.units is None:
        return name
    unit = "row group" if isinstance(piece.reader, ParquetShard) else "block"
    if len(piece.units) == 1:
        return f"{name} ({unit} {piece.units.start})"
    return f"{name} ({unit}s {piece.units.start}-{piece.units.stop - 1})"
