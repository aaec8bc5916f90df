"""How close is "equal": tolerances measured from the reference's own numerical noise, never a round number.

Two implementations of the same formula differ by rounding only. How much rounding the reference itself carries is
measurable: run it in the compared dtype and again in float64 on the same weights and inputs, and the difference is
its noise floor for that tensor. A candidate is called equal when it is within `FLOOR_MULTIPLE` times that floor.

    floor(t)     = rel(reference(t) in dtype, reference(t) in float64)     rel = max |a - b| / max |b|
    tolerance(t) = FLOOR_MULTIPLE * max(floor(t), unit roundoff of dtype) + allowance(t)

`allowance` is what the contract deliberately leaves open, measured the same way: the norm's eps may be anywhere in
[0, 1e-5] (the reference uses F.rms_norm's default, torch.finfo(dtype).eps; Hugging Face's port uses 1e-6), so the
output of the reference formula with eps = 1e-5 against eps = 0 is added for the norm.

Muon is the one component whose noise is not the float64 kind: its Newton-Schulz iterations run in bf16 on a GPU
(torch.optim.Muon) and in fp32 on this project's CPUs. The update's floor is therefore the difference between the
same Newton-Schulz iterations in bf16 and in fp32 (`newton_schulz_noise`), whichever dtype the reference happens to
use on this machine.
"""

from __future__ import annotations

import torch

# Measured (tests/test_tolerance.py): correct re-implementations (einsum attention, manual RMSNorm, rotate_half and
# complex rotary, torch.optim.Muon against the fp32 reference) land within 0.2-1.5x the floor; 10x leaves room for
# another machine's kernels while every mutant in tests/plugins/wrong_impls.py is above 100x.
FLOOR_MULTIPLE = 10.0
UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}

# The norm's eps the contract accepts (nanochat/torch: finfo(dtype).eps ~1.2e-7 in fp32; Hugging Face: 1e-6).
NORM_EPS_ACCEPTED = (0.0, 1e-5)

# nanochat's (and torch.optim.Muon's) quintic Newton-Schulz: 5 steps with these coefficients.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def rel_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64: scale-free, and the measure every tolerance here is stated in."""
    a, b = candidate.detach().double().cpu(), reference.detach().double().cpu()
    scale = b.abs().max().item() if b.numel() else 0.0
    return (a - b).abs().max().item() / max(scale, 1e-300) if a.numel() else 0.0


def frobenius_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    """||a - b|| / ||b||: for updates, where bf16 rounding is spread over every entry and a real difference is not."""
    a, b = candidate.detach().double().cpu(), reference.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def least_squares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The least-squares solution x of a @ x = b. By SVD ("gelsd"): the fits here often have a column of zeros (a
    parameter that starts at zero), and torch's default CPU driver ("gelsy") then returns, from run to run, either
    the right solution or all zeros (measured: 2 different answers in 2,000 identical calls)."""
    return torch.linalg.lstsq(a, b, driver="gelsd" if a.device.type == "cpu" else None).solution


def tolerance(floor: float, dtype: torch.dtype, allowance: float = 0.0) -> float:
    """FLOOR_MULTIPLE times the measured floor (never below one rounding of `dtype`), plus what the contract allows."""
    return FLOOR_MULTIPLE * max(floor, UNIT_ROUNDOFF.get(dtype, 2.0**-24)) + allowance


def newton_schulz(g: torch.Tensor, dtype: torch.dtype, coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                  steps: int = NS_STEPS) -> torch.Tensor:
    """Muon's orthogonalisation (U S V^T -> ~U V^T) in `dtype`, written here from the paper's iteration so the
    checks measure Muon's noise and classify updates without relying on any implementation under test."""
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp_min(1e-7)
    a, b, c = coefficients
    for _ in range(steps):  # x <- a x + (b A + c A^2) x with A = x x^T, fused as torch.optim.Muon fuses it
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).float()


def newton_schulz_noise(g: torch.Tensor) -> float:
    """How much one Newton-Schulz orthogonalisation of `g` moves between bf16 and fp32 (Frobenius, relative): the
    rounding any correct Muon may carry, on any device."""
    return frobenius_error(newton_schulz(g, torch.bfloat16), newton_schulz(g, torch.float32))
