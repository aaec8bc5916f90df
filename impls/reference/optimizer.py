"""optimizer: Muon for the matrices inside the blocks, AdamW for the embedding, the head and any vectors."""

import math

import torch
import torch.nn as nn

from nanogpt_core.device import newton_schulz_dtype

MUON_MOMENTUM = 0.95
ADAMW_BETAS = (0.8, 0.95)
ADAMW_EPS = 1e-10
LR_REFERENCE_WIDTH = 768  # AdamW learning rates were tuned at n_embd = 768 and scale as width ** -0.5


class Muon(torch.optim.Muon):
    """torch's Muon (nanochat's), with the Newton-Schulz iterations in the dtype each group's "ns_dtype" names.

    nanochat (and torch) orthogonalise in bf16 because a GPU multiplies bf16 faster than fp32. A CPU without bf16
    instructions multiplies bf16 ~25x *slower*, one with them (AVX512-BF16, AMX) ~2x faster, so the setup measures
    which (`nanogpt_core.device.newton_schulz_dtype`). In bf16 this is torch's own step; in fp32 the same algorithm
    with fp32 iterations, equal to it up to bf16 rounding (~1% of the update; see the tests). The dtype is a group
    setting, so a checkpoint keeps it and a resumed run continues in the dtype it started with, bit for bit.
    """

    @torch.no_grad()
    def step(self, closure=None):
        if all(group.get("ns_dtype", "bfloat16") == "bfloat16" for group in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            dtype = getattr(torch, group.get("ns_dtype", "bfloat16"))
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))))
        return loss

    def load_state_dict(self, state_dict) -> None:
        """A checkpoint written before groups carried "ns_dtype" continues in the dtype chosen on this machine."""
        chosen = [group.get("ns_dtype") for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, dtype in zip(self.param_groups, chosen):
            group.setdefault("ns_dtype", dtype)
            if group["ns_dtype"] != dtype:
                self.setup_note = (f"Muon: Newton-Schulz in {group['ns_dtype']}, kept from the checkpoint so the run "
                                   f"continues exactly (this machine would choose {dtype})")


Float32Muon = Muon  # the name checkpoints written before the dtype became a group setting record for this class


def newton_schulz(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximately orthogonalise g (U S V^T -> ~U V^T) with nanochat's quintic iteration, in `dtype`."""
    a, b, c = coefficients
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide orientation: X X^T is then the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1, inside the iteration's basin
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if tall else x


def setup_optimizers(
    model: nn.Module,
    *,
    unembedding_lr: float = 0.004,
    embedding_lr: float = 0.2,
    matrix_lr: float = 0.02,
    weight_decay: float = 0.0,
) -> list[torch.optim.Optimizer]:
    """nanochat's two optimizers. Parameters nanochat does not have (1-D weights of a norm variant, biases) go to
    AdamW at the head's learning rate: Muon is defined for matrices only."""
    matrix_params = [p for p in model.transformer.h.parameters() if p.ndim == 2]
    lm_head_params = list(model.lm_head.parameters())
    # a head tied to the embedding (a top level may tie them) is one matrix: trained once, as the head
    embedding_params = [p for p in model.transformer.wte.parameters() if all(p is not q for q in lm_head_params)]
    taken = {id(p) for p in matrix_params + embedding_params + lm_head_params}
    other_params = [p for p in model.parameters() if id(p) not in taken]

    dmodel_lr_scale = (model.config.n_embd / LR_REFERENCE_WIDTH) ** -0.5
    adam_groups = [
        dict(params=lm_head_params, lr=unembedding_lr * dmodel_lr_scale),
        dict(params=embedding_params, lr=embedding_lr * dmodel_lr_scale),
    ]
    if other_params:
        adam_groups.append(dict(params=other_params, lr=unembedding_lr * dmodel_lr_scale))
    device = model.get_device()
    adamw = torch.optim.AdamW(adam_groups, betas=ADAMW_BETAS, eps=ADAMW_EPS, weight_decay=weight_decay,
                              fused=device.type == "cuda")
    # torch's Muon is nanochat's: Nesterov momentum, 5 quintic Newton-Schulz steps, and ("original") the update
    # scaled by sqrt(max(1, rows/cols)). nanochat applies no weight decay to matrices. The iterations run in the
    # dtype this machine multiplies these matrices fastest in (bf16 on CUDA, measured on a CPU).
    choice = newton_schulz_dtype([tuple(p.shape) for p in matrix_params], device)
    muon = Muon(matrix_params, lr=matrix_lr, momentum=MUON_MOMENTUM, nesterov=True, weight_decay=0.0,
                adjust_lr_fn="original")
    for group in muon.param_groups:
        group["ns_dtype"] = str(choice.dtype).removeprefix("torch.")
    muon.setup_note = f"Muon: Newton-Schulz in {group['ns_dtype']} ({choice.reason})"
    optimizers = [adamw, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers
