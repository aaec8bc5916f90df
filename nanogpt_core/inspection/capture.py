"""Keeping the activations of a forward pass at every capture point, for any mix of implementations.

    with capture(model) as cache:          # hooks on, for the block only
        model(idx)
    cache["blocks.0.attn.pattern"]          # (B, H, T, T)

    logits, cache = run_with_cache(model, idx, names=["blocks.*.attn.pattern"])

The points are the table of `nanogpt_core.inspection.points`. Inputs and outputs of the component calls are read
with forward hooks on the assembly's module tree, so they are what *your* module received and returned; attention
weights are recorded while each attention call runs (`nanogpt_core.inspection.patterns`). Nothing is attached to the
model outside the `with` block: a model that is not being inspected runs exactly the code it always ran.

A point the model cannot provide (a block that never calls `self.attn`, an MLP whose c_proj is not a module, an
attention whose weights come from neither SDPA nor a softmax) is left out of the cache, and `cache.missing` says why.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn as nn

from nanogpt_core.inspection.patterns import PatternRecorder
from nanogpt_core.inspection.points import CapturePoint, select


class ActivationCache(Mapping):
    """Activations by capture-point name (detached copies), and `missing`: {name: why it was not captured}.

    With several forwards inside one `capture`, each point holds the last one's activation."""

    def __init__(self, n_layer: int) -> None:
        self.n_layer = n_layer
        self.tensors: dict[str, torch.Tensor] = {}
        self.missing: dict[str, str] = {}
        self.how: dict[str, str] = {}  # for attention patterns: how the weights were seen

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.tensors:
            return self.tensors[name]
        if name in self.missing:
            raise KeyError(f"{name} was not captured: {self.missing[name]}")
        close = difflib.get_close_matches(name, list(self.tensors) + list(self.missing), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (nanogpt_core.inspection.POINTS lists the points)"
        raise KeyError(f"no capture point {name!r} in this cache{hint}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def per_layer(self, point: str) -> list[torch.Tensor]:
        """One tensor per block for a per-layer point given without its prefix: per_layer("attn.pattern")."""
        return [self[f"blocks.{i}.{point}"] for i in range(self.n_layer)]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(t.shape)}" for n, t in list(self.tensors.items())[:4])
        more = f", ... ({len(self.tensors)} in all)" if len(self.tensors) > 4 else ""
        return f"ActivationCache({shapes}{more}; {len(self.missing)} missing)"


def _first_tensor(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


@contextmanager
def capture(model: nn.Module, names: Iterable[str] | str | None = None) -> Iterator[ActivationCache]:
    """Keep the activations of every forward inside the block at the points `names` selects (exact names or
    patterns such as "blocks.*.attn.pattern"; None: every point). The hooks are removed when the block ends."""
    n_layer = model.config.n_layer
    cache = ActivationCache(n_layer)
    wanted = select(n_layer, names)
    with ExitStack() as stack:
        for name, point, layer in wanted:
            path = point.path_at(layer)
            module = _submodule(model, path)
            if module is None:
                cache.missing[name] = _no_module(point, path)
                continue
            handles = _pattern_hooks(module, name, model.config.n_head, cache) if point.side == "pattern" else \
                [_hook(module, name, point, cache)]
            for handle in handles:
                stack.callback(handle.remove)
        try:
            yield cache
        finally:
            ran = bool(cache.tensors)
            for name, point, layer in wanted:
                if name not in cache.tensors and name not in cache.missing:
                    where = point.path_at(layer) or "the model"
                    cache.missing[name] = f"{where} was not called in the forward" if ran else \
                        "no forward ran inside the capture"


def run_with_cache(model: nn.Module, idx: torch.Tensor, names: Iterable[str] | str | None = None,
                   **forward_kwargs: Any) -> tuple[Any, ActivationCache]:
    """One forward of `idx` (B, T) without gradients: (what the model returns, the cache of `names`)."""
    with torch.no_grad(), capture(model, names) as cache:
        out = model(idx, **forward_kwargs)
    return out, cache


def _hook(module: nn.Module, name: str, point: CapturePoint, cache: ActivationCache):
    if point.side == "input":
        def keep_input(mod, args, kwargs):
            x = _first_tensor(args, kwargs)
            if x is not None:
                cache.tensors[name] = x.detach().clone()

        return module.register_forward_pre_hook(keep_input, with_kwargs=True)

    def keep_output(mod, args, output):
        if isinstance(output, torch.Tensor) and (name != "logits" or output.ndim == 3):
            cache.tensors[name] = output.detach().clone()
        elif name == "logits":
            cache.missing[name] = "the model was called with targets, so it returned the loss, not the logits"

    return module.register_forward_hook(keep_output)


def _pattern_hooks(module: nn.Module, name: str, n_head: int, cache: ActivationCache) -> list:
    """A recorder entered before each call of the attention module and left after it (even when it raises)."""
    active: list[PatternRecorder] = []

    def enter(mod, args, kwargs):
        x = _first_tensor(args, kwargs)
        if x is None or x.ndim != 3:
            return
        recorder = PatternRecorder(x.size(0), x.size(1), n_head)
        recorder.__enter__()
        active.append(recorder)

    def leave(mod, args, output):
        if not active:
            return
        recorder = active.pop()
        recorder.__exit__(None, None, None)
        if recorder.pattern is not None:
            cache.tensors[name], cache.how[name] = recorder.pattern, recorder.how
            cache.missing.pop(name, None)
        else:
            cache.missing[name] = (f"{type(mod).__name__}.forward called neither F.scaled_dot_product_attention "
                                   f"nor a softmax over (B, H, T, T) scores, so its weights were not seen")

    return [module.register_forward_pre_hook(enter, with_kwargs=True),
            module.register_forward_hook(leave, always_call=True)]


def _no_module(point: CapturePoint, path: str) -> str:
    if point.name.endswith("mlp.hidden"):
        return (f"{path} is not a module (an nn.Linear named c_proj), so its input cannot be read; the MLP's other "
                f"points are still captured")
    return f"the model has no module {path}"


