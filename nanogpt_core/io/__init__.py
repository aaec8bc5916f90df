"""Models on disk: nanogpt checkpoints (safetensors + JSON, written atomically), the restricted unpickler, and
conversion to and from other codebases' formats (nanochat)."""
