"""Batches from data of any size: read unit by unit, tokenized in a background thread, packed as the in-memory
loader packs them, resumable at the exact token.

What a rank reads. A part of the data is a list of files, each a sequence of units (row groups, text blocks, token
blocks: `data.sources`). An epoch walks the files in order, and each file's units in order; counting the units of
the whole epoch 0, 1, 2, ..., rank r of W reads units r, r+W, r+2W, ... (nanochat's layout: rank r takes row groups
r, r+W, ...), so the ranks share the reading and never read the same text. With a shuffle seed the files, each
file's units and each unit's documents are read in that epoch's seeded order (`data.shuffle`): document-level
shuffling whose memory is one unit. Nothing is listed or opened ahead of time, so the first batch needs the first
unit only.

How it becomes batches. A background thread reads the rank's units, tokenizes their documents with tiktoken's batch
encoding (one <|bos|> before each) and queues the tokens in chunks, at most `PREFETCH_CHUNKS` ahead. The training
thread takes B x T + 1 tokens for each batch (rows of T + 1 that overlap by one token, as `data.loader` cuts them),
and moves on by B x T, so the last target of a batch is the first input of the next.

What a checkpoint keeps. The position of the next token to be read: the epoch, the file and unit (by their place in
that epoch's order), the document in the unit and the token in the document (`Position`). Everything buffered is a
function of that position, so a resumed loader reads it again and delivers exactly the tokens the uninterrupted one
would have. Each rank has its own position; the training loop gathers them all into the checkpoint.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from nanogpt_core.data.loader import check_batch_layout, rows_to_batch
from nanogpt_core.data.shuffle import permutation
from nanogpt_core.data.sources import FileRange
from nanogpt_core.errors import ConfigError, DataError

PREFETCH_CHUNKS = 8  # chunks the tokenizer thread may run ahead: memory stays a few chunks, whatever the data
CHUNK_DOCUMENTS = 256  # documents per encode_batch call (tiktoken spreads one call over its threads)
STATE_KIND = "stream"

# What a unit's documents become: text is tokenized, a pre-tokenized shard's documents already are tokens.
Encode = Callable[[list], tuple[np.ndarray, np.ndarray]]  # documents -> (tokens, where each document starts)


@dataclass(frozen=True)
class Position:
    """Where a rank's reading stands: the next token is token `offset` of document `doc` of unit `unit` of file
    `file` of epoch `epoch`. `file`, `unit` and `doc` are places in that epoch's (possibly shuffled) order;
    `units_before` counts the units of the epoch's earlier files, which the rank rule needs."""

    epoch: int = 0
    file: int = 0
    unit: int = 0
    units_before: int = 0
    doc: int = 0
    offset: int = 0


@dataclass
class _Chunk:
    """Tokens of consecutive documents of one unit; `where` is its first document's position."""

    where: Position
    tokens: np.ndarray
    doc_starts: np.ndarray


class _Failure:
    """An exception raised in the tokenizer thread, handed to the training thread to raise there."""

    def __init__(self, error: BaseException):
        self.error = error


