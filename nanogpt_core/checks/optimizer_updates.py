"""What an optimizer does to each parameter, measured from its updates under designed gradients.

The optimizer component returns torch optimizers, which can be written many ways (torch.optim.Muon in bf16, the
reference's fp32 Muon, a hand-written AdamW). Instead of reading their settings, the checks watch them: set every
parameter and every gradient to known values, step `PROBE_STEPS` times, and record each parameter's update. From the
updates alone:

- the kind of each update: Adam's first step is lr * g / (|g| + eps), +-lr almost everywhere; Muon's is
  lr * NS(g), the orthogonalised gradient; SGD's is lr * g (`update_kind`, by cosine similarity);
- the step size (the effective learning rate), the weight decay, Adam's eps and betas, Muon's momentum and whether it
  is Nesterov's (`fit_profile`, each a least-squares fit or a search over the one parameter it explains).

The gradients are designed so every one of these shows: most entries N(0, 1) (a matrix's columns scaled over two
decades, so its orthogonalised direction is far from the gradient's own), a tenth tiny (1e-11..1e-8, where Adam's
eps decides the update), a tenth zero (where only weight decay moves an AdamW parameter). Parameters start
at zero where AdamW sees a gradient (so the update is read exactly) and N(0, 1) elsewhere (so decay shows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from nanogpt_core.checks.tolerance import frobenius_error, least_squares, newton_schulz

PROBE_STEPS = 5
TINY, ZERO = 1, 2  # entry roles; 0 is a regular N(0, 1) gradient
KIND_THRESHOLD = 0.9  # cosine similarity an update must reach to count as that kind (measured: 0.99+ for the
# matching kind, below 0.85 for the others, on every parameter shape of the check config)


@dataclass
class UpdateTrace:
    """Every parameter's start value, gradients and updates over the probe's steps (lists indexed by step)."""

    names: list[str]
    shapes: dict[str, tuple[int, ...]]
    start: dict[str, torch.Tensor]
    roles: dict[str, torch.Tensor]
    grads: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    updates: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def stacked(self, name: str) -> torch.Tensor:
        return torch.stack(self.updates[name])


def designed_state(model: nn.Module, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                             dict[str, list[torch.Tensor]]]:
    """(start values, entry roles, gradients per step) for every parameter of `model`, the same for any model with
    the same parameter names and shapes."""
    g = torch.Generator().manual_seed(seed)
    start, roles, grads = {}, {}, {}
    for name, p in model.named_parameters():
        u = torch.rand(p.shape, generator=g)
        role = torch.where(u < 0.1, TINY, torch.where(u < 0.2, ZERO, 0))
        tiny = 10.0 ** (-11 + 3 * torch.rand(p.shape, generator=g))
        sign = torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0)
        # a spread spectrum (columns scaled over two decades), so that orthogonalising visibly changes a matrix
        spread = torch.logspace(0, -2, p.shape[-1]) if p.ndim == 2 else torch.ones(())
        steps = []
        for _ in range(PROBE_STEPS):
            regular = torch.randn(p.shape, generator=g) * spread
            steps.append(torch.where(role == TINY, sign * tiny, torch.where(role == ZERO, 0.0, regular)))
        value = torch.randn(p.shape, generator=g)
        start[name] = torch.where(role == ZERO, value, 0.0) if p.ndim < 2 or not _in_blocks(name) else value
        roles[name] = role
        grads[name] = steps
    return start, roles, grads


def _in_blocks(name: str) -> bool:
    return name.startswith("transformer.h.")


def trace_updates(model: nn.Module, optimizers: list[torch.optim.Optimizer], seed: int = 0) -> UpdateTrace:
    """Step `optimizers` PROBE_STEPS times on `model` with the designed gradients; record every update."""
    start, roles, grads = designed_state(model, seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(start[name].to(p.dtype))
    trace = UpdateTrace(list(params), {n: tuple(p.shape) for n, p in params.items()}, start, roles,
                        grads, {n: [] for n in params})
    for step in range(PROBE_STEPS):
        before = {n: p.detach().clone() for n, p in params.items()}
        for name, p in params.items():
            p.grad = grads[name][step].to(p.dtype).clone()
        for opt in optimizers:
            opt.step()
        for name, p in params.items():
            trace.updates[name].append((p.detach() - before[name]).float())
    return trace


# --- what kind of update ---------------------------------------------------------------------------------------


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return (a @ b / (a.norm() * b.norm()).clamp_min(1e-300)).item()


def _explained(u: torch.Tensor, columns: list[torch.Tensor]) -> float:
    """sqrt of the share of ||u||^2 a least-squares combination of `columns` explains: 1 for an exact fit, the
    cosine similarity when there is one column."""
    a = torch.stack([c.double().flatten() for c in columns], dim=1)
    target = u.double().flatten()[:, None]
    fit = a @ least_squares(a, target)
    return (fit.norm() / target.norm().clamp_min(1e-300)).item()


def kind_scores(update: torch.Tensor, grad: torch.Tensor, role: torch.Tensor, start: torch.Tensor
                ) -> dict[str, float]:
    """How well each kind's direction (plus decoupled weight decay, a multiple of the parameter) explains a first
    update, on the entries with a regular gradient."""
    regular = role == 0
    u, p = -update[regular], start[regular]
    templates = {"adam": grad.sign()[regular], "sgd": grad[regular]}
    if grad.ndim == 2:
        templates["muon"] = newton_schulz(grad, torch.float32)[regular]
    return {kind: _explained(u, [t, p]) for kind, t in templates.items()}


def update_kind(trace: UpdateTrace, name: str) -> str:
    """'muon', 'adam', 'sgd', 'none' (never moved) or 'other', from the first update."""
    update = trace.updates[name][0]
    if not update.abs().max().item() > 0:
        return "none"
    scores = kind_scores(update, trace.grads[name][0], trace.roles[name], trace.start[name])
    best = max(scores, key=scores.get)
    return best if scores[best] >= KIND_THRESHOLD else "other"


KIND_LABEL = {"muon": "Muon (orthogonalised)", "adam": "AdamW", "sgd": "SGD (proportional to the gradient)",
              "none": "no update", "other": "neither Muon, AdamW nor SGD"}


# --- fitted hyperparameters ------------------------------------------------------------------------------------


@dataclass
class UpdateProfile:
    """What one parameter's updates say about its optimizer. Fields a kind does not have stay None."""

    kind: str
    step: float = 0.0  # the effective learning rate of the first update
    decay: float = 0.0  # lr * weight_decay: the fraction of the parameter removed each step
    eps: float | None = None  # Adam
    betas: tuple[float, float] | None = None  # Adam
    momentum: float | None = None  # Muon
    nesterov: bool | None = None  # Muon
    history_misfit: float | None = None  # how far the best (betas | momentum, nesterov) simulation is from the updates


