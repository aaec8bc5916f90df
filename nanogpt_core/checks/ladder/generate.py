"""generate's ladder: the form of what it yields, seeding, how it feeds the KV cache, greedy decoding, then the
sampled distributions scored under each classic mistake (`nanogpt_core.checks.sampling`)."""

from __future__ import annotations

import torch

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.modules import result
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.sampling import (
    EVIDENCE,
    PROMPT,
    TOP_K,
    TOP_K_SETTINGS,
    contract_distribution,
    fitted_temperature,
    generation_model,
    log_likelihood,
    samples,
)
from nanogpt_core.checks.whole_model import (
    generate_form,
    generate_greedy,
    generate_reproducible,
    generate_temperature,
    generate_top_k,
)

HOT, COLD = 2.0, 0.5  # the temperatures where a temperature mistake shows both ways


class RecordingModel:
    """The model as generate sees it, recording each forward: (tokens fed, the cache's position before)."""

    def __init__(self, model) -> None:
        self._model = model
        self.calls: list[tuple[int, int | None]] = []

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def __call__(self, idx: torch.Tensor, *args, **kwargs):
        cache = kwargs.get("kv_cache", args[1] if len(args) > 1 else None)
        self.calls.append((idx.size(1), None if cache is None else cache.get_pos()))
        return self._model(idx, *args, **kwargs)


def kv_cache_use(b: Bench) -> CheckResult:
    """With a cache, the prompt goes in once and then one new token per step, each where the cache left off."""
    recorder = RecordingModel(generation_model(b))
    list(b.impl()(recorder, PROMPT, 4, temperature=0.0))
    cached = [(n, pos) for n, pos in recorder.calls if pos is not None]
    for i, (n, pos) in enumerate(cached[1:], start=2):
        if n != 1:
            return result("KV-cache use", False, f"forward {i} fed {n} tokens into a cache already holding {pos}: "
                          "after the prompt, feed only the token just sampled", {"calls": recorder.calls},
                          "KV cache misused in generate")
    first = cached[0] if cached else None
    if first is not None and first[1] != 0:
        return result("KV-cache use", False, f"the first forward used a cache at position {first[1]}", {},
                      "KV cache misused in generate")
    return result("KV-cache use", True, "the prompt once, then one token per forward" if cached else
                  "no KV cache used (recomputes the prefix: slower, same tokens)", {"calls": recorder.calls})


