"""Validation bits per byte, exactly as nanochat's `evaluate_bpb`.

Loss per token depends on the tokenizer (a bigger vocabulary makes fewer, harder tokens), so runs with different
tokenizers cannot be compared by loss. Dividing the total loss by the number of bytes the targets stand for can:
bpb = sum of nats over target tokens / (ln 2 * their total UTF-8 bytes). Special tokens (0 bytes) and ignored
targets (-1) count in neither sum.

`validation_bpb` is the number a run reports: the run's own validation documents, read the way training reads them
(the same loader, batch and number of batches), so `nanogpt eval RUN --bpb` gives the figure the run logged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

from nanogpt_core.data.corpus import load_documents, split_documents
from nanogpt_core.data.loader import TokenLoader, tokenize_documents
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.device import autocast_context
from nanogpt_core.train.distributed import Ranks
from nanogpt_core.train.settings import TrainSettings, eval_steps


def _batches(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A TokenLoader (anything with `next_batch`) or any iterable of (x, y) pairs, as nanochat passes."""
    if hasattr(loader, "next_batch"):
        while True:
            yield loader.next_batch()
    yield from loader


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, loader: Iterable, steps: int, token_bytes: torch.Tensor) -> float:
    """Bits per byte of `model` over `steps` batches of `loader`; `token_bytes` is `Tokenizer.token_bytes()`.

    Sums over all ranks when torch.distributed is initialised. Returns inf if the targets hold no bytes at all.
    """
    device = model.get_device() if hasattr(model, "get_device") else next(model.parameters()).device
    token_bytes = token_bytes.to(device)
    total_nats = torch.tensor(0.0, dtype=torch.float32, device=device)
    total_bytes = torch.tensor(0, dtype=torch.int64, device=device)
    was_training = model.training
    model.eval()
    try:
        batches = _batches(loader)
        for _ in range(steps):
            x, y = next(batches)
            loss = model(x, y, loss_reduction="none").view(-1)  # nats per target token
            y = y.reshape(-1)
            valid = y >= 0  # -1 marks an ignored target: it must not index token_bytes
            num_bytes = torch.where(valid, token_bytes[torch.where(valid, y, torch.zeros_like(y))],
                                    torch.zeros_like(y, dtype=token_bytes.dtype))
            total_nats += (loss.float() * (num_bytes > 0)).sum()
            total_bytes += num_bytes.sum()
    finally:
        model.train(was_training)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total_nats, op=dist.ReduceOp.SUM)
        dist.all_reduce(total_bytes, op=dist.ReduceOp.SUM)
    nats, nbytes = total_nats.item(), total_bytes.item()
    if nbytes == 0:
        return float("inf")
    return nats / (math.log(2) * nbytes)


def text_bpb(model: torch.nn.Module, tokenizer: Tokenizer, text: str, seq_len: int, batch_size: int = 8) -> float:
    """Bits per byte of `text`, every byte predicted exactly once: the text as one document (<|bos|> first) cut into
    consecutive windows of `seq_len` targets, each window predicted from its own tokens (and the last token of the
    window before). This is how a held-out text (tinyshakespeare's last 10%, `benchmarks/time_to_quality.py`) is
    scored independently of any run's settings; it runs in the model's own precision (fp32 unless the caller
    enters an autocast)."""
    ids = torch.tensor(tokenizer.encode(text, prepend_bos=True), dtype=torch.int64)
    token_bytes = tokenizer.token_bytes()
    if int(token_bytes[ids[1:]].sum()) != len(text.encode("utf-8")):  # a special token's text, say
        raise ValueError("the targets do not spell the text's bytes exactly once; is a special token in the text?")
    device = model.get_device() if hasattr(model, "get_device") else next(model.parameters()).device
    full = (len(ids) - 1) // seq_len
    windows = [ids[i * seq_len:(i + 1) * seq_len + 1] for i in range(full)]
    batches = [torch.stack(windows[i:i + batch_size]) for i in range(0, full, batch_size)]
    if (len(ids) - 1) % seq_len:
        batches.append(ids[full * seq_len:].unsqueeze(0))  # the tail: a shorter window
    pairs = [(b[:, :-1].to(device), b[:, 1:].to(device)) for b in batches]
    return evaluate_bpb(model, pairs, len(pairs), token_bytes)


def validation_tokens(settings: TrainSettings, tokenizer: Tokenizer) -> torch.Tensor:
    """The token stream of the run's validation documents (`settings.data`, split as training splits it)."""
    _, val_docs = split_documents(load_documents(settings.data))
    return tokenize_documents(val_docs, tokenizer)


def validation_bpb(model: torch.nn.Module, val_tokens: torch.Tensor, settings: TrainSettings, ranks: Ranks,
                   device: torch.device, token_bytes: torch.Tensor) -> float:
    """Val bits per byte as training evaluates it: a fresh loader over `val_tokens` (so every evaluation sees the
    same text), `eval_tokens` worth of batches split over the ranks, in the run's precision (`settings.bf16`)."""
    loader = TokenLoader(val_tokens, settings.device_batch_size, settings.max_seq_len, rank=ranks.rank,
                         world_size=ranks.world_size, device=device)
    steps = eval_steps(settings.eval_tokens, settings.device_batch_size, settings.max_seq_len, ranks.world_size)
    with autocast_context(device, settings.bf16):
        return evaluate_bpb(model, loader, steps, token_bytes)