def _lstsq(columns: list[torch.Tensor], target: torch.Tensor) -> list[float]:
    a = torch.stack([c.double().flatten() for c in columns], dim=1)
    return least_squares(a, target.double().flatten()[:, None]).flatten().tolist()


def fit_profile(trace: UpdateTrace, name: str, kind: str | None = None, with_history: bool = True) -> UpdateProfile:
    """Fit the hyperparameters `name`'s updates reveal (history: betas or momentum, from steps 2..PROBE_STEPS)."""
    kind = kind or update_kind(trace, name)
    g, u, p0, role = trace.grads[name][0], trace.updates[name][0], trace.start[name], trace.roles[name]
    profile = UpdateProfile(kind)
    if kind == "adam":
        zero = (role == ZERO) & (p0.abs() > 0.1)
        profile.decay = (-u[zero] / p0[zero]).median().item() if zero.any() else 0.0
        moved = -(u + profile.decay * p0)
        large = (role == 0) & (g.abs() >= 1e-3)
        profile.step = (moved[large] * g[large].sign()).median().item()
        tiny = role == TINY
        ratio = (moved[tiny] * g[tiny].sign() / profile.step).clamp(1e-12, 1.0).double()
        profile.eps = (g[tiny].abs().double() * (1 / ratio - 1)).median().item() if tiny.any() else None
        if with_history:
            profile.betas, profile.history_misfit = _fit_betas(trace, name, profile)
    elif kind == "muon":
        profile.step, profile.decay = _lstsq([newton_schulz(g, torch.float32), p0], -u)
        if with_history:
            profile.momentum, profile.nesterov, profile.history_misfit = _fit_momentum(trace, name, profile)
    elif kind == "sgd":
        profile.step, profile.decay = _lstsq([g, p0], -u)
    return profile


