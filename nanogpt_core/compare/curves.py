"""Train the all-reference model and the candidate side by side: same seed, same weights, same batches, same
schedule, so any difference in the loss curves comes from the swapped components."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import nullcontext

import torch

from nanogpt_core.checks.harness import seeded
from nanogpt_core.compare.report import Curve
from nanogpt_core.data.corpus import default_corpus_documents
from nanogpt_core.data.loader import TokenLoader
from nanogpt_core.device import autocast_context, synchronize
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.use_spec import format_use
from nanogpt_core.train.settings import TrainSettings
from nanogpt_core.train.step import optimizer_step

BYTE_VOCAB = 256  # the corpus is fed as UTF-8 bytes: no tokenizer to train, and every text fits
DATA_CHOICES = ("corpus", "synthetic")


def default_compare_config() -> GPTConfig:
    """Big enough to learn something visible in 50 steps, small enough that a full compare takes well under a
    minute on two CPU cores."""
    return GPTConfig(sequence_len=64, vocab_size=BYTE_VOCAB, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)


def synthetic_stream(n_tokens: int, vocab_size: int, seed: int) -> torch.Tensor:
    """A Markov chain where each token has 3 likely successors: structure a model can learn in a few steps,
    deterministic, with no files. Used when the built-in corpus is not wanted (tests)."""
    g = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, vocab_size, (vocab_size, 3), generator=g)
    choice = torch.randint(0, 3, (n_tokens,), generator=g)
    noise = torch.rand(n_tokens, generator=g) < 0.1
    random_tokens = torch.randint(0, vocab_size, (n_tokens,), generator=g)
    out = torch.empty(n_tokens, dtype=torch.int64)
    tok = 0
    for i in range(n_tokens):
        tok = int(random_tokens[i]) if noise[i] else int(successors[tok, choice[i]])
        out[i] = tok
    return out


def corpus_stream(vocab_size: int) -> torch.Tensor:
    """The built-in corpus as a UTF-8 byte stream, documents separated by a 0 byte (bytes >= vocab wrap around)."""
    data = b"\0".join(doc.encode("utf-8") for doc in default_corpus_documents())
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64) % vocab_size


def make_batches(config: GPTConfig, steps: int, batch_size: int, data: str, seed: int,
                 device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    needed = steps * batch_size * config.sequence_len + 1
    if data == "synthetic":
        stream = synthetic_stream(needed, config.vocab_size, seed)
    else:
        stream = corpus_stream(config.vocab_size)
    loader = TokenLoader(stream, batch_size, config.sequence_len, device=device)
    return [loader.next_batch() for _ in range(steps)]


class SavedTensorBytes:
    """Counts the bytes autograd keeps for backward (activations), each storage once, parameters excluded: the
    part of memory a component's implementation decides, measurable on any device."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.total = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self.seen:
            self.seen.add(ptr)
            self.total += storage.nbytes()
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def train_curve(use: dict[str, str], config: GPTConfig, batches: list[tuple[torch.Tensor, torch.Tensor]],
                seed: int, device: torch.device, state: dict[str, torch.Tensor] | None = None) -> Curve:
    """The training loop's own step (`train.step.optimizer_step`: clip at 1.0, schedule, every optimizer) for
    len(batches) steps. `state`: start from these weights instead of this model's own init."""
    with seeded(seed):
        model = build_model(config, use=use, device=device)
        model.init_weights()
    if state is not None:
        model.load_state_dict(state)
    settings = TrainSettings(num_iterations=len(batches))  # nanochat's learning rates, schedule and clipping
    optimizers = model.setup_optimizers(**settings.optimizer_lrs())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses: list[float] = []
    saved = SavedTensorBytes(model)
    step_times: list[float] = []
    for step, (x, y) in enumerate(batches):
        synchronize(device)
        t0 = time.perf_counter()
        # count saved activations on the first step only: hooks on every step would distort the timing
        counting = torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack) if step == 0 else nullcontext()
        with autocast_context(device), counting:
            loss = model(x, y)
        loss.backward()
        optimizer_step(model, optimizers, step, settings)
        value = loss.item()
        synchronize(device)
        if step > 0:  # step 0 pays one-off costs (allocations, lazy init)
            step_times.append(time.perf_counter() - t0)
        losses.append(value)
        if value != value or value in (float("inf"), float("-inf")):
            break
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    # the median step: robust to a neighbour process stealing the CPU for a few steps
    median = sorted(step_times)[len(step_times) // 2] if step_times else 0.0
    tokens_per_s = batches[0][0].numel() / median if median else 0.0
    return Curve(format_use(use), losses, tokens_per_s, saved.total, peak, shared_weights=state is not None)


def sparkline(values: list[float]) -> str:
    """Unicode bars for a terminal: the shape of a curve at a glance."""
    bars = "▁▂▃▄▅▆▇█"
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(bars[min(7, int((v - lo) / span * 8))] if v in finite else "!" for v in values)


def every(values: list[float], n: int) -> Iterator[tuple[int, float]]:
    """(step, value) for about n evenly spaced steps, always including the last."""
    if not values:
        return
    stride = max(1, len(values) // n)
    picked = list(range(0, len(values), stride))
    if picked[-1] != len(values) - 1:
        picked.append(len(values) - 1)
    for i in picked:
        yield i, values[i]
