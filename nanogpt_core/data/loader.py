"""Token streaming as nanochat pretrains: documents prefixed with <|bos|>, packed end to end, cut into batches.

The whole stream lives in one 1-D tensor. A batch is B rows of T+1 consecutive tokens; row r starts T tokens after
row r-1, so every token of the stream is a target exactly once per pass (x = row[:-1], y = row[1:]). The loader's
only state is where the next batch starts (and how many passes it has made), which a checkpoint stores so a
resumed run reads exactly the tokens the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import ConfigError, DataError

_ENCODE_CHUNK = 1024  # documents per encode_batch call: bounds the memory held as Python int lists


def tokenize_documents(docs: Sequence[str], tokenizer: Tokenizer) -> torch.Tensor:
    """One int64 stream: <|bos|> doc0 <|bos|> doc1 ... (the bos tells the model a new, unrelated text begins)."""
    if not docs:
        raise DataError("no documents to tokenize; pass some text with --data")
    parts = []
    for start in range(0, len(docs), _ENCODE_CHUNK):
        for ids in tokenizer.encode_batch(list(docs[start:start + _ENCODE_CHUNK]), prepend_bos=True):
            parts.append(np.asarray(ids, dtype=np.int64))
    return torch.from_numpy(np.concatenate(parts))


class TokenLoader:
    """Batches (x, y) of shape (batch_size, seq_len) from a token stream, for one rank of `world_size`.

    All ranks read one global batch of world_size * batch_size rows; rank r takes rows r*B .. (r+1)*B - 1. So two
    ranks with batch B see exactly the tokens of one rank with batch 2B. At the end of the stream (when the next
    global batch would not fit) the loader starts over and counts an epoch; the short tail is skipped that pass.
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
    ):
        if batch_size < 1 or seq_len < 1:
            raise ConfigError(f"batch size and sequence length must be positive (got {batch_size}, {seq_len})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not one of the {world_size} ranks")
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
        self.position = 0
        self.epoch = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y), each (batch_size, seq_len) int64 on the loader's device; y is x shifted by one."""
        if self.position + self.stride + 1 > len(self.tokens):
            self.position = 0
            self.epoch += 1
        start = self.position + self.rank * self.batch_size * self.seq_len
        buf = self.tokens[start:start + self.batch_size * self.seq_len + 1]
        x = buf[:-1].view(self.batch_size, self.seq_len)
        y = buf[1:].view(self.batch_size, self.seq_len)
        self.position += self.stride
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def state_dict(self) -> dict[str, int]:
        """Where the next global batch starts and how many full passes are done: all a resume needs."""
        return {"position": self.position, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        position, epoch = state.get("position"), state.get("epoch")
        if not isinstance(position, int) or not isinstance(epoch, int) or position < 0 or epoch < 0:
            raise DataError(f"loader state must hold non-negative integers 'position' and 'epoch' (got {state})")
        if position > len(self.tokens):
            raise DataError(f"loader position {position:,} is past the end of the token stream "
                            f"({len(self.tokens):,} tokens): the data or tokenizer changed since the checkpoint")
        self.position = position
        self.epoch = epoch
