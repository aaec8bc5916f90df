"""Correct implementations written differently from the reference, registered as the set `alt`: compare and the
contract checks must pass them (a check that only accepts the reference's exact code would be useless)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from nanogpt_core.model.hookspecs import hookimpl

from .alt_gpt import GPT as HandWrittenGPT

PLUGIN_NAME = "nanogpt-test-alt-impls"
ALT_SET = "alt"


class ManualRMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps), with F.rms_norm's default eps (the dtype's machine epsilon)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


class RotateHalfRotary:
    """The 'rotate_half' formulation: x * [cos, cos] + rotate_half(x) * [sin, sin] with rotate_half = (x2, -x1)."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        angles = torch.arange(seq_len, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
        return angles.cos().bfloat16().view(1, seq_len, 1, -1), angles.sin().bfloat16().view(1, seq_len, 1, -1)

    @staticmethod
    def apply(x, cos, sin):
        d = x.size(-1) // 2
        rotated = torch.cat([x[..., d:], -x[..., :d]], dim=-1)
        return (x * torch.cat([cos, cos], -1) + rotated * torch.cat([sin, sin], -1)).to(x.dtype)


class EinsumAttention(nn.Module):
    """Attention by hand: einsum scores, an explicit causal mask offset by the cache position, repeat_interleave
    for grouped-query heads, softmax, einsum with the values."""

    def __init__(self, config, layer_idx, *, norm, rotary):
        super().__init__()
        self.layer_idx, self.rotary = layer_idx, rotary
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        C = config.n_embd
        self.c_q = nn.Linear(C, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(C, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(C, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(C, C, bias=False)
        self.q_norm, self.k_norm = norm(self.head_dim), norm(self.head_dim)

    def project(self, x, cos_sin):
        """q (B, T, H, D) rotated and normalised; k the same with Hkv heads; v (B, T, Hkv, D)."""
        B, T, C = x.shape
        cos, sin = cos_sin
        q = self.q_norm(self.rotary.apply(self.c_q(x).view(B, T, self.n_head, self.head_dim), cos, sin))
        k = self.k_norm(self.rotary.apply(self.c_k(x).view(B, T, self.n_kv_head, self.head_dim), cos, sin))
        return q, k, self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)

    def forward(self, x, cos_sin, kv_cache):
        B, T, C = x.shape
        q, k, v = self.project(x, cos_sin)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        group = self.n_head // self.n_kv_head
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, Tk, D)
        Tk = k.size(2)
        scores = torch.einsum("bqhd,bhkd->bhqk", q, k) / math.sqrt(self.head_dim)
        query_pos = torch.arange(Tk - T, Tk, device=x.device)[:, None]
        key_pos = torch.arange(Tk, device=x.device)[None, :]
        scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
        y = torch.einsum("bhqk,bhkd->bqhd", scores.softmax(dim=-1), v)
        return self.c_proj(y.reshape(B, T, C))


class WhereMLP(nn.Module):
    """relu² written as where(h > 0, h*h, 0)."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        h = self.c_fc(x)
        return self.c_proj(torch.where(h > 0, h * h, torch.zeros_like(h)))


@torch.inference_mode()
def generate_without_cache(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """Recomputes the whole prefix every step (no KV cache): slower, same tokens."""
    rng = torch.Generator(device=model.get_device()).manual_seed(seed)
    ids = list(tokens)
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids], device=model.get_device()))[0, -1].float()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            if top_k is not None:
                kth = logits.topk(min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=rng))
        ids.append(nxt)
        yield nxt


class EpsRMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) with a fixed eps; any eps in [0, 1e-5] is correct (Hugging Face's port: 1e-6)."""

    eps = 1e-6

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class NoEpsRMSNorm(EpsRMSNorm):
    """eps = 0: x / sqrt(mean(x^2)) (an all-zero vector would give NaN, which no vector in a GPT is)."""

    eps = 0.0


class LargestEpsRMSNorm(EpsRMSNorm):
    """eps = 1e-5, the largest the contract accepts."""

    eps = 1e-5


class ComplexRotary:
    """Each pair (x1_i, x2_i) as the complex number x1 + i*x2, multiplied by exp(-i*angle): the reference's rotation
    in complex arithmetic (fp32), the table made in float64 and rounded to bf16."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
        angles = torch.arange(seq_len, dtype=torch.float64, device=device)[:, None] * inv_freq
        return angles.cos().bfloat16()[None, :, None, :], angles.sin().bfloat16()[None, :, None, :]

    @staticmethod
    def apply(x, cos, sin):
        d = x.size(-1) // 2
        z = torch.complex(x[..., :d].float(), x[..., d:].float())
        rotated = z * torch.complex(cos.float(), -sin.float())
        return torch.cat([rotated.real, rotated.imag], dim=-1).to(x.dtype)


class Float32SoftmaxAttention(EinsumAttention):
    """Scores with matmul, an explicit fp32 softmax (upcast from the input's dtype, as mixed-precision code does),
    GQA by viewing the query heads as (Hkv, group)."""

    def forward(self, x, cos_sin, kv_cache):
        B, T, C = x.shape
        q, k, v = (t.transpose(1, 2) for t in self.project(x, cos_sin))
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        Tk, group = k.size(2), self.n_head // self.n_kv_head
        q = q.reshape(B, self.n_kv_head, group * T, self.head_dim)  # heads of one group side by side
        scores = (q @ k.transpose(-2, -1)).float() * self.head_dim**-0.5
        query_pos = torch.arange(Tk - T, Tk, device=x.device).repeat(group)[:, None]
        scores = scores.masked_fill(torch.arange(Tk, device=x.device)[None, :] > query_pos, float("-inf"))
        y = (scores.softmax(dim=-1).to(v.dtype) @ v).view(B, self.n_head, T, self.head_dim)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


@torch.inference_mode()
def generate_gumbel(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42):
    """The Gumbel-max trick: argmax(logits / T + Gumbel noise) is a sample of softmax(logits / T); top_k by
    masking the rest to -inf. Another formula, same distribution, other tokens for the same seed."""
    rng = torch.Generator(device=model.get_device()).manual_seed(seed)
    cache = model.new_kv_cache(1, len(tokens) + max_tokens)
    ids = torch.tensor([tokens], device=model.get_device())
    for _ in range(max_tokens):
        logits = model(ids, kv_cache=cache)[0, -1].float()
        if temperature == 0:
            nxt = logits.argmax()
        else:
            if top_k is not None:
                kth = logits.topk(min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            u = torch.rand(logits.shape, generator=rng, device=logits.device).clamp_min(1e-20)
            nxt = (logits / temperature - torch.log(-torch.log(u))).argmax()
        ids = nxt.view(1, 1)
        yield int(nxt)


def setup_with_torch_muon(model, *, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.0):
    """Exactly what the optimizer skeleton describes, with torch.optim.Muon (Newton-Schulz in bf16 on every
    device): the reference orthogonalises in fp32 off CUDA, so this differs from it by bf16 rounding only."""
    s = (model.config.n_embd / 768) ** -0.5
    adamw = torch.optim.AdamW([dict(params=list(model.lm_head.parameters()), lr=unembedding_lr * s),
                               dict(params=list(model.transformer.wte.parameters()), lr=embedding_lr * s)],
                              betas=(0.8, 0.95), eps=1e-10, weight_decay=weight_decay)
    muon = torch.optim.Muon([p for p in model.transformer.h.parameters() if p.ndim == 2], lr=matrix_lr,
                            momentum=0.95, nesterov=True, weight_decay=0, adjust_lr_fn="original")
    for opt in (adamw, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return [adamw, muon]


def setup_with_adam_per_parameter(model, *, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02,
                                  weight_decay=0.0):
    """torch.optim.Adam (no decoupled decay, same thing at weight_decay 0), one group per parameter, Muon groups
    per layer, optimizers returned Muon first."""
    s = (model.config.n_embd / 768) ** -0.5
    adam = torch.optim.Adam([dict(params=[model.transformer.wte.weight], lr=embedding_lr * s),
                             dict(params=[model.lm_head.weight], lr=unembedding_lr * s)], betas=(0.8, 0.95), eps=1e-10)
    muon = torch.optim.Muon([dict(params=[p for p in block.parameters() if p.ndim == 2])
                             for block in model.transformer.h], lr=matrix_lr, weight_decay=0.0)
    for opt in (muon, adam):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return [muon, adam]


# set -> {component: implementation}: every correct alternative the checks and compare must pass
ALTERNATIVES: dict[str, dict[str, object]] = {
    ALT_SET: {"norm": ManualRMSNorm, "rotary": RotateHalfRotary, "attention": EinsumAttention, "mlp": WhereMLP,
              "gpt": HandWrittenGPT, "generate": generate_without_cache, "optimizer": setup_with_torch_muon},
    "alt2": {"norm": EpsRMSNorm, "rotary": ComplexRotary, "attention": Float32SoftmaxAttention,
             "generate": generate_gumbel, "optimizer": setup_with_adam_per_parameter},
    "alt3": {"norm": NoEpsRMSNorm},
    "alt4": {"norm": LargestEpsRMSNorm},
}


class AltImplsPlugin:
    @hookimpl
    def register_components(self, register):
        for impl_set, parts in ALTERNATIVES.items():
            for component, implementation in parts.items():
                register(impl_set, component, implementation, description=implementation.__doc__)