# Each classic mistake as the distribution it samples from, given the logits z, T and top_k.
def _top(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    return logits.topk(k).values[-1] if k else logits.min()


MISTAKES = {
    "contract": lambda z, t, k: contract_distribution(z, t, k),
    "greedy": lambda z, t, k: torch.nn.functional.one_hot(z.argmax(), z.numel()).double(),
    "uniform": lambda z, t, k: contract_distribution(torch.zeros_like(z), 1.0, None) if k is None else
    (z >= _top(z, k)).double() / k,
    "temperature ignored": lambda z, t, k: contract_distribution(z, 1.0, k),
    "temperature inverse": lambda z, t, k: contract_distribution(z, 1 / t, k),
    "top_k ignored": lambda z, t, k: contract_distribution(z, t, None),
    "top_k positions": lambda z, t, k: torch.cat([(z.topk(k).values / t).softmax(-1),
                                                  torch.zeros(z.numel() - k, dtype=torch.float64)]),
    "top_k plus one": lambda z, t, k: contract_distribution(z, t, k + 1),
    "top_k minus one": lambda z, t, k: contract_distribution(z, t, k - 1),
}
NO_TOP_K = ((COLD, None), (HOT, None))


def best_explanation(b: Bench, settings, candidates: tuple[str, ...]) -> tuple[str, float]:
    """The mistake (or "contract") whose distribution makes the samples of `settings` most likely, and by how many
    nats it beats the contract's."""
    scores = dict.fromkeys(("contract", *candidates), 0.0)
    for t, k in settings:
        counts, logits = samples(b, t, k)
        for name in scores:
            scores[name] += log_likelihood(counts, MISTAKES[name](logits, t, k))
    best = max(scores, key=scores.get)
    return best, scores[best] - scores["contract"]


SAMPLING_MISTAKES = ("greedy", "uniform", "temperature ignored", "temperature inverse")
TOP_K_MISTAKES = ("top_k ignored", "top_k positions", "temperature ignored", "uniform", "top_k plus one",
                  "top_k minus one")


def _mistake_probe(b: Bench, mistake: str, settings, candidates, name: str, diagnosis: str, explain) -> CheckResult:
    best, margin = best_explanation(b, settings, candidates)
    found = best == mistake and margin > EVIDENCE
    return result(name, not found, explain() if found else f"best explained by {best}",
                  {"best_explanation": best, "log_likelihood_margin": margin}, diagnosis)


def _fits(b: Bench) -> str:
    fits = {t: fitted_temperature(samples(b, t)[0], samples(b, t)[1]) for t, _ in NO_TOP_K}
    return ", ".join(f"asked for T={t:g}, the samples fit T={f:.2g}" for t, f in fits.items())


def greedy_sampling(b: Bench) -> CheckResult:
    def explain() -> str:
        counts, logits = samples(b, HOT)
        return (f"at T={HOT:g} all {int(counts.sum())} samples are the argmax token (softmax(logits / T) gives it "
                f"p = {(logits / HOT).softmax(-1).max().item():.2f})")

    return _mistake_probe(b, "greedy", NO_TOP_K, SAMPLING_MISTAKES, "samples at T > 0",
                          "sampling is greedy at temperature > 0", explain)


def uniform_sampling(b: Bench) -> CheckResult:
    def explain() -> str:
        counts, logits = samples(b, COLD)
        return (f"at T={COLD:g} the samples spread over {int((counts > 0).sum())} of {logits.numel()} tokens, as a "
                "uniform draw does: every probability is equal")

    return _mistake_probe(b, "uniform", NO_TOP_K, SAMPLING_MISTAKES, "samples follow the logits",
                          "sampling softmax over the wrong dim", explain)


def temperature_ignored(b: Bench) -> CheckResult:
    return _mistake_probe(b, "temperature ignored", NO_TOP_K, SAMPLING_MISTAKES, "temperature used",
                          "temperature ignored", lambda: _fits(b))


def temperature_inverse(b: Bench) -> CheckResult:
    return _mistake_probe(b, "temperature inverse", NO_TOP_K, SAMPLING_MISTAKES, "temperature divides",
                          "temperature applied inversely", lambda: _fits(b))


def top_k_ignored(b: Bench) -> CheckResult:
    def explain() -> str:
        t, k = TOP_K_SETTINGS[0]
        counts, logits = samples(b, t, k)
        outside = int((counts * (contract_distribution(logits, t, k) == 0)).sum().item())
        return f"with top_k={k} at T={t:g}, {outside} of {int(counts.sum())} samples are outside the {k} most likely"

    return _mistake_probe(b, "top_k ignored", TOP_K_SETTINGS, TOP_K_MISTAKES, "top_k used", "top_k ignored", explain)


def top_k_ids(b: Bench) -> CheckResult:
    return _mistake_probe(b, "top_k positions", TOP_K_SETTINGS, TOP_K_MISTAKES, "top_k ids",
                          "top_k ids not mapped back",
                          lambda: f"with top_k={TOP_K} every sample is an id below {TOP_K}, with the frequencies of "
                          f"the top {TOP_K} logits' ranks: positions among the top_k returned as ids")


def top_k_temperature(b: Bench) -> CheckResult:
    return _mistake_probe(b, "temperature ignored", TOP_K_SETTINGS, TOP_K_MISTAKES, "top_k uses the temperature",
                          "top_k ignores temperature",
                          lambda: f"with top_k={TOP_K} the samples at T={COLD:g} and T={HOT:g} both follow softmax of "
                          "the top_k logits at T=1")


def top_k_count(b: Bench) -> CheckResult:
    best, margin = best_explanation(b, TOP_K_SETTINGS, TOP_K_MISTAKES)
    found = best in ("top_k plus one", "top_k minus one") and margin > EVIDENCE
    kept = TOP_K + (1 if best == "top_k plus one" else -1)
    return result("top_k keeps k tokens", not found, f"asked for top_k={TOP_K}, the samples come from the {kept} most "
                  "likely tokens" if found else f"best explained by {best}", {"best_explanation": best,
                  "log_likelihood_margin": margin}, "top_k keeps the wrong tokens")


PROBES = (generate_form, generate_reproducible, kv_cache_use, generate_greedy, greedy_sampling, uniform_sampling,
          temperature_ignored, temperature_inverse, generate_temperature, top_k_ignored, top_k_ids,
          top_k_temperature, top_k_count, generate_top_k)
