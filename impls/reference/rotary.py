"""rotary: rotary position embeddings (RoPE) with nanochat's layout and sign convention."""

import torch


class Rotary:
    """The head dimension is split in halves x1 | x2; channel i of each half is rotated by angle pos * base^(-2i/D)."""

    @staticmethod
    def precompute(seq_len: int, head_dim: int, base: float = 10000, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (base ** (channel_range / head_dim))
        t = torch.arange(seq_len, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv_freq)  # (seq_len, head_dim/2)
        cos, sin = freqs.cos().bfloat16(), freqs.sin().bfloat16()  # bf16 table, as nanochat keeps it
        return cos[None, :, None, :], sin[None, :, None, :]  # broadcast over batch and heads

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        d = x.shape[3] // 2
        x1, x2 = x[..., :d], x[..., d:]
        y1 = x1 * cos + x2 * sin
        y2 = x1 * (-sin) + x2 * cos
        return torch.cat([y1, y2], 3).to(x.dtype)
