"""The GPT assembly: one implementation per component, each handed the parts it uses.

The model's top level is a component too, `gpt` (the token embedding, the blocks, the final norm, the head, the logit
softcap and the loss). What the core keeps is what is the same whichever top level builds the model:

    norm       -> every normalisation: handed to gpt (after the embedding, before the head), to each block, and
                  to attention (QK-norm)
    attention, mlp, block -> one layer: `make_block(i)` builds layer i's attention and MLP and hands them to the
                  block; the gpt calls it once per layer
    rotary     -> the cos/sin table, registered on the model as buffers `cos` and `sin` (`rotary_cos_sin` slices it),
                  and the rotation attention applies to q and k
    init, optimizer, generate -> called with the assembled model
    the KV cache, the checks that every tensor is registered, and `--debug` tracing

The model's class is the gpt component's class with `GPT` (those facilities) mixed in behind it, so `build_model`
returns the component's own module, with its own `forward`, and `isinstance(model, GPT)` holds for every model.

The module tree and state-dict keys are nanochat's (`transformer.wte.weight`, `transformer.h.0.attn.c_q.weight`, ...,
`lm_head.weight`), so checkpoints move between the two.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn as nn

from nanogpt_core.errors import ComponentError, ConfigError
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import (
    BY_NAME,
    COMPONENT_NAMES,
    LOGIT_SOFTCAP,  # noqa: F401  (re-exported: older callers import it here)
)
from nanogpt_core.model.kv_cache import KVCache
from nanogpt_core.model.registry import get_implementation
from nanogpt_core.model.trace import print_config_banner, trace_construction
from nanogpt_core.model.use_spec import UseSpec, format_use, resolve_use

ROTARY_TABLE_FACTOR = 10  # the cos/sin table covers 10x the training context, as nanochat's does
ROTARY_BASE = 10000
# What the init, optimizer and generate components and the core reach for by name on every model.
REQUIRED_MODULES = ("transformer.wte", "transformer.h", "lm_head")
# Set on the model by the core after the gpt's __init__; a gpt class must not define them itself.
CORE_ATTRIBUTES = ("use", "parts", "rotary", "rotary_seq_len", "cos", "sin")


class GPT(nn.Module):
    """What the core adds to every model, whichever `gpt` component is its top level.

    Never instantiated on its own: `build_model` makes the model's class from the gpt component's class with this one
    mixed in behind it (`assembled_class`), sets `config`, `use` and `parts`, and registers the rotary table.
    """

    config: GPTConfig
    use: dict[str, str]  # {component: impl_set}, recorded in checkpoints
    parts: dict[str, Any]  # {component: implementation}

    # --- what the gpt's forward uses ------------------------------------------------------------------------------

    def rotary_cos_sin(self, T0: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary table for positions T0 .. T0 + T - 1, each (1, T, 1, head_dim / 2): what every block receives."""
        if T0 + T > self.cos.size(1):
            raise ConfigError(
                f"positions {T0}..{T0 + T - 1} exceed the rotary table of {self.cos.size(1)} positions "
                f"(10 x sequence_len); use a shorter input or a larger sequence_len."
            )
        return self.cos[:, T0 : T0 + T], self.sin[:, T0 : T0 + T]

    # --- components called with the whole model ---------------------------------------------------------------

    def init_weights(self) -> None:
        """Initialise every parameter with the `init` component (the model is built uninitialised on purpose)."""
        self.parts["init"](self)
        if self.cos.is_meta:  # built on the meta device: materialise the rotary table now
            cos, sin = self.rotary.precompute(self.rotary_seq_len, self.config.head_dim, base=ROTARY_BASE,
                                              device=self.get_device())
            self.cos, self.sin = cos, sin

    def setup_optimizers(self, **lrs: float) -> list[torch.optim.Optimizer]:
        return self.parts["optimizer"](self, **lrs)

    def generate(
        self, tokens: list[int], max_tokens: int, temperature: float = 1.0, top_k: int | None = None, seed: int = 42
    ) -> Iterator[int]:
        return self.parts["generate"](self, tokens, max_tokens, temperature=temperature, top_k=top_k, seed=seed)

    # --- facts about the model ---------------------------------------------------------------------------------

    def new_kv_cache(self, batch_size: int, seq_len: int) -> KVCache:
        c = self.config
        return KVCache(batch_size, c.n_kv_head, seq_len, c.head_dim, c.n_layer)

    def get_device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def use_spec(self) -> str:
        return format_use(self.use)


