"""Token streaming as nanochat pretrains: documents prefixed with <|bos|>, packed end to end, cut into batches.

This is the loader for data that fits in memory (the built-in corpus, a book, a few MB of text; for data at
pretraining scale see `data.stream`). The whole stream lives in one 1-D tensor. A batch is B rows of T+1
consecutive tokens; row r starts T tokens after row r-1, so every token of the stream is a target exactly once per
pass (x = row[:-1], y = row[1:]). With a shuffle seed, each pass (epoch) first puts the documents in that epoch's
seeded order (`data.shuffle`) and packs them as before. The loader's state is where the next batch starts, how many
passes it has made and the seed, which a checkpoint stores so a resumed run reads exactly the tokens the
uninterrupted run would have.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from nanogpt_core.data.shuffle import permutation
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import ConfigError, DataError

_ENCODE_CHUNK = 1024  # documents per encode_batch call: bounds the memory held as Python int lists


def tokenize_documents(docs: Sequence[str], tokenizer: Tokenizer) -> torch.Tensor:
    """One int64 stream: <|bos|> doc0 <|bos|> doc1 ... (the bos tells the model a new, unrelated text begins)."""
    if not docs:
        raise DataError("no documents to tokenize; pass some text with --data")
    parts = [encode_documents(docs[start:start + _ENCODE_CHUNK], tokenizer)[0]
             for start in range(0, len(docs), _ENCODE_CHUNK)]
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def encode_documents(docs: Sequence[str], tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(int32 tokens of <|bos|> doc0 <|bos|> doc1 ..., where each document starts in them): tiktoken's batch
    encoding, packed. The streaming loader, the in-memory one and `nanogpt data tokenize` all pack this way."""
    ids = tokenizer.encode_batch(list(docs), prepend_bos=True)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    starts = np.zeros(len(ids), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    return tokens, starts


def check_batch_layout(batch_size: int, seq_len: int, rank: int, world_size: int) -> None:
    if batch_size < 1 or seq_len < 1:
        raise ConfigError(f"batch size and sequence length must be positive (got {batch_size}, {seq_len})")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not one of the {world_size} ranks")


def rows_to_batch(buf: torch.Tensor, batch_size: int, seq_len: int, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) from B x T + 1 consecutive int64 tokens: B rows of T + 1 that overlap by one, y = x shifted by one;
    on CUDA copied through pinned memory so the copy overlaps the GPU's work."""
    x = buf[:-1].view(batch_size, seq_len)
    y = buf[1:].view(batch_size, seq_len)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


class TokenLoader:
    """Batches (x, y) of shape (batch_size, seq_len) from a token stream, for one rank of `world_size`.

    All ranks read one global batch of world_size * batch_size rows; rank r takes rows r*B .. (r+1)*B - 1. So two
    ranks with batch B see exactly the tokens of one rank with batch 2B. At the end of the stream (when the next
    global batch would not fit) the loader starts over and counts an epoch; the short tail is skipped that pass.

    `shuffle_seed` (with `bos_id`, which marks where each document starts) reorders the documents every epoch,
    epoch 0 included; every rank computes the same order, so the rows are still split as above.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        batch_size: int,
        seq_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        shuffle_seed: int | None = None,
        bos_id: int | None = None,
    ):
        check_batch_layout(batch_size, seq_len, rank, world_size)
        if tokens.dim() != 1:
            raise DataError(f"a token stream is 1-D, got shape {tuple(tokens.shape)}")
        self.tokens = tokens.to(torch.int64)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.stride = world_size * batch_size * seq_len  # tokens consumed per global batch
        needed = self.stride + 1
        if len(self.tokens) < needed:
            raise DataError(
                f"the token stream has {len(self.tokens):,} tokens but one batch needs {needed:,} "
                f"({world_size} rank(s) x batch {batch_size} x seq len {seq_len} + 1); "
                "use more data or a smaller batch size / sequence length"
            )
        if shuffle_seed is not None and bos_id is None:
            raise ConfigError("shuffling documents needs bos_id: the token that starts each document")
        self.doc_starts = document_starts(self.tokens, bos_id) if bos_id is not None else None
        self.shuffle_seed = shuffle_seed
        self.position = 0
        self.epoch = 0
        self._ordered: tuple[int, torch.Tensor] | None = None  # (epoch, its stream), rebuilt once per epoch

    def stream(self) -> torch.Tensor:
        """The tokens in this epoch's document order (the stored order when not shuffling)."""
        if self.shuffle_seed is None:
            return self.tokens
        if self._ordered is None or self._ordered[0] != self.epoch:
            starts = self.doc_starts.tolist()
            ends = [*starts[1:], len(self.tokens)]
            order = permutation(len(starts), self.shuffle_seed, self.epoch)
            self._ordered = (self.epoch, torch.cat([self.tokens[starts[i]:ends[i]] for i in order]))
        return self._ordered[1]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y), each (batch_size, seq_len) int64 on the loader's device; y is x shifted by one."""
        if self.position + self.stride + 1 > len(self.tokens):
            self.position = 0
            self.epoch += 1
        start = self.position + self.rank * self.batch_size * self.seq_len
        buf = self.stream()[start:start + self.batch_size * self.seq_len + 1]
        self.position += self.stride
        return rows_to_batch(buf, self.batch_size, self.seq_len, self.device)

    def close(self) -> None:
        """Nothing to release (the streaming loader stops its tokenizer thread here)."""

    def state_dict(self) -> dict[str, int | None]:
        """Where the next global batch starts in this epoch's order, how many full passes are done and the shuffle
        seed (None: the stored order): all a resume needs, the epoch's order being a function of seed and epoch."""
        return {"position": self.position, "epoch": self.epoch, "shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`'s result. Its seed wins over the one this loader was built with (a
        checkpoint from before shuffling existed has none: the stored order)."""
        position, epoch, seed = state.get("position"), state.get("epoch"), state.get("shuffle_seed")
        if not isinstance(position, int) or not isinstance(epoch, int) or position < 0 or epoch < 0:
            raise DataError(f"loader state must hold non-negative integers 'position' and 'epoch' (got {state})")
        if seed is not None and (not isinstance(seed, int) or self.doc_starts is None):
            raise DataError(f"loader state asks for documents shuffled with seed {seed!r}, but this loader does "
                            "not know where documents start (no bos_id); the checkpoint is of another kind of run")
        if position > len(self.tokens):
            raise DataError(f"loader position {position:,} is past the end of the token stream "
                            f"({len(self.tokens):,} tokens): the data or tokenizer changed since the checkpoint")
        self.position = position
        self.epoch = epoch
        self.shuffle_seed = seed


def document_starts(tokens: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Where each document of a packed stream starts: every <|bos|>, and 0 (text before the first bos is a
    document too). A tokenizer never makes the bos id from ordinary text, so these are exactly the boundaries."""
    starts = torch.nonzero(tokens == bos_id).flatten()
    if len(starts) == 0 or starts[0] != 0:
        starts = torch.cat([torch.zeros(1, dtype=starts.dtype), starts])
    return starts
