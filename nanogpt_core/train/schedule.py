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
    (never taken) step N would be at `final_lr_frac`. Always within [0, 1]: the ratios and the final fraction must
    be fractions (ValueError otherwise; `validate_settings` says so to a user first), and a step at or past N holds
    `final_lr_frac` instead of extrapolating below it (which would train with a negative learning rate).
    """
    for name, value in (("warmup_ratio", warmup_ratio), ("warmdown_ratio", warmdown_ratio),
                        ("final_lr_frac", final_lr_frac)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    warmup_iters = round(warmup_ratio * num_iterations)
    warmdown_iters = round(warmdown_ratio * num_iterations)
    if step >= num_iterations:
        return final_lr_frac if warmdown_iters else 1.0
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