CORE_MEMBERS = tuple(name for name in vars(GPT) if not name.startswith("_")) + CORE_ATTRIBUTES


@functools.cache
def assembled_class(top: type) -> type:
    """The class of a model whose top level is `top` (a gpt component): `top` first, so its `__init__`, `forward` and
    `estimate_flops` are the model's, then `GPT` with the core's facilities. One class per component class."""
    return type(top.__name__, (top, GPT), {"__doc__": top.__doc__, "__module__": top.__module__,
                                           "__qualname__": top.__qualname__})


def _current_device() -> torch.device:
    """The device tensors are created on right now (honours `with torch.device(...)`)."""
    return torch.empty(0).device


def build_model(
    config: GPTConfig, use: UseSpec = None, device: str | torch.device | None = None, trace: str | None = None,
    trace_layer: int | None = None,
) -> GPT:
    """Assemble a GPT from the implementations `use` picks (default: all reference). Weights are uninitialised:
    call `model.init_weights()` (or load a checkpoint) next.

    `trace` (a `--debug` mode: "flow", "stats", "inside", ...) prints the seed's config banner and one line per
    component constructed, `trace_layer` (`--debug-layer`) only layer N's (see `nanogpt_core.model.trace`)."""
    config.validate()
    chosen = resolve_use(use)
    parts = {component: get_implementation(chosen[component], component) for component in COMPONENT_NAMES}
    if trace:
        print_config_banner(config)
    place = torch.device(device) if device is not None else nullcontext()
    with trace_construction(parts, chosen, trace, layer=trace_layer), place:
        model = _construct(config, chosen, parts)
    check_tensors_registered(model)
    return model


def _construct(config: GPTConfig, use: dict[str, str], parts: dict[str, Any]) -> GPT:
    """The gpt's __init__ first (it asks for each layer, in the order a learner meets them), then the rotary table."""
    Norm, rotary = parts["norm"], parts["rotary"]
    Attention, MLP, Block = parts["attention"], parts["mlp"], parts["block"]

    def make_block(layer_idx: int) -> nn.Module:
        """Layer `layer_idx`: its attention and MLP, built with the model's norm and rotary, handed to the block."""
        attn = Attention(config, layer_idx, norm=Norm, rotary=rotary)
        return Block(config, layer_idx, attn=attn, mlp=MLP(config), norm=Norm)

    top = parts["gpt"]
    where = f"gpt ({use['gpt']})"
    if not (isinstance(top, type) and issubclass(top, nn.Module)):
        raise ComponentError(f"{where} is {top!r}, not an nn.Module class; register the class itself (contract: "
                             f"{BY_NAME['gpt'].signature}).")
    defined = [name for klass in top.__mro__ if not issubclass(GPT, klass) for name in vars(klass)
               if name in CORE_MEMBERS]
    if defined:
        raise ComponentError(f"{where} defines {defined[0]}, which the core provides on every model; remove it from "
                             f"the class (weight init, optimizers and sampling are components of their own).")
    model = assembled_class(top)(config, make_block=make_block, norm=Norm)
    taken = [name for name in CORE_ATTRIBUTES if name in vars(model) or name in model._modules
             or name in model._parameters or name in model._buffers]
    if taken:
        raise ComponentError(f"{where} sets self.{taken[0]}, a name the core uses on every model; rename it.")
    model.config, model.use, model.parts, model.rotary = config, dict(use), dict(parts), rotary
    check_top_level(model)
    model.rotary_seq_len = config.sequence_len * ROTARY_TABLE_FACTOR
    cos, sin = rotary.precompute(model.rotary_seq_len, config.head_dim, base=ROTARY_BASE, device=_current_device())
    check_rotary_table(cos, sin, model.rotary_seq_len, config.head_dim, use["rotary"])
    # non-persistent: derived from the config, so never stored in a checkpoint
    model.register_buffer("cos", cos, persistent=False)
    model.register_buffer("sin", sin, persistent=False)
    return model


# --- mistakes that would otherwise train silently wrong ----------------------------------------------------------


