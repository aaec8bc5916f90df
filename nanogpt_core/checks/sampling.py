"""Is generate sampling from softmax(logits / T)? A statistical test, with fixed seeds and a stated false-alarm rate.

For each setting (temperature, top_k), `SAMPLES` first tokens are drawn after the same prompt with seeds 0, 1, ...
(each call of generate is seeded on its own, so the draws are independent) and compared with the distribution the
contract asks for by Pearson's chi-square test (outcomes expected fewer than 5 times pooled into one bin). A
correct sampler fails a test with probability `FALSE_ALARM`; with the seeds fixed the outcome is reproducible, and a
correct sampler written another way (Gumbel-max, inverse CDF) draws other tokens but passes with that probability.

When a test fails, the same samples are scored under the distributions classic mistakes produce (the logits not
divided by T, multiplied by it, a uniform distribution, the argmax every time, ...): a mistake is named when it
explains the samples at least 1/FALSE_ALARM times better than the contract's distribution.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from nanogpt_core.checks.harness import Bench, config_key, seeded
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.registry import get_implementation

SAMPLES = 200
FALSE_ALARM = 1e-4  # per test; 5 settings make the chance that a correct sampler fails any of them <= 5e-4
EVIDENCE = math.log(1 / FALSE_ALARM)  # log-likelihood margin for naming a mistake
TEMPERATURES = (0.5, 1.0, 2.0)
TOP_K = 5
TOP_K_SETTINGS = ((0.5, TOP_K), (2.0, TOP_K))
PROMPT = [5, 17, 3, 42]
HEAD_SHARPENING = 6.0  # lm_head x6 on PyTorch's default init: distinct logits, so temperature visibly matters


def generation_model(bench: Bench):
    """PyTorch's default init (seeded) with a sharpened head, every component reference but the one under test."""
    with seeded(0):
        model = bench.model()
    with torch.no_grad():
        model.lm_head.weight.mul_(HEAD_SHARPENING)
    model.eval()
    return model


def next_logits(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens], device=model.get_device()))[0, -1].double()


@functools.lru_cache(maxsize=1024)  # a few KB each; a test run samples ~100 implementations x 5 settings
def _counts(impl_set: str, implementation: Callable, key: tuple, temperature: float,
            top_k: int | None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    bench = Bench(impl_set, "generate", GPTConfig(**dict(key)))
    model = generation_model(bench)
    counts = torch.zeros(bench.config.vocab_size, dtype=torch.float64)
    for seed in range(SAMPLES):
        token = next(iter(implementation(model, PROMPT, 1, temperature=temperature, top_k=top_k, seed=seed)))
        counts[int(token)] += 1
    return tuple(int(c) for c in counts), tuple(next_logits(model, PROMPT).tolist())


def samples(bench: Bench, temperature: float, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts over the vocabulary of SAMPLES first tokens, the logits they were drawn from)."""
    key = config_key(bench.config)
    counts, logits = _counts(bench.impl_set, get_implementation(bench.impl_set, "generate"), key, temperature, top_k)
    return torch.tensor(counts, dtype=torch.float64), torch.tensor(logits, dtype=torch.float64)


def contract_distribution(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """softmax(logits / T), restricted to the top_k largest logits when top_k is given."""
    scaled = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k).values[-1]
        scaled = scaled.masked_fill(logits < kth, float("-inf"))
    return scaled.softmax(-1)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square p-value of `counts` under `probs`; 0 when a sample has probability 0."""
    if (counts[probs == 0] > 0).any():
        return 0.0
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    observed_bins = torch.cat([counts[big], counts[~big].sum().view(1)])
    expected_bins = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = expected_bins > 0
    observed_bins, expected_bins = observed_bins[keep], expected_bins[keep]
    dof = observed_bins.numel() - 1
    if dof < 1:
        return 1.0
    stat = ((observed_bins - expected_bins) ** 2 / expected_bins).sum()
    return torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2).item()


def log_likelihood(counts: torch.Tensor, probs: torch.Tensor) -> float:
    return (counts * probs.clamp_min(1e-12).log()).sum().item()


def fitted_temperature(counts: torch.Tensor, logits: torch.Tensor) -> float:
    """The temperature whose softmax(logits / T) makes the samples most likely (T from 0.01 to 100)."""
    grid = torch.logspace(-2, 2, 401, dtype=torch.float64)
    scores = torch.tensor([log_likelihood(counts, (logits / t).softmax(-1)) for t in grid])
    return grid[scores.argmax()].item()
