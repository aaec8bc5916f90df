"""rotary (student): rotary position embeddings.

Contract:
- `precompute(seq_len, head_dim, base=10000, device=None) -> (cos, sin)`, each (1, seq_len, 1, head_dim // 2) in
  bfloat16 on `device`. Angle of position t, channel i: t * base ** (-2i / head_dim).
- `apply(x, cos, sin) -> x_rotated`: x is (B, T, H, head_dim), cos/sin are (1, T, 1, head_dim // 2). Split the last
  dimension in halves x1 | x2 and return cat([x1*cos + x2*sin, -x1*sin + x2*cos]) in x's dtype.

Constants: base = 10000 (passed in; use the argument, not a literal); positions t = arange(seq_len) in float32 (in
bfloat16 they would round above 256); channel i is paired with channel i + head_dim/2 (halves, not adjacent pairs);
at position 0 the rotation is the identity (cos = 1, sin = 0); the core builds the table for 10 x sequence_len
positions once and slices it.

Why: rotating channel pairs by an angle proportional to the position makes q·k depend only on the relative offset
between the two positions, with no position parameters to learn.
"""

import torch


class Rotary:
    @staticmethod
    def precompute(seq_len: int, head_dim: int, base: float = 10000, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(
            "TODO: Implement rotary.precompute — inverse frequencies base**(-arange(0, head_dim, 2)/head_dim), "
            "angles = outer(positions, inv_freq), return cos and sin in bfloat16 shaped (1, seq_len, 1, head_dim/2) "
            "on `device`. Reference: `nanogpt show reference:rotary.precompute`"
        )

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "TODO: Implement rotary.apply — split the last dim of x into halves x1|x2, return "
            "cat([x1*cos + x2*sin, -x1*sin + x2*cos], dim=3) cast back to x.dtype. "
            "Reference: `nanogpt show reference:rotary.apply`"
        )