def check_rotary_table(cos: Any, sin: Any, seq_len: int, head_dim: int, impl_set: str) -> None:
    """The table's shape is the contract's, or a ComponentError that blames rotary: a (seq_len, D/2) table would
    otherwise fail later, in the core's position check or in attention's broadcasting, naming neither."""
    expected = (1, seq_len, 1, head_dim // 2)
    for name, table in (("cos", cos), ("sin", sin)):
        shape = tuple(getattr(table, "shape", ()))
        if shape != expected:
            raise ComponentError(
                f"rotary ({impl_set}).precompute returned {name} of shape {shape}; the contract says (1, seq_len, 1, "
                f"head_dim // 2) = {expected}: return {name}[None, :, None, :] so it broadcasts over batch and heads "
                f"(nanogpt check {impl_set}:rotary).", component="rotary")



def _owner(model: GPT, module_name: str) -> str:
    """`mlp (student)`: the component whose instance holds `module_name` (the nearest one up the module tree)."""
    modules = dict(model.named_modules())
    parts = module_name.split(".") if module_name else []
    for cut in range(len(parts), -1, -1):
        module = modules[".".join(parts[:cut])]
        for component in ("attention", "mlp", "block", "norm", "gpt"):
            impl = model.parts[component]
            if isinstance(impl, type) and isinstance(module, impl):
                return f"{component} ({model.use[component]})"
    return "the model"


def check_top_level(model: GPT) -> None:
    """Refuse a top level without the modules the other components reach for by name, or with the wrong depth.

    The init and optimizer components find the blocks in `transformer.h`, the embedding in `transformer.wte` and the
    head in `lm_head`; without one of them the first error would come from inside their code, far from the cause.
    """
    where = f"gpt ({model.use['gpt']})"
    modules = dict(model.named_modules())
    missing = [name for name in REQUIRED_MODULES if name not in modules]
    if missing:
        expected = re.search(r"Modules (.*?)\.?$", BY_NAME["gpt"].shapes)
        raise ComponentError(f"{where} builds no self.{missing[0]}, which the other components use; create it in "
                             f"__init__ (the contract's modules: {expected.group(1) if expected else '?'}).")
    layers = len(modules["transformer.h"])
    if layers != model.config.n_layer:
        raise ComponentError(f"{where} holds {layers} blocks in transformer.h but n_layer is {model.config.n_layer}; "
                             f"build them with [make_block(i) for i in range(config.n_layer)].")


def check_tensors_registered(model: GPT) -> None:
    """Refuse tensors a component keeps as plain attributes, and attention/MLP modules without any parameters.

    A plain `self.w = torch.randn(...)` is not trained (the optimizer never sees it), not saved in a checkpoint and
    not moved by `.to(device)`; on a CPU it runs, so the mistake would show only as a model that does not learn, or
    as a device error on the first GPU. Caught here, it is one line naming the attribute and the fix.
    """
    for name, module in model.named_modules():
        plain = [attr for attr, value in vars(module).items() if isinstance(value, torch.Tensor)]
        if plain:
            attr = plain[0]
            raise ComponentError(
                f"{_owner(model, name)} keeps self.{attr} ({type(module).__name__}) as a plain tensor, so it is "
                f"not trained, not saved and not moved with the model; make a weight nn.Parameter(...) or register "
                f"a constant with self.register_buffer({attr!r}, ...)."
            )
    for component in ("attention", "mlp"):
        impl = model.parts[component]
        expected = re.search(r"Parameters (.*?)\.?$", BY_NAME[component].shapes)
        instances = [m for m in model.modules() if isinstance(impl, type) and isinstance(m, impl)]
        if expected and instances and not any(p.numel() for m in instances for p in m.parameters()):
            raise ComponentError(
                f"{component} ({model.use[component]}) has no parameters, but its contract expects "
                f"{expected.group(1)}; create them in __init__ (nn.Linear or nn.Parameter) so they are trained."
            )


def optimizer_coverage(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> tuple[list[str], list[str]]:
    """(trainable parameters in no optimizer group, those in more than one), by name."""
    count: dict[int, int] = {}
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                count[id(p)] = count.get(id(p), 0) + 1
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return ([n for n, p in trainable if count.get(id(p), 0) == 0],
            [n for n, p in trainable if count.get(id(p), 0) > 1])


def check_optimizer_coverage(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Every trainable parameter in exactly one optimizer group, or a ComponentError naming the first that is not.

    A parameter left out never changes (training runs, the loss just stalls); one in two groups is updated twice per
    step. Neither raises anywhere in torch, so the training loop asks before its first step.
    """
    missing, twice = optimizer_coverage(model, optimizers)
    impl_set = getattr(model, "use", {}).get("optimizer", "?")
    if missing:
        problem = f"leaves {missing[0]} out of every parameter group, so it would never train"
    elif twice:
        problem = f"puts {twice[0]} in more than one parameter group, so it would be updated twice a step"
    else:
        return
    raise ComponentError(f"optimizer ({impl_set}) {problem}; put every trainable parameter in "
                         f"exactly one group (nanogpt check {impl_set}:optimizer).")
