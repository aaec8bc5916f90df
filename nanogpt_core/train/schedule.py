"""The learning-rate and Muon-momentum schedules of nanochat's `base_train`, as pure functions of the step.

The loop multiplies every parameter group's `initial_lr` by `lr_multiplier(step, ...)`: an optional linear warm-up,
a flat middle and a linear warm-down to `final_lr_frac`. Muon's momentum starts low (0.85) so the first, noisy
gradients are not amplified, and reaches 0.95 after 300 steps. Pure functions so the tests check them by hand.
"""

from __future__ import annotations

MUON_MOMENTUM_START = 0.85
MUON_MOMENTUM_END = 0.95
MUON_MOMENTUM_WARMUP_STEPS = 300


def lr_multiplier(
    step: int, num_iterations: int, warmup_ratio: float = 0.0, warmdown_ratio: float = 0.2, final_lr_frac: float = 0.0
) -> float:
    """nanochat's `get_lr_multiplier`: the factor applied to each group's initial learning rate at `step`.

    warm-up steps 0..W-1 ramp (step+1)/W; then 1.0 up to and including step N-D; then linearly down so that the
    (never taken) step N would be at `final_lr_frac`.
    """
    warmup_iters = round(warmup_ratio * num_iterations)
    warmdown_iters = round(warmdown_ratio * num_iterations)
    if step < warmup_iters:
        return (step + 1) / warmup_iters
    if step <= num_iterations - warmdown_iters:
        return 1.0
    progress = (num_iterations - step) / warmdown_iters
    return progress * 1.0 + (1 - progress) * final_lr_frac


def muon_momentum(step: int) -> float:
    """nanochat's `get_muon_momentum`: 0.85 at step 0, linear to 0.95 at step 300, then constant."""
    frac = min(step / MUON_MOMENTUM_WARMUP_STEPS, 1)
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM_END
