"""The optimizer's ladder: group structure first (coverage, the fields the training loop reads), then what the
updates say. The candidate's and the reference's updates under the same designed gradients are fitted the same way
(`nanogpt_core.checks.optimizer_updates`): the kind of update per parameter, the step size, the weight decay, Adam's
eps and betas, Muon's momentum and Nesterov; the first quantity that differs is the cause, printed with both
values. Nothing here hard-codes the reference's settings: they are measured from the reference optimizer."""

from __future__ import annotations

import functools
import math

from nanogpt_core.checks.harness import REFERENCE, Bench, config_key
from nanogpt_core.checks.modules import result
from nanogpt_core.checks.optimizer_updates import UpdateProfile, fit_profile, trace_updates, width_factors
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.whole_model import (
    optimizer_coverage,
    optimizer_group_fields,
    optimizer_partition,
    optimizer_step,
)
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.registry import get_implementation

# A fitted history (betas, momentum) names a cause only if it reproduces the candidate's updates: AdamW's fp64
# simulation matches torch's fp32 AdamW to ~1e-6; Muon's fp32 simulation matches a bf16 Muon to its rounding (~1.5e-2).
ADAM_EXPLAINED, MUON_EXPLAINED = 1e-3, 5e-2
LR_RESOLUTION = 0.05  # fitted step sizes agree to 1% between bf16 and fp32 Muon, exactly for AdamW
WIDTH_MATCH = 0.02
DECAY_RESOLUTION = 1e-5  # lr * weight_decay: fitted to ~4e-7 from a bf16 Muon; weight_decay 0.1 at lr 0.02 is 2e-3


@functools.lru_cache(maxsize=256)
def _fitted(impl_set: str, implementation: object, key: tuple) -> dict[str, UpdateProfile]:
    """Every parameter's profile under `impl_set`'s optimizer (cached: the reference's is fitted once)."""
    model = build_model(GPTConfig(**dict(key)), use={"optimizer": impl_set})
    trace = trace_updates(model, model.setup_optimizers())
    profiles, history_done = {}, set()
    for name in trace.names:  # the history fits (betas, momentum) once per kind: they are per optimizer
        kind = fit_profile(trace, name, with_history=False).kind
        profiles[name] = fit_profile(trace, name, kind, with_history=kind not in history_done)
        history_done.add(kind)
    return profiles


def fitted(b: Bench) -> tuple[dict[str, UpdateProfile], dict[str, UpdateProfile]]:
    """(reference, candidate) profiles of every parameter."""
    key = config_key(b.config)
    return tuple(_fitted(s, get_implementation(s, "optimizer"), key) for s in (REFERENCE, b.impl_set))


def _same_kind(b: Bench) -> list[tuple[str, UpdateProfile, UpdateProfile]]:
    ref, cand = fitted(b)
    return [(n, ref[n], cand[n]) for n in ref if ref[n].kind == cand[n].kind and ref[n].kind in ("adam", "muon")]


def learning_rates(b: Bench) -> CheckResult:
    """The step size of each parameter's first update, the candidate's over the reference's."""
    factors = {n: c.step / r.step for n, r, c in _same_kind(b) if r.step}
    off = {n: f for n, f in factors.items() if not abs(math.log(abs(f) or 1e-30)) <= LR_RESOLUTION}
    numbers = {"factors": factors}
    if not off:
        return result("learning rates", True, "every parameter's step size is the reference's", numbers)
    ref, _ = fitted(b)
    adam_off = {n: f for n, f in off.items() if ref[n].kind == "adam"}
    for how, factor in width_factors(b.config.n_embd).items():
        only_adam = len(adam_off) == len(off)
        if adam_off and only_adam and all(abs(f / factor - 1) <= WIDTH_MATCH for f in adam_off.values()):
            return result("learning rates", False, f"the AdamW learning rates are x{factor:.3g} the reference's: the "
                          f"(n_embd / 768) ** -0.5 = {(b.config.n_embd / 768) ** -0.5:.3g} scaling is {how}", numbers,
                          "missing width scaling")
    text = "; ".join(f"{n} x{f:.3g}" for n, f in list(off.items())[:4]) + (" ..." if len(off) > 4 else "")
    return result("learning rates", False, f"step sizes differ from the reference's: {text}", numbers,
                  "learning rate off by a factor")


