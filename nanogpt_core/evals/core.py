"""The CORE metric (DCLM, arXiv:2406.11794), scored exactly as nanochat's `core_eval` and `base_eval` score it.

Every item of a task becomes one or more token sequences (`<|bos|>` + a prompt from `evals.prompts`) and a span of
each that is scored:

- multiple_choice: one sequence per choice; the span is what follows the prefix all of them share. The model picks
  the choice whose span has the lowest mean cross-entropy.
- schema: one sequence per context option; the span is the suffix all of them share (the continuation). The model
  picks the context after which the continuation has the lowest mean cross-entropy.
- language_modeling: one sequence; the span is the continuation. Correct only if greedy decoding (the argmax at
  every position of the span) reproduces it exactly.

A task's accuracy is the fraction of items picked right; centred on its random baseline b (percent) it is
(accuracy - b/100) / (1 - b/100): 0 for guessing, 1 for perfect, negative for worse than guessing. CORE is the mean
of the centred accuracies over the bundle's tasks (22 in nanochat's bundle).

Where nanochat forwards one item at a time, sequences of many items go through the model together here: sorted by
length, right-padded with `<|bos|>` up to `batch_tokens` tokens per forward. Padding on the right changes nothing
before it (attention is causal), so every span sees the logits it would see alone. Under torchrun the items are
split over the ranks (rank r takes items r, r + N, ...) and the counts summed, as nanochat does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import DataError
from nanogpt_core.evals.bundle import CoreBundle, CoreTask
from nanogpt_core.evals.prompts import render_prompts

DEFAULT_BATCH_TOKENS = 8192  # tokens per forward when nothing says better (training uses its micro-batch)


@dataclass(frozen=True)
class ScoredSequence:
    """One sequence to forward and the span [start, end) of it whose tokens are scored."""

    item: int
    option: int
    tokens: list[int]
    start: int
    end: int


@dataclass
class TaskResult:
    """One task's outcome: how many items, how many right, and what guessing would score."""

    label: str
    task_type: str
    num_fewshot: int
    random_baseline: float  # percent
    items: int
    correct: int
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.items

    @property
    def centered(self) -> float:
        """The accuracy rescaled so that guessing is 0 and perfect is 1 (DCLM's centring)."""
        baseline = 0.01 * self.random_baseline
        return (self.accuracy - baseline) / (1.0 - baseline)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "task_type": self.task_type, "num_fewshot": self.num_fewshot,
                "random_baseline": self.random_baseline, "items": self.items, "correct": self.correct,
                "accuracy": self.accuracy, "centered": self.centered, "seconds": self.seconds}


@dataclass
class CoreResult:
    """Every task's result and their mean centred accuracy, the CORE metric."""

    tasks: list[TaskResult] = field(default_factory=list)
    max_per_task: int = -1

    @property
    def core(self) -> float:
        return sum(t.centered for t in self.tasks) / len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {"core": self.core, "max_per_task": self.max_per_task,
                "tasks": {t.label: t.to_dict() for t in self.tasks}}


def evaluate_core(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    bundle: CoreBundle,
    *,
    max_per_task: int = -1,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    on_task: Callable[[TaskResult], None] | None = None,
) -> CoreResult:
    """CORE of `model` (any module mapping (B, T) token ids to (B, T, vocab) logits) on every task of `bundle`,
    `max_per_task` items each (all if <= 0). `on_task` hears each task's result as it is done (for progress lines).

    Call it in eval mode, under the autocast the model runs in; under torchrun every rank must call it."""
    result = CoreResult(max_per_task=max_per_task)
    for task in bundle.tasks:
        t0 = time.time()
        items = bundle.items(task, max_per_task)
        outcome = evaluate_task(model, tokenizer, task, items, batch_tokens=batch_tokens)
        outcome.seconds = time.time() - t0
        result.tasks.append(outcome)
        if on_task is not None:
            on_task(outcome)
    return result


@torch.no_grad()
def evaluate_task(model: torch.nn.Module, tokenizer: Tokenizer, task: CoreTask, items: list[dict[str, Any]], *,
                  batch_tokens: int = DEFAULT_BATCH_TOKENS) -> TaskResult:
    """How many of `items` the model gets right (this rank's share, summed over ranks under torchrun)."""
    device = model.get_device() if hasattr(model, "get_device") else next(model.parameters()).device
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    mine = list(range(rank, len(items), world))
    sequences = task_sequences(task, items, tokenizer, mine, getattr(model, "rotary_seq_len", None))
    mean_losses, exact = score_sequences(model, sequences, tokenizer.bos_id, batch_tokens, device)
    by_item: dict[int, list[int]] = {}
    for n, seq in enumerate(sequences):
        by_item.setdefault(seq.item, []).append(n)
    correct = torch.zeros(len(items), dtype=torch.float32, device=device)
    for index in mine:
        rows = by_item[index]
        if task.task_type == "language_modeling":
            right = exact[rows[0]]
        else:  # the option of lowest mean loss; the first of equals, as nanochat's list.index(min(...))
            losses = [mean_losses[n] for n in rows]
            right = losses.index(min(losses)) == items[index]["gold"]
        correct[index] = float(right)
    if distributed:
        dist.all_reduce(correct, op=dist.ReduceOp.SUM)
    return TaskResult(task.label, task.task_type, task.num_fewshot, task.random_baseline, len(items),
                      int(correct.sum().item()))


