"""optimizer: Muon for the matrices inside the blocks, AdamW for the embedding, the head and any vectors."""

import math

import torch
import torch.nn as nn

MUON_MOMENTUM = 0.95
ADAMW_BETAS = (0.8, 0.95)
ADAMW_EPS = 1e-10
LR_REFERENCE_WIDTH = 768  # AdamW learning rates were tuned at n_embd = 768 and scale as width ** -0.5


class Float32Muon(torch.optim.Muon):
    """torch's Muon with the Newton-Schulz iterations in float32, for devices without fast bf16 matmuls.

    nanochat (and torch) orthogonalise in bf16 because a GPU multiplies bf16 faster than fp32. A CPU without bf16
    instructions multiplies bf16 ~25x *slower* (measured on this project's CPUs), which made Muon most of a CPU
    training step. In fp32 the update is the same up to bf16 rounding (~1% of its size; see the tests). Same
    parameter groups and state ('momentum_buffer') as torch's, so checkpoints and schedules do not care which runs.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz_fp32(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))))
        return loss


def newton_schulz_fp32(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float):
    """Approximately orthogonalise g (U S V^T -> ~U V^T) with nanochat's quintic iteration, in float32."""
    a, b, c = coefficients
    x = g.float()
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
    on_cuda = model.get_device().type == "cuda"
    adamw = torch.optim.AdamW(adam_groups, betas=ADAMW_BETAS, eps=ADAMW_EPS, weight_decay=weight_decay, fused=on_cuda)
    # torch's Muon is nanochat's: Nesterov momentum, 5 quintic Newton-Schulz steps in bf16, and ("original") the
    # update scaled by sqrt(max(1, rows/cols)). nanochat applies no weight decay to matrices. Off CUDA the same
    # algorithm runs its Newton-Schulz steps in fp32, where that is the fast dtype.
    Muon = torch.optim.Muon if on_cuda else Float32Muon
    muon = Muon(matrix_params, lr=matrix_lr, momentum=MUON_MOMENTUM, nesterov=True, weight_decay=0.0,
                adjust_lr_fn="original")
    optimizers = [adamw, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers
