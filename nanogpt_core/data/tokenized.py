"""Pre-tokenized data: `nanogpt data tokenize SRC OUT` once, then `nanogpt train --data OUT` as often as you like.

nanoGPT's `.bin` idea: the tokens of the whole dataset as one flat array of uint16 (uint32 for a vocabulary over
65,536), read through `np.memmap`, so opening a 10-billion-token dataset costs nothing and a batch costs a copy of
its own tokens. Training on it skips tokenizing, which on a CPU is the loader's main cost.

A tokenized folder:

    OUT/tokens.json          format, dtype, tokenizer fingerprint, bos id, and every shard with its token count
    OUT/tokenizer/           the tokenizer that made the tokens (a run on OUT uses it; another one is refused)
    OUT/train_00000.bin ...  the training part, documents in stored order, each starting with <|bos|>
    OUT/val_00000.bin ...    the held-out part, chosen by the same rule a run on SRC would use

Shards are written one at a time to a temporary name and renamed when complete, and tokens.json is written last,
so a folder with tokens.json is complete, and an interrupted `tokenize` leaves none (run it again).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanogpt_core.data.loader import encode_documents
from nanogpt_core.data.sources import FileRange
from nanogpt_core.data.tokenizer import TOKENIZER_DIR, Tokenizer
from nanogpt_core.errors import ConfigError, DataError
from nanogpt_core.files import atomic_write, write_json_atomic

FORMAT = "nanogpt-tokens"
FORMAT_VERSION = 1
META_FILE = "tokens.json"
SHARD_TOKENS = 100_000_000  # tokens per shard file (200 MB as uint16), as nanochat's ~100 MB parquet shards
TOKEN_UNIT_TOKENS = 1 << 20  # the streaming loader reads a shard in blocks of about this many tokens
ENCODE_DOCUMENTS = 1024  # documents per encode_batch call while tokenizing


def is_tokenized(path: Path) -> bool:
    return (path / META_FILE).is_file()


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every token id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass(frozen=True)
class TokenizedFolder:
    """A folder written by `tokenize_to_shards`, read and checked."""

    path: Path
    dtype: np.dtype
    tokenizer_fingerprint: str
    bos_id: int
    train: tuple[tuple[str, int], ...]  # (file name, tokens)
    val: tuple[tuple[str, int], ...]
    source: str

    @classmethod
    def open(cls, path: Path) -> TokenizedFolder:
        meta_path = path / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, expected "
                                 f"{FORMAT!r} version {FORMAT_VERSION}")
            folder = cls(path, np.dtype(meta["dtype"]), meta["tokenizer_fingerprint"], int(meta["bos_id"]),
                         tuple((s["file"], int(s["tokens"])) for s in meta["train"]),
                         tuple((s["file"], int(s["tokens"])) for s in meta["val"]), str(meta.get("source", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{meta_path} is not a tokenized-data description ({exc}); tokenize again with "
                            f"`nanogpt data tokenize SRC {path}`") from None
        for name, tokens in folder.train + folder.val:
            shard = path / name
            size = shard.stat().st_size if shard.is_file() else None
            if size != tokens * folder.dtype.itemsize:
                raise DataError(f"{shard} is {'missing' if size is None else f'{size:,} bytes'}, expected "
                                f"{tokens * folder.dtype.itemsize:,} ({tokens:,} tokens); tokenize again")
        if not folder.train or not folder.val:
            raise DataError(f"{meta_path} lists no {'training' if not folder.train else 'held-out'} shard; "
                            f"tokenize again")
        return folder

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR

    @property
    def num_bytes(self) -> int:
        return sum(tokens for _, tokens in self.train) * self.dtype.itemsize

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Tokens are ids of one tokenizer; read with another, they are other text (a DataError says so)."""
        if tokenizer.fingerprint != self.tokenizer_fingerprint:
            raise DataError(f"{self.path} was tokenized with tokenizer {self.tokenizer_fingerprint}, this run uses "
                            f"{tokenizer.fingerprint}; train with --tokenizer {self.tokenizer_dir} (or leave "
                            f"--tokenizer out), or tokenize again with this tokenizer")

    def memmap(self, name: str, tokens: int) -> np.ndarray:
        return np.memmap(self.path / name, dtype=self.dtype, mode="r", shape=(tokens,))

    def part(self, which: str) -> list[FileRange]:
        shards = self.train if which == "train" else self.val
        return [FileRange(TokenShard(self.memmap(name, n), self.path / name, self.bos_id)) for name, n in shards]

    def read_all(self, which: str) -> np.ndarray:
        """Every token of the training or held-out part, in memory (for data small enough to hold)."""
        shards = self.train if which == "train" else self.val
        return np.concatenate([np.asarray(self.memmap(name, n)) for name, n in shards]).astype(np.int64)