class StreamingLoader:
    """Batches (x, y) of shape (batch_size, seq_len) for rank `rank` of `world_size`, read from `part` as the module
    docstring says. `encode` turns a unit's documents into tokens; `shuffle_seed` None reads in stored order."""

    def __init__(
        self,
        part: Sequence[FileRange],
        encode: Encode,
        batch_size: int,
        seq_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        shuffle_seed: int | None = None,
    ):
        check_batch_layout(batch_size, seq_len, rank, world_size)
        if not part:
            raise DataError("no files to read the training data from")
        self.part = list(part)
        self.encode = encode
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.shuffle_seed = shuffle_seed
        self._start = Position()  # where reading starts (or resumes)
        self._chunks: deque[_Chunk] = deque()  # the buffered tokens; the next one is _chunks[0].tokens[_head]
        self._head = 0
        self._buffered = 0  # tokens from the head to the end of the last chunk
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # --- batches ----------------------------------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y), each (batch_size, seq_len) int64 on the loader's device; y is x shifted by one."""
        rows = self.batch_size * self.seq_len
        self._fill(rows + 1)
        pieces, want, i, head = [], rows + 1, 0, self._head
        while want:
            tokens = self._chunks[i].tokens
            piece = tokens[head:head + want]
            pieces.append(piece)
            want -= len(piece)
            i, head = i + 1, 0
        buf = torch.from_numpy(np.concatenate(pieces).astype(np.int64))
        self._advance(rows)
        return rows_to_batch(buf, self.batch_size, self.seq_len, self.device)

    def _fill(self, needed: int) -> None:
        if self._thread is None:
            self._start_worker()
        while self._buffered < needed:
            item = self._queue.get()
            if isinstance(item, _Failure):
                self.close()
                raise item.error
            self._chunks.append(item)
            self._buffered += len(item.tokens)

    def _advance(self, n: int) -> None:
        self._buffered -= n
        self._head += n
        while self._head >= len(self._chunks[0].tokens):  # the lookahead token keeps a chunk at the head
            self._head -= len(self._chunks.popleft().tokens)

    # --- state ------------------------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.position().epoch

    def position(self) -> Position:
        """The position of the next token this loader will deliver."""
        if not self._chunks:
            return self._start
        chunk = self._chunks[0]
        doc = int(np.searchsorted(chunk.doc_starts, self._head, side="right")) - 1
        offset = self._head - int(chunk.doc_starts[doc]) + (chunk.where.offset if doc == 0 else 0)
        return replace(chunk.where, doc=chunk.where.doc + doc, offset=offset)

    def state_dict(self) -> dict[str, Any]:
        """This rank's position, and what it is a position in (rank, world size, shuffle seed)."""
        return {"kind": STATE_KIND, **asdict(self.position()), "rank": self.rank, "world_size": self.world_size,
                "shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s result (of this rank in a run with as many ranks)."""
        if state.get("kind") != STATE_KIND:
            raise DataError("the checkpoint's loader read the data in memory, this run streams it; resume with "
                            "the same --data and data mode (--no-stream)")
        if state.get("world_size") != self.world_size or state.get("rank") != self.rank:
            raise ConfigError(f"the checkpoint's streaming loader state is rank {state.get('rank')} of "
                              f"{state.get('world_size')}, this process is rank {self.rank} of {self.world_size}: "
                              f"each rank reads its own units, so resume with {state.get('world_size')} process(es)")
        fields = {name: state.get(name) for name in Position.__dataclass_fields__}
        if not all(isinstance(v, int) and v >= 0 for v in fields.values()):
            raise DataError(f"streaming loader state must hold non-negative integers {list(fields)} (got {state})")
        seed = state.get("shuffle_seed")
        if seed is not None and not isinstance(seed, int):
            raise DataError(f"streaming loader state has a shuffle seed that is not an integer ({seed!r})")
        self.close()
        self._chunks.clear()
        self._head = self._buffered = 0
        self._start = Position(**fields)
        self.shuffle_seed = seed

    # --- the tokenizer thread ---------------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        self._queue = queue.Queue(maxsize=PREFETCH_CHUNKS)
        self._stop = threading.Event()
        # the thread holds the plan, never the loader: a loader dropped without close() is collected, and its
        # __del__ stops the thread
        plan = _Plan(tuple(self.part), self.encode, self.rank, self.world_size, self.shuffle_seed)
        self._thread = threading.Thread(target=_work, args=(plan.chunks(self._start), self._queue, self._stop),
                                        name=f"nanogpt-tokenizer-rank{self.rank}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the tokenizer thread; a later next_batch starts a new one at the current position."""
        if self._thread is not None:
            here = self.position()
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._queue = None
            self._chunks.clear()
            self._head = self._buffered = 0
            self._start = here

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


def _work(chunks: Iterator[_Chunk], out: queue.Queue, stop: threading.Event) -> None:
    """The tokenizer thread: queue chunks until told to stop; a failure is queued for the training thread."""
    try:
        for chunk in chunks:
            if not _put(out, chunk, stop):
                return
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the training thread
        _put(out, _Failure(exc), stop)


def _put(out: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` once there is room, or give up (False) when stop is set."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


@dataclass(frozen=True)
class _Plan:
    """What a rank reads, in which order (the module docstring): everything the tokenizer thread needs."""

    part: tuple[FileRange, ...]
    encode: Encode
    rank: int
    world_size: int
    shuffle_seed: int | None

    def chunks(self, start: Position) -> Iterator[_Chunk]:
        """Chunks of this rank's tokens from `start` on, epoch after epoch."""
        epoch, resume = start.epoch, start
        while True:
            found = False
            for where, docs in self.units(epoch, resume):
                first_doc, skip = 0, 0
                if (where.epoch, where.file, where.unit) == (resume.epoch, resume.file, resume.unit):
                    first_doc, skip = resume.doc, resume.offset
                    if first_doc and first_doc >= len(docs):
                        raise _changed(f"document {first_doc} of a unit of {len(docs)}")
                for begin in range(first_doc, len(docs), CHUNK_DOCUMENTS):
                    tokens, doc_starts = self.encode(docs[begin:begin + CHUNK_DOCUMENTS])
                    offset = skip if begin == first_doc else 0
                    if offset:  # resuming inside a document: its first tokens were read before the checkpoint
                        first_length = doc_starts[1] if len(doc_starts) > 1 else len(tokens)
                        if offset >= first_length:
                            raise _changed(f"token {offset} of a document of {first_length}")
                        tokens, doc_starts = tokens[offset:], np.concatenate([[0], doc_starts[1:] - offset])
                    found = True
                    yield _Chunk(replace(where, doc=begin, offset=offset), tokens, doc_starts)
            if not found and resume == Position(epoch=epoch):
                raise DataError(f"rank {self.rank} of {self.world_size} found no data in a whole pass over the "
                                f"training files: there are fewer pieces (row groups, blocks) than ranks; use more "
                                f"data or fewer processes")
            epoch, resume = epoch + 1, Position(epoch=epoch + 1)

    def units(self, epoch: int, start: Position) -> Iterator[tuple[Position, list]]:
        """(the unit's position, its documents in this epoch's order) for every unit of this rank from `start`'s
        to the end of the epoch."""
        seed = self.shuffle_seed
        files = permutation(len(self.part), seed, epoch) if seed is not None else np.arange(len(self.part))
        not_mine = (start.units_before + start.unit) % self.world_size != self.rank
        if start.file >= len(files) or (not_mine and (start.doc or start.offset)):
            raise _changed(f"file {start.file}, unit {start.unit} (rank {self.rank} of {self.world_size})")
        units_before = start.units_before
        for file_pos in range(start.file, len(files)):
            file = int(files[file_pos])
            piece = self.part[file]
            units = piece.unit_indices()
            order = permutation(len(units), seed, epoch, file) if seed is not None else np.arange(len(units))
            for unit_pos in range(start.unit if file_pos == start.file else 0, len(units)):
                if (units_before + unit_pos) % self.world_size != self.rank:
                    continue
                unit = units[int(order[unit_pos])]
                docs = piece.reader.read_unit(unit)
                if seed is not None:
                    docs = [docs[i] for i in permutation(len(docs), seed, epoch, file, unit)]
                yield Position(epoch, file_pos, unit_pos, units_before), docs
            units_before += len(units)


def _changed(what: str) -> DataError:
    return DataError(f"the streaming loader's saved position ({what}) is not in the data: the files changed since "
                     f"the checkpoint was saved; resume with the data it was trained on")
