"""Interop with other GPT codebases: nanochat's checkpoints in and out, and your parts inside a pretrained model.

    from nanogpt_core.interop import import_nanochat, export_nanochat, compare_in_pretrained
"""

from nanogpt_core.interop.nanochat import (
    SUPPORTED_NANOCHAT,
    NanochatCheckpoint,
    export_nanochat,
    import_nanochat,
    nanochat_shapes,
    read_nanochat_checkpoint,
    read_nanochat_tokenizer,
    write_nanochat_tokenizer,
)
from nanogpt_core.interop.pretrained_compare import PretrainedComparison, PromptComparison, compare_in_pretrained

__all__ = [
    "SUPPORTED_NANOCHAT",
    "NanochatCheckpoint",
    "PretrainedComparison",
    "PromptComparison",
    "compare_in_pretrained",
    "export_nanochat",
    "import_nanochat",
    "nanochat_shapes",
    "read_nanochat_checkpoint",
    "read_nanochat_tokenizer",
    "write_nanochat_tokenizer",
]