class TokenShard:
    """A `.bin` shard in blocks of about TOKEN_UNIT_TOKENS that begin at a <|bos|> (a units Reader)."""

    def __init__(self, tokens: np.ndarray, path: Path, bos_id: int):
        self.tokens = tokens
        self.path = path
        self.bos_id = bos_id

    def num_units(self) -> int:
        return math.ceil(len(self.tokens) / TOKEN_UNIT_TOKENS)

    def read_unit(self, index: int) -> list[np.ndarray]:
        n = len(self.tokens)
        begin = 0 if index == 0 else self._next_bos(index * TOKEN_UNIT_TOKENS)
        end = n if index >= self.num_units() - 1 else self._next_bos((index + 1) * TOKEN_UNIT_TOKENS)
        if begin >= end:
            return []
        block = np.asarray(self.tokens[begin:end], dtype=np.int32)
        starts = np.flatnonzero(block == self.bos_id)
        if len(starts) == 0 or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        return np.split(block, starts[1:])

    def _next_bos(self, position: int) -> int:
        """The first <|bos|> at or after `position` within one block's length, else `position` itself (a block
        of one giant document is cut mid-document rather than grown without bound)."""
        window = np.asarray(self.tokens[position:position + TOKEN_UNIT_TOKENS])
        found = np.flatnonzero(window == self.bos_id)
        return position + int(found[0]) if len(found) else min(position, len(self.tokens))


def pack_token_documents(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The pre-tokenized counterpart of `encode_documents`: documents end to end, and where each starts."""
    if not docs:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    starts = np.zeros(len(docs), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.concatenate(docs).astype(np.int32, copy=False), starts


def tokenize_to_shards(train_docs: Iterable[str], val_docs: Iterable[str], tokenizer: Tokenizer, out: Path,
                       source: str, shard_tokens: int = SHARD_TOKENS,
                       progress: Callable[[str, int, int], None] | None = None) -> TokenizedFolder:
    """Tokenize the two parts into `out` (see the module docstring); `progress(part, documents, tokens)` is called
    after each batch of documents. Refuses a folder that already holds tokenized data."""
    if shard_tokens < 1:
        raise ConfigError(f"shard size must be at least one token (got {shard_tokens})")
    refuse_tokenized(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / TOKENIZER_DIR)
    dtype = dtype_for(tokenizer.vocab_size)
    shards = {}
    for which, docs in (("train", train_docs), ("val", val_docs)):
        shards[which] = _write_part(which, _encoded(docs, tokenizer), out, dtype, shard_tokens, progress)
        if not shards[which]:
            raise DataError(f"the {'training' if which == 'train' else 'held-out'} part of {source} has no "
                            f"documents; add more text")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size,
            "tokenizer_fingerprint": tokenizer.fingerprint, "bos_id": tokenizer.bos_id, "source": source,
            **{which: [{"file": name, "tokens": n} for name, n in part] for which, part in shards.items()}}
    write_json_atomic(out / META_FILE, meta)
    return TokenizedFolder.open(out)


def refuse_tokenized(out: Path) -> None:
    """Tokenized data is never overwritten (nothing lost): a ConfigError naming the folder when it holds some."""
    if is_tokenized(out):
        raise ConfigError(f"{out} already holds tokenized data ({out / META_FILE}); choose another folder, or "
                          f"delete it to tokenize again")


def _encoded(docs: Iterable[str], tokenizer: Tokenizer) -> Iterator[tuple[np.ndarray, int]]:
    """(tokens, number of documents) for consecutive batches of documents."""
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == ENCODE_DOCUMENTS:
            yield encode_documents(batch, tokenizer)[0], len(batch)
            batch = []
    if batch:
        yield encode_documents(batch, tokenizer)[0], len(batch)


def _write_part(which: str, chunks: Iterator[tuple[np.ndarray, int]], out: Path, dtype: np.dtype,
                shard_tokens: int, progress) -> list[tuple[str, int]]:
    """Shards `<which>_00000.bin`, ... of at least shard_tokens tokens (the last may be shorter), each written
    atomically (`files.atomic_write`: a temporary file, fsynced, renamed)."""
    written: list[tuple[str, int]] = []
    pending = next(chunks, None)
    counts = {"documents": 0, "tokens": 0}
    while pending is not None:
        name = f"{which}_{len(written):05d}.bin"
        in_shard = 0

        def fill(tmp: Path) -> None:
            nonlocal pending, in_shard
            with open(tmp, "wb") as f:
                while pending is not None and in_shard < shard_tokens:
                    tokens, n_docs = pending
                    f.write(tokens.astype(dtype).tobytes())
                    in_shard += len(tokens)
                    counts["documents"] += n_docs
                    counts["tokens"] += len(tokens)
                    if progress is not None:
                        progress(which, counts["documents"], counts["tokens"])
                    pending = next(chunks, None)

        atomic_write(out / name, fill)
        written.append((name, in_shard))
    return written
