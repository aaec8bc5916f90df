"""One optimisation step, the same wherever a model is trained: `nanogpt train`, compare's side-by-side curves and
every run of an experiment.

    loss = accumulate_gradients(model, loader, accum)        # forward + backward of `accum` micro-batches
    lrm, grad_norm = optimizer_step(model, optimizers, step, settings)   # clip, schedule, step, zero

nanochat's order: the gradients of the whole batch are in, their global norm is clipped, every group's lr is set to
initial_lr x the schedule's multiplier (and Muon's momentum to its warm-up value), every optimizer steps, and the
gradients are freed for the next step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from nanogpt_core.train.schedule import lr_multiplier, muon_momentum


def is_muon(optimizer: torch.optim.Optimizer) -> bool:
    return "muon" in type(optimizer).__name__.lower()


def apply_schedule(optimizers: Sequence[torch.optim.Optimizer], step: int, settings: Any) -> float:
    """Set every group's lr (and Muon's momentum) for `step`; returns the lr multiplier.

    `settings` is anything with TrainSettings' schedule fields (num_iterations, warmup_ratio, warmdown_ratio,
    final_lr_frac)."""
    lrm = lr_multiplier(step, settings.num_iterations, settings.warmup_ratio, settings.warmdown_ratio,
                        settings.final_lr_frac)
    momentum = muon_momentum(step)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if is_muon(opt) and "momentum" in group:
                group["momentum"] = momentum
    return lrm


def accumulate_gradients(model, loader, accum: int, autocast=None) -> float:
    """Forward and backward `accum` micro-batches; the gradients sum to those of the mean loss over all of them.

    Each micro-batch loss is divided by `accum` because backward() adds into .grad: the sum of accum means / accum
    is the mean over the whole batch (every micro-batch has the same number of tokens). Returns that mean loss
    (this rank's; the loop averages it over ranks).

    `model` may be wrapped in DistributedDataParallel: its backward then all-reduces (averages) the gradients over
    ranks. Doing that after every micro-batch would move the gradients accum times a step for nothing, so all but
    the last micro-batch run under `no_sync()` and only the last backward averages what has accumulated.
    """
    losses = []
    for i in range(accum):
        x, y = loader.next_batch()
        sync = i == accum - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            with autocast if autocast is not None else contextlib.nullcontext():
                loss = model(x, y)
            losses.append(loss.detach())
            (loss / accum).backward()
    return torch.stack(losses).mean().item()


def optimizer_step(model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer], step: int,
                   settings: Any) -> tuple[float, float | None]:
    """Clip the gradients' global norm to `settings.grad_clip` (0 disables), apply the schedule for `step`, step
    every optimizer and free the gradients. Returns (lr multiplier, gradient norm before clipping or None)."""
    grad_norm = None
    if settings.grad_clip > 0:
        grad_norm = clip_gradients(model, settings.grad_clip)
    lrm = apply_schedule(optimizers, step, settings)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    return lrm, grad_norm


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """`torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)`, bit for bit, returning the norm before clipping.

    torch multiplies every gradient by min(max_norm / (norm + 1e-6), 1) even when that is 1, so as never to read
    the norm on the host. The loop reads it anyway (it is logged), so here the multiply by exactly one, a pass over
    every gradient that changes nothing, is skipped; any other factor (NaN included) is applied as torch does."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    total = torch.nn.utils.get_total_norm([p.grad for p in params])
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if factor.item() != 1.0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total.item()