def weight_decay(b: Bench) -> CheckResult:
    off = {n: (r.decay, c.decay) for n, r, c in _same_kind(b)
           if abs(c.decay - r.decay) > DECAY_RESOLUTION + 0.01 * abs(r.decay)}
    if not off:
        return result("weight decay", True, "the same decay per step as the reference", {})
    n, (r, c) = next(iter(off.items()))
    return result("weight decay", False, f"{n} loses {c:.2g} of its value per step to weight decay (lr * "
                  f"weight_decay; the reference: {r:.2g}); {len(off)} parameters differ", {"decay": off},
                  "weight decay differs")


def adam_eps(b: Bench) -> CheckResult:
    rows = [(n, r.eps, c.eps) for n, r, c in _same_kind(b) if r.kind == "adam" and r.eps is not None
            and c.eps is not None]
    off = [(n, r, c) for n, r, c in rows if max(r, c) > 1e-12 and max(r, c) / max(min(r, c), 1e-30) > 1.5]
    if not off:
        return result("AdamW eps", True, "Adam's eps is the reference's", {})
    n, r, c = off[0]
    return result("AdamW eps", False, f"the updates of tiny gradients fit eps = {c:.2g} (the reference: {r:.2g})",
                  {"fitted_eps": c, "reference_eps": r}, "AdamW eps differs")


def adam_betas(b: Bench) -> CheckResult:
    rows = [(n, r.betas, c.betas) for n, r, c in _same_kind(b) if r.betas and c.betas
            and c.history_misfit is not None and c.history_misfit <= ADAM_EXPLAINED]
    for n, (r1, r2), (c1, c2) in rows:
        if abs(c1 - r1) > 0.02 or abs(math.log((1 - c2 + 1e-9) / (1 - r2 + 1e-9))) > 0.2:
            return result("AdamW betas", False, f"{n}'s updates over 5 steps fit betas ({c1:.3g}, {c2:.4g}) (the "
                          f"reference: ({r1:.3g}, {r2:.4g}))", {"fitted": [c1, c2], "reference": [r1, r2]},
                          "AdamW betas differ")
    return result("AdamW betas", True, "Adam's betas are the reference's", {})


def _muon_history(b: Bench) -> tuple[str, UpdateProfile, UpdateProfile] | None:
    return next(((n, r, c) for n, r, c in _same_kind(b) if r.kind == "muon" and r.momentum is not None
                 and c.momentum is not None and c.history_misfit <= MUON_EXPLAINED), None)


def muon_nesterov(b: Bench) -> CheckResult:
    row = _muon_history(b)
    if row is None or row[1].nesterov == row[2].nesterov:
        return result("Muon Nesterov", True, "Nesterov as the reference", {})
    n, r, c = row
    return result("Muon Nesterov", False, f"{n}'s updates fit momentum {c.momentum:.2f} with nesterov={c.nesterov} "
                  f"(the reference: nesterov={r.nesterov})", {"nesterov": c.nesterov},
                  "Muon without Nesterov momentum" if r.nesterov else "optimizer update differs from reference")


def muon_momentum(b: Bench) -> CheckResult:
    row = _muon_history(b)
    if row is None or abs(row[1].momentum - row[2].momentum) <= 0.015:
        return result("Muon momentum", True, "Muon's momentum is the reference's", {})
    n, r, c = row
    return result("Muon momentum", False, f"{n}'s updates over 5 steps fit momentum {c.momentum:.2f} (the "
                  f"reference: {r.momentum:.2f})", {"fitted": c.momentum, "reference": r.momentum},
                  "Muon momentum differs")


PROBES = (optimizer_coverage, optimizer_group_fields, optimizer_partition, learning_rates, weight_decay, adam_eps,
          adam_betas, muon_nesterov, muon_momentum, optimizer_step)