def task_sequences(task: CoreTask, items: list[dict[str, Any]], tokenizer: Tokenizer, indices: list[int],
                   max_tokens: int | None = None) -> list[ScoredSequence]:
    """The scored sequences of items `indices` of a task, each cut to its last `max_tokens` tokens where the model
    cannot take more (nanochat crops so for models with a maximum length)."""
    prompts = [render_prompts(task.task_type, items, i, task.continuation_delimiter, task.num_fewshot)
               for i in indices]
    flat = tokenizer.encode_batch([p for group in prompts for p in group], prepend_bos=True)
    sequences, at = [], 0
    for index, group in zip(indices, prompts):
        tokens, at = flat[at:at + len(group)], at + len(group)
        for option, (seq, start, end) in enumerate(_spans(task, tokens, index)):
            if max_tokens is not None and len(seq) > max_tokens:
                cut = len(seq) - max_tokens
                seq, start, end = seq[cut:], max(1, start - cut), end - cut
            sequences.append(ScoredSequence(index, option, seq, start, end))
    return sequences


def _spans(task: CoreTask, tokens: list[list[int]], index: int) -> list[tuple[list[int], int, int]]:
    """(tokens, start, end) of each sequence of one item, nanochat's `batch_sequences_*`."""
    if task.task_type == "multiple_choice":  # the choices follow a shared prefix
        start = common_length(tokens, from_end=False)
        return [(t, start, len(t)) for t in tokens]
    if task.task_type == "schema":  # the continuation is a shared suffix
        suffix = common_length(tokens, from_end=True)
        return [(t, len(t) - suffix, len(t)) for t in tokens]
    without, with_continuation = tokens
    start = len(without)
    if start >= len(with_continuation) or with_continuation[:start] != without:
        raise DataError(f"{task.label}: item {index}'s prompt without its continuation does not tokenize to a prefix "
                        f"of the prompt with it, so the continuation's tokens cannot be told apart; this tokenizer "
                        f"splits text differently from nanochat's (its split pattern)")
    return [(with_continuation, start, len(with_continuation))]


def common_length(sequences: list[list[int]], from_end: bool) -> int:
    """How many tokens all `sequences` share at the start (or, `from_end`, at the end)."""
    shortest = min(len(s) for s in sequences)
    for i in range(shortest):
        position = -1 - i if from_end else i
        if any(s[position] != sequences[0][position] for s in sequences):
            return i
    return shortest


def score_sequences(model: torch.nn.Module, sequences: list[ScoredSequence], pad_id: int, batch_tokens: int,
                    device: torch.device) -> tuple[list[float], list[bool]]:
    """For each sequence: the mean cross-entropy of its span's tokens, and whether the argmax predicts every one.

    The token at position p is predicted by the logits at p - 1, so a span [start, end) reads logits
    start - 1 .. end - 2. An empty span has mean loss NaN, as nanochat's mean of nothing."""
    mean_losses: list[float] = [float("nan")] * len(sequences)
    exact: list[bool] = [False] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda n: -len(sequences[n].tokens))
    for batch in _batches(order, sequences, batch_tokens):
        width = len(sequences[batch[0]].tokens)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        starts = torch.tensor([sequences[n].start for n in batch])
        ends = torch.tensor([sequences[n].end for n in batch])
        for row, n in enumerate(batch):
            ids[row, :len(sequences[n].tokens)] = torch.tensor(sequences[n].tokens)
        ids, starts, ends = ids.to(device), starts.to(device), ends.to(device)
        logits = model(ids).float()
        targets = torch.roll(ids, shifts=-1, dims=1)  # logits at p predict the token at p + 1
        losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(ids)
        position = torch.arange(width, device=device)
        in_span = (position >= starts[:, None] - 1) & (position < ends[:, None] - 1)
        means = (losses * in_span).sum(dim=1) / in_span.sum(dim=1)
        hits = ((logits.argmax(dim=-1) == targets) | ~in_span).all(dim=1)
        for n, mean, hit in zip(batch, means.tolist(), hits.tolist()):
            mean_losses[n], exact[n] = mean, hit
    return mean_losses, exact


def _batches(order: list[int], sequences: list[ScoredSequence], batch_tokens: int) -> list[list[int]]:
    """Consecutive runs of `order` (longest first) whose padded size stays within `batch_tokens` (a sequence
    longer than that goes alone)."""
    batches: list[list[int]] = []
    for n in order:
        if batches and (len(batches[-1]) + 1) * len(sequences[batches[-1][0]].tokens) <= batch_tokens:
            batches[-1].append(n)
        else:
            batches.append([n])
    return batches
