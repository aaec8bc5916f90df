"""nanogpt: a small, exact, hackable GPT whose every component is a swappable plugin.

    from nanogpt_core import GPTConfig, build_model
    model = build_model(GPTConfig(sequence_len=64, vocab_size=256, n_layer=2, n_head=2, n_kv_head=1, n_embd=64),
                        use="student:attention")

    from nanogpt_core import TrainSettings, train, load_model
    result = train(TrainSettings(depth=2, num_iterations=300))      # -> a run folder with checkpoints
    model, tokenizer, meta = load_model(result.run_dir)

        report = compare(use="student:attention")                         # -> a verdict per component

The packages, by job (docs/architecture.md): `model` (what a GPT is), `data`, `io` (models on disk), `checks`,
`train`, `compare`, `learn` (the learner's tools); `errors`, `files` and `device` underneath all of them.
"""

from nanogpt_core.errors import NanoGPTError
from nanogpt_core.io.checkpoint import load_model
from nanogpt_core.model.assembly import GPT, build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import COMPONENT_NAMES, COMPONENTS
from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.kv_cache import KVCache
from nanogpt_core.model.registry import register_plugin, unregister_plugin
from nanogpt_core.model.use_spec import resolve_use
from nanogpt_core.train.loop import train
from nanogpt_core.train.settings import TrainSettings

__all__ = [
    "COMPONENTS",
    "COMPONENT_NAMES",
    "GPT",
    "GPTConfig",
    "KVCache",
    "NanoGPTError",
    "TrainSettings",
    "build_model",
    "hookimpl",
    "load_model",
    "register_plugin",
    "resolve_use",
    "train",
    "unregister_plugin",
]