def _simulate_adam(grads: list[torch.Tensor], start: torch.Tensor, p: UpdateProfile, beta1: torch.Tensor,
                   beta2: torch.Tensor) -> torch.Tensor:
    """AdamW's updates for every (beta1, beta2) pair at once: (pairs, steps, entries)."""
    b1, b2 = beta1.double()[:, None], beta2.double()[:, None]
    m = torch.zeros(len(beta1), start.numel(), dtype=torch.float64)
    v = torch.zeros_like(m)
    x = start.double().flatten().expand_as(m).clone()
    out = []
    for t, g in enumerate(grads, 1):
        g = g.double().flatten()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = -p.step * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + p.eps) - p.decay * x
        x = x + update
        out.append(update)
    return torch.stack(out, dim=1)


def _fit_betas(trace: UpdateTrace, name: str, profile: UpdateProfile) -> tuple[tuple[float, float], float]:
    """The (beta1, beta2) whose simulated AdamW updates best match the observed ones, on the regular entries."""
    regular = (trace.roles[name] == 0).flatten()
    observed = trace.stacked(name).flatten(1)[:, regular].double()
    grads = [g.flatten()[regular] for g in trace.grads[name]]
    start = trace.start[name].flatten()[regular]

    def error(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
        sim = _simulate_adam(grads, start, profile, b1, b2)
        return ((sim - observed).norm(dim=(1, 2)) / observed.norm()).float()

    coarse1 = torch.linspace(0.0, 0.99, 34)
    coarse2 = torch.tensor([0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999])
    b1, b2 = torch.meshgrid(coarse1, coarse2, indexing="ij")
    best = error(b1.flatten(), b2.flatten()).argmin().item()
    c1, c2 = b1.flatten()[best].item(), b2.flatten()[best].item()
    fine1 = (c1 + torch.linspace(-0.03, 0.03, 13)).clamp(0.0, 0.999)
    fine2 = 1 - (1 - c2) * torch.logspace(-0.5, 0.5, 11)
    b1, b2 = torch.meshgrid(fine1, fine2, indexing="ij")
    errors = error(b1.flatten(), b2.flatten())
    best = errors.argmin().item()
    return (round(b1.flatten()[best].item(), 3), round(b2.flatten()[best].item(), 4)), errors[best].item()


def _simulate_muon(trace: UpdateTrace, name: str, p: UpdateProfile, momentum: float,
                   nesterov: bool) -> torch.Tensor:
    x = trace.start[name].double()
    buf = torch.zeros_like(x)
    out = []
    for g in trace.grads[name]:
        g = g.double()
        buf = momentum * buf + (1 - momentum) * g
        direction = g + momentum * (buf - g) if nesterov else buf
        update = -p.step * newton_schulz(direction, torch.float32).double() - p.decay * x
        x = x + update
        out.append(update)
    return torch.stack(out)


def _fit_momentum(trace: UpdateTrace, name: str, profile: UpdateProfile) -> tuple[float, bool, float]:
    """The (momentum, nesterov) whose simulated Muon updates best match the observed ones."""
    observed = trace.stacked(name)
    grid = [round(m, 3) for m in torch.linspace(0.0, 0.98, 50).tolist()] + [0.95, 0.99]
    errors = {(m, nesterov): frobenius_error(_simulate_muon(trace, name, profile, m, nesterov)[1:], observed[1:])
              for m in grid for nesterov in (True, False)}
    m, nesterov = min(errors, key=errors.get)
    return m, nesterov, errors[(m, nesterov)]


def profiles(trace: UpdateTrace) -> dict[str, UpdateProfile]:
    return {name: fit_profile(trace, name) for name in trace.names}


def expected_kind(name: str, shape: tuple[int, ...]) -> str:
    """The contract's partition: 2-D matrices inside the blocks -> Muon; wte, lm_head and anything else -> AdamW."""
    return "muon" if _in_blocks(name) and len(shape) == 2 else "adam"


def width_factors(n_embd: int, reference_width: int = 768) -> dict[str, float]:
    """The factors a missing, doubled or inverted (n_embd / 768) ** -0.5 learning-rate scaling leaves behind."""
    s = (n_embd / reference_width) ** -0.5
    return {"missing": 1 / s, "inverted": 1 / s**2, "applied twice": s}


def close(a: float, b: float, rel: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= rel * abs(b)
