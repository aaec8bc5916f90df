"""The bench the checks run on: a small default config, seeded randomness, and components built the way the model
builds them (the other components reference), so a check exercises one implementation and nothing else."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from nanogpt_core.files import display_path
from nanogpt_core.model.assembly import GPT, ROTARY_BASE, build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import BY_NAME
from nanogpt_core.model.registry import REFERENCE_SET, get_implementation

REFERENCE = REFERENCE_SET


def default_check_config() -> GPTConfig:
    """Small enough that every check of every component runs in seconds on a CPU, with GQA (4 query heads share
    2 key/value heads) so the head mapping is exercised, and matrices big enough for init statistics."""
    return GPTConfig(sequence_len=32, vocab_size=97, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)


def config_key(config: GPTConfig) -> tuple:
    """A config as a hashable key, for caches of measurements that depend on the model's shape only."""
    return tuple(sorted(config.to_dict().items()))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for the block and restore the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run tiny models on one CPU thread, restoring the caller's setting afterwards.

    The checks' tensors are a few kilobytes: intra-op threads cost more in synchronisation than they save, and on a
    shared machine every small matmul waits for a busy core. Measured on 2 shared cores: a full `nanogpt compare`
    took 150 s with torch's default 2 threads and 25 s with 1.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Bench:
    """One component of one implementation set under test, with the reference parts it is built with."""

    impl_set: str
    component: str
    config: GPTConfig
    device: torch.device = torch.device("cpu")
    use: dict[str, str] | None = None  # the whole model's choice, for probes of a mixed model; default: this one

    def impl(self, component: str | None = None) -> Any:
        name = component or self.component
        return get_implementation(self.impl_set if name == self.component else REFERENCE, name)

    def ref(self, component: str | None = None) -> Any:
        return get_implementation(REFERENCE, component or self.component)

    # --- modules built as GPT builds them -------------------------------------------------------------------------

    def build(self, impl_set: str | None = None, norm: Any = None, rotary: Any = None) -> nn.Module:
        """The component's module from `impl_set` (default: the set under test), with reference parts injected.
        `norm` and `rotary` override the parts injected into attention and block (to expose how they are used)."""
        use_set = self.impl_set if impl_set is None else impl_set
        make = get_implementation(use_set, self.component)
        norm = norm or self.ref("norm")
        rotary = rotary or self.ref("rotary")
        cfg, c = self.config, self.component
        with torch.device(self.device):
            if c == "norm":
                return make(cfg.n_embd)
            if c == "attention":
                return make(cfg, 0, norm=norm, rotary=rotary)
            if c == "mlp":
                return make(cfg)
            if c == "block":
                attn = self.ref("attention")(cfg, 0, norm=norm, rotary=rotary)
                return make(cfg, 0, attn=attn, mlp=self.ref("mlp")(cfg), norm=norm)
        raise ValueError(f"{c} is not a module component")

    def model(self, device: str | torch.device | None = None) -> GPT:
        """The whole GPT with this component from the set under test and every other component reference."""
        use = self.use or {self.component: self.impl_set}
        return build_model(self.config, use=use, device=device or self.device)

    def cos_sin(self, seq_len: int, rotary: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        rotary = rotary or self.ref("rotary")
        return rotary.precompute(seq_len, self.config.head_dim, base=ROTARY_BASE, device=self.device)

    def x(self, batch: int = 2, seq_len: int = 12, seed: int = 1) -> torch.Tensor:
        """A residual-stream input (B, T, C) with varied scales, as real activations have."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, seq_len, self.config.n_embd, generator=g)
        return x.to(self.device)

    def tokens(self, batch: int = 2, seq_len: int = 16, seed: int = 2) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, self.config.vocab_size, (batch, seq_len), generator=g).to(self.device)


def named_parameter_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def key_diff(candidate: nn.Module, reference: nn.Module) -> str:
    """'' when the state-dict keys and shapes agree; otherwise a one-line diff a learner can act on."""
    cand, ref = named_parameter_shapes(candidate), named_parameter_shapes(reference)
    missing = sorted(set(ref) - set(cand))
    extra = sorted(set(cand) - set(ref))
    shapes = sorted(k for k in set(ref) & set(cand) if ref[k] != cand[k])
    parts = []
    if missing:
        parts.append("missing " + ", ".join(f"{k} {ref[k]}" for k in missing))
    if extra:
        parts.append("unexpected " + ", ".join(f"{k} {cand[k]}" for k in extra))
    if shapes:
        parts.append("shape " + ", ".join(f"{k}: {cand[k]} instead of {ref[k]}" for k in shapes))
    return "; ".join(parts)


# --- where a fault is: the file and line of the method a diagnosis points at -------------------------------------

MAIN_METHOD = {"rotary": "apply"}  # a module's main method is forward; a function component is its function


def fault_location(impl_set: str, component: str, method: str | None = None) -> str:
    """'impls/student/attention.py:31 (CausalSelfAttention.forward)': where `method` of the implementation is
    defined (the component's main method when None); '' when the source cannot be found."""
    implementation = get_implementation(impl_set, component)
    if BY_NAME[component].kind == "function" or not (isinstance(implementation, type) or hasattr(implementation,
                                                                                              "__dict__")):
        target = implementation
    else:
        name = method or MAIN_METHOD.get(component, "forward")
        owner = implementation if isinstance(implementation, type) else type(implementation)
        target = getattr(owner, name, None) or owner
    target = inspect.unwrap(getattr(target, "__func__", target))
    try:
        lines, line = inspect.getsourcelines(target)
        path = inspect.getsourcefile(target)
    except (TypeError, OSError):
        return ""
    qualname = getattr(target, "__qualname__", getattr(target, "__name__", component))
    return f"{display_path(path or '')}:{line} ({qualname})"
