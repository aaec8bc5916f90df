"""What each kind of comparison asks, as data: the one `compare` pipeline reads a `Mode` and nothing else differs.

- "equal": the candidate claims to compute what the reference computes (a learner's re-implementation). Every
  contract check applies, each component is compared with the reference on the same weights (isolation), and the
  side-by-side training has an equality verdict: the loss curves must agree within a tolerance.
- "design": the candidate is meant to differ (SwiGLU is not relu², a sliding window is not full attention). Only
  the promises every implementation makes are checked (shapes, causality, the KV cache, gradients, every parameter
  in one optimizer group); the checks that pin *how* the reference computes are skipped, and the training curves,
  speed and memory are the result, with no verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.modules import Check
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.whole_model import IN_MODEL_CHECKS, MODEL_CHECKS, init_every_parameter, softcap_probe
from nanogpt_core.errors import ConfigError


def softcap(bench: Bench) -> CheckResult:
    """The logit softcap of the assembled model (a probe, so it takes the bench like every check)."""
    return softcap_probe(bench.model(), bench.tokens())


@dataclass(frozen=True)
class Mode:
    name: str
    equality: bool  # isolation against the reference, and a pass/fail verdict on the training curves
    probes: tuple[Check, ...]  # checks of the assembled candidate model
    skipped: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # component -> {check name: why}

    def skip(self, component: str) -> frozenset[str]:
        return frozenset(self.skipped.get(component, {}))


# Per component, the checks (by the name a CheckResult reports) that test the reference's design rather than the
# component's contract, with the reason a different design may fail them.
PINNED_CHECKS: dict[str, dict[str, str]] = {
    "norm": {
        "eps": "another norm may stabilise differently",
        "keeps the mean": "LayerNorm subtracts the mean by design",
        "divides by the RMS": "another norm divides by another statistic (LayerNorm: the standard deviation)",
    },
    "rotary": {
        "relative-offset property": "another position scheme (ALiBi, none) need not rotate q and k",
        "rotation keeps vector lengths": "another position scheme need not be a rotation",
        "rotary convention": "another rotary layout (interleaved pairs) is a design choice",
        "angle zero at position 0": "another position scheme need not be a rotation",
        "direction of rotation": "another position scheme need not be a rotation",
        "frequencies": "another base or frequency scheme is a design choice",
    },
    "attention": {
        "parameters": "a design may add or reshape parameters",
        "QK-norm": "QK-norm is nanochat's choice, not a contract of attention",
        "heads layout": "compares with the reference's output, which a design need not reproduce",
        "values untouched": "a design may transform the values",
        "positions matter": "a design may encode positions another way (or not at all)",
        "softmax scale": "the scale is a design choice",
        "QK-norm placement": "where a design normalises q and k is its own choice",
    },
    "mlp": {
        "parameters": "a design may use its own hidden size or extra matrices (SwiGLU's gate)",
        "relu² activation": "the activation is the design choice under test",
        "c_proj last": "a design may end with something other than c_proj",
    },
    "block": {
        "pre-norm": "where the norm sits (pre, post, sandwich) is a design choice",
        "pre-norm residual": "post-norm is a design choice",
        "residual weights": "scaled residuals are a design choice",
        "MLP input": "a parallel block (GPT-J) is a design choice",
    },
    "gpt": {
        "parameters": "a top-level design may add parameters (value embeddings, per-layer scalars)",
        "softcap": "the cap's value is a design choice; the softcap probe still asks that logits stay bounded",
        "embedding normalised": "a norm after the embedding is nanochat's choice, not a contract of the top level",
        "final norm before the head": "a norm before the head is nanochat's choice, not a contract of the top level",
        "embedding and head apart": "tied embeddings are a design of their own",
    },
    "init": {
        "init std": "another init scheme draws other stds",
        "normal draws": "another init scheme may draw from another distribution",
        "zeroed output projections": "another init scheme need not zero c_proj and lm_head",
        "first loss = ln(vocab)": "follows from a zeroed lm_head, which another scheme need not have",
        "random weights are random": "another init scheme may zero other weights",
    },
    "optimizer": {
        "Muon for block matrices, AdamW for the rest": "another optimizer is the design under test",
        "learning rates": "a design may use other learning rates",
        "weight decay": "a design may decay weights",
        "AdamW eps": "a design may use another eps",
        "AdamW betas": "a design may use other betas",
        "Muon Nesterov": "a design may use plain momentum",
        "Muon momentum": "a design may use another momentum",
    },
    "generate": {
        "samples follow softmax(logits / T)": "another sampling scheme (min-p, nucleus) is a design choice",
        "top_k samples follow softmax(top_k logits / T)": "another sampling scheme is a design choice",
        "samples at T > 0": "another sampling scheme is a design choice",
        "samples follow the logits": "another sampling scheme is a design choice",
        "temperature used": "another sampling scheme is a design choice",
        "temperature divides": "another sampling scheme is a design choice",
        "top_k used": "another sampling scheme is a design choice",
        "top_k ids": "another sampling scheme is a design choice",
        "top_k uses the temperature": "another sampling scheme is a design choice",
    },
}

EQUAL = Mode("equal", equality=True, probes=(*IN_MODEL_CHECKS, softcap))
# A different design also gets the whole-model init and optimizer checks: they see its extra parameters.
DESIGN = Mode("design", equality=False, probes=(*IN_MODEL_CHECKS, softcap, init_every_parameter,
                                                *MODEL_CHECKS["optimizer"]), skipped=PINNED_CHECKS)
MODES: dict[str, Mode] = {m.name: m for m in (EQUAL, DESIGN)}


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise ConfigError(f"unknown compare mode {name!r}; available: {', '.join(MODES)}.")
    return MODES[name]
