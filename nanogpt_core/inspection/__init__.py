"""Look inside a GPT assembled from any mix of implementations: the activations at every component call, the
attention patterns, the logit lens, and pictures of them (docs/inspect.md).

    from nanogpt_core.inspection import run_with_cache
    logits, cache = run_with_cache(model, idx)
    cache["blocks.0.attn.pattern"]      # (B, H, T, T), rows sum to 1
"""

from nanogpt_core.inspection.capture import ActivationCache, capture, run_with_cache
from nanogpt_core.inspection.points import POINTS, CapturePoint, point_names

__all__ = ["POINTS", "ActivationCache", "CapturePoint", "capture", "point_names", "run_with_cache"]
