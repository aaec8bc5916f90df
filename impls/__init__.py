"""Implementation sets shipped with nanogpt: `reference` (nanochat's numerics) and `student` (skeletons to fill in)."""
