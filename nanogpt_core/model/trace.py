"""The `--debug` execution trace: which component runs, in what order, with what shapes — printed by the core.

The seed's skeleton printed `[DEBUG] Block.forward() called` from inside every method, so a learner saw the flow of
a training step. Here the core prints those lines instead, with hooks around every component call, so the learner's
code needs no print statements and the reference prints the same trace as the student set:

    print_config_banner(config)               # the seed's banner on model init
    build_model(config, use, trace="flow")    # + one line per component constructed (and the banner)
    with tracing(model, "flow"):              # one line per component call, with input/output shapes
        loss = model(x, y); loss.backward()   # only the first forward inside the block is printed

Modes: None (no-op), "flow" (calls and shapes), "stats" (also dtype, device, mean, std, min, max of every tensor, and
a loud flag at the FIRST component whose output holds NaN/Inf while its inputs were finite: that is where to look),
"inside" (the flow, and inside every component the run swapped in — the learner's own — the shape and dtype of what
each statement binds, the first time each method runs: `nanogpt_core.model.trace_lines`), and "inside,stats" (both).
`layer=N` (`--debug-layer N`) limits any of them to layer N: the lines of other layers are left out, model-level
lines (the embedding's norm, the head, init, the optimizer) stay.

Modules (norm, attention, mlp, block and gpt, the model itself) are traced with forward pre/post hooks; function
components (rotary's precompute/apply, init, optimizer, generate) are wrapped for the duration of the block and
restored after.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TextIO

import torch
import torch.nn as nn

from nanogpt_core.errors import ConfigError
from nanogpt_core.model.code_objects import implementation_file
from nanogpt_core.model.contracts import BY_NAME, COMPONENT_NAMES
from nanogpt_core.model.registry import REFERENCE_SET
from nanogpt_core.model.trace_lines import LineTracer

PREFIX = "[DEBUG]"
RULE = f"{PREFIX} " + "=" * 40
BANNER_FIELDS = ("n_layer", "n_head", "n_kv_head", "n_embd", "vocab_size", "sequence_len")  # the seed's order
MODES = ("flow", "stats", "inside")  # "stats" and "inside" combine: --debug=inside,stats
MODULE_COMPONENTS = tuple(name for name in COMPONENT_NAMES if BY_NAME[name].is_module)
FUNCTION_METHODS = {"rotary": ("precompute", "apply")}  # "functions" components: which attributes to wrap


def normalize_mode(mode: str | bool | None) -> str | None:
    """Map a `--debug` value to None, "flow", "stats", "inside" or "inside,stats"; anything else is a one-line
    ConfigError."""
    if mode in (None, False, "", "off", "none"):
        return None
    if mode in (True, "1", "on", "true"):
        return "flow"
    parts = {part.strip() for part in mode.split(",")} if isinstance(mode, str) else set()
    if not parts or not parts <= set(MODES):
        raise ConfigError(f"--debug takes no value, 'stats', 'inside' or 'inside,stats' (got {mode!r}); try --debug, "
                          f"--debug=stats or --debug=inside.")
    return ",".join(p for p in ("inside", "stats") if p in parts) or "flow"


def check_layer(layer: int | None, n_layer: int) -> int | None:
    """`--debug-layer N` must name a layer of the model (ConfigError with the range otherwise)."""
    if layer is not None and not 0 <= layer < n_layer:
        layers = "one layer, layer 0" if n_layer == 1 else f"{n_layer} layers, numbered 0 to {n_layer - 1}"
        raise ConfigError(f"--debug-layer {layer} is not a layer of this model: it has {layers}.")
    return layer


def print_config_banner(config: Any, file: TextIO | None = None) -> None:
    """The seed's banner, printed when the model is initialised, so every trace starts with the model's shape."""
    out = file or sys.stdout
    lines = [RULE, f"{PREFIX} Initializing GPT model"]
    lines += [f"{PREFIX}   {name}: {getattr(config, name)}" for name in BANNER_FIELDS]
    lines.append(RULE)
    print("\n".join(lines), file=out, flush=True)


# --- describing tensors ------------------------------------------------------------------------------------------


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in an argument: itself, or the members of a tuple/list (cos_sin is a pair)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, torch.Tensor)]
    return []


def _is_finite(t: torch.Tensor) -> bool:
    if t.is_meta or not (t.is_floating_point() or t.is_complex()):
        return True
    return bool(torch.isfinite(t.detach()).all())


def tensor_stats(t: torch.Tensor) -> str:
    """dtype, device and summary numbers of one tensor, on one line."""
    head = f"dtype={t.dtype} device={t.device}"
    if t.is_meta or t.numel() == 0:
        return head
    with torch.no_grad():
        f = t.detach().float()
        finite = torch.isfinite(f)
        line = f"{head} mean={f.mean().item():.4g} std={f.std().item() if f.numel() > 1 else 0.0:.4g} " \
               f"min={f.min().item():.4g} max={f.max().item():.4g}"
        if not bool(finite.all()):
            line += f"  NaN={int(torch.isnan(f).sum())} Inf={int(torch.isinf(f).sum())}"
    return line


# --- the tracer ----------------------------------------------------------------------------------------------------


class Tracer:
    """Prints call lines for one mode; remembers where NaN/Inf first appeared (`first_nonfinite`)."""

    def __init__(self, mode: str, file: TextIO | None = None, use: dict[str, str] | None = None,
                 layer: int | None = None) -> None:
        self.mode = mode
        self.stats = "stats" in mode.split(",")
        self.inside = "inside" in mode.split(",")
        self.file = file
        self.use = use or {}
        self.layer = layer  # --debug-layer: only this layer's lines (and the model-level ones)
        self.active = True  # switched off after the first top-level forward
        self.first_nonfinite: str | None = None  # label of the component call that produced the first NaN/Inf
        self._seen_functions: set[str] = set()
        self._layers: list[int | None] = []  # the layer of each component call (or construction) in progress

    def emit(self, line: str) -> None:
        if self.layer is not None and self._layers and self._layers[-1] not in (None, self.layer):
            return  # another layer's line
        print(f"{PREFIX} {line}", file=self.file or sys.stdout, flush=True)

    def enter(self, layer: int | None) -> None:
        self._layers.append(layer)

    def leave(self) -> None:
        if self._layers:
            self._layers.pop()

    def follows_inside(self) -> bool:
        """May the line trace start following a method here? In the asked-for layer, or outside every component
        call (init, optimizer, generate). Each method is followed once (its first call), so no "first forward"
        rule is needed here: a helper first called after the forward (generate's sampling) is still followed."""
        return self.layer is None or not self._layers or self._layers[-1] == self.layer

    def tag(self, component: str | None) -> str:
        if component is None:
            return ""
        return f"  [{self.use.get(component, '?')}:{component}]" if self.use else f"  [{component}]"

    def call(self, label: str, component: str | None, args: tuple, where: str = "") -> None:
        self.emit(f"{label}() called{where}{self.tag(component)}")
        tensors = [t for a in args for t in _tensors(a)]
        if tensors:
            self.emit(f"  Input shape: {tensors[0].shape}")
        if self.stats:
            for t in tensors:
                self.emit(f"    in  {tuple(t.shape)} {tensor_stats(t)}")

    def result(self, label: str, component: str | None, args: tuple, output: Any) -> None:
        outs = _tensors(output)
        if outs:
            shapes = ", ".join(str(t.shape) for t in outs)
            self.emit(f"  {label}() returned shape: {shapes}")
        if not self.stats:
            return
        for t in outs:
            self.emit(f"    out {tuple(t.shape)} {tensor_stats(t)}")
        if self.first_nonfinite is None and any(not _is_finite(t) for t in outs):
            inputs = [t for a in args for t in _tensors(a)]
            if all(_is_finite(t) for t in inputs):
                self.first_nonfinite = label
                who = f"component '{component}'" if component else "the core"
                self.emit(f"  !!! NaN/Inf first appears in the output of {label}() ({who}); its inputs were "
                          f"finite, so the bug is in this call. Check divisions, eps, init scale and softcap.")

    def function(self, label: str, component: str, fn: Callable) -> Callable:
        """Wrap a function component so its (first) call is traced; generators are traced when created."""

        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            # rotary runs many times per forward: traced with the first forward; the others on their first call
            quiet = not self.active if component == "rotary" else label in self._seen_functions
            if quiet:
                return fn(*args, **kwargs)
            self._seen_functions.add(label)
            self.call(label, component, args)
            out = fn(*args, **kwargs)
            self.result(label, component, args, out)
            return out

        return traced


def own_files(parts: dict[str, Any], use: dict[str, str]) -> set[str]:
    """The files of the implementations a model swapped in (every component not the reference's): the code
    `--debug=inside` follows. The core's own files (a broken file's placeholder lives there) never count."""
    core = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    files = set()
    for component, implementation in parts.items():
        if use.get(component, REFERENCE_SET) == REFERENCE_SET:
            continue
        path = implementation_file(implementation)
        if path and not path.startswith(core + os.sep):
            files.add(path)
    return files


def _follow_inside(stack: ExitStack, tracer: Tracer, parts: dict[str, Any], use: dict[str, str]) -> None:
    if tracer.inside:
        stack.enter_context(LineTracer(own_files(parts, use), tracer.emit, tracer.stats, tracer.follows_inside))


def _layer_of(name: str) -> int | None:
    """The layer a submodule belongs to, by its place in the tree: `transformer.h.3...` is layer 3."""
    parts = name.split(".")
    return int(parts[2]) if len(parts) >= 3 and parts[:2] == ["transformer", "h"] and parts[2].isdigit() else None


def _layer_suffix(module: nn.Module, name: str) -> str:
    layer = getattr(module, "layer_idx", None)
    if isinstance(layer, int):
        return f" for layer {layer}"
    return f" ({name})" if name else ""


def _module_component(model: nn.Module, name: str, module: nn.Module) -> str | None:
    """Which component built this submodule: by the registered class, or by its place in the tree."""
    for component in ("block", "attention", "mlp", "norm"):
        cls = model.parts.get(component) if hasattr(model, "parts") else None
        if isinstance(cls, type) and isinstance(module, cls):
            return component
    parts = name.split(".")
    if len(parts) == 3 and parts[:2] == ["transformer", "h"]:
        return "block"
    if len(parts) == 4 and parts[:2] == ["transformer", "h"]:
        return {"attn": "attention", "mlp": "mlp"}.get(parts[3])
    if name in ("emb_norm", "final_norm"):
        return "norm"
    return None


@contextmanager
def _patched(obj: Any, attr: str, make: Callable[[Callable], Callable]) -> Iterator[None]:
    """Replace obj.attr by make(original) for the block; put the exact original attribute back afterwards."""
    static = inspect.getattr_static(obj, attr)
    own = isinstance(obj, type) and attr in obj.__dict__ or not isinstance(obj, type) and attr in vars(obj)
    original = getattr(obj, attr)
    wrapped = make(original)
    setattr(obj, attr, staticmethod(wrapped) if isinstance(static, staticmethod) else wrapped)
    try:
        yield
    finally:
        if own:
            setattr(obj, attr, static)
        else:
            delattr(obj, attr)


def _safe_patch(stack: ExitStack, obj: Any, attr: str, make: Callable[[Callable], Callable]) -> None:
    try:
        stack.enter_context(_patched(obj, attr, make))
    except (AttributeError, TypeError):  # a frozen or slotted object: trace without it rather than fail
        pass


@contextmanager
def tracing(model: nn.Module, mode: str | bool | None, file: TextIO | None = None,
            layer: int | None = None) -> Iterator[Tracer | None]:
    """Trace the first forward (and any init/optimizer/generate/rotary call) inside the block; a no-op for None.
    `layer`: only that layer's lines."""
    mode = normalize_mode(mode)
    if mode is None:
        yield None
        return
    use = dict(getattr(model, "use", {}) or {})
    tracer = Tracer(mode, file, use, layer)
    handles = []
    top = model

    for name, module in model.named_modules():
        component = "gpt" if module is top else _module_component(model, name, module)
        if module is not top and component is None:
            continue
        label = f"{type(module).__name__}.forward"
        where = "" if module is top else _layer_suffix(module, name)
        layer = _layer_of(name)

        def pre(mod, args, kwargs, label=label, component=component, where=where, layer=layer):
            if tracer.active:
                tracer.enter(layer)
                tracer.call(label, component, tuple(args) + tuple(kwargs.values()), where)

        def post(mod, args, kwargs, output, label=label, component=component, is_top=module is top):
            if tracer.active:
                tracer.result(label, component, tuple(args) + tuple(kwargs.values()), output)
                tracer.leave()
                if is_top:
                    tracer.active = False  # only the first step's forward is printed

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))

    with ExitStack() as stack:
        parts = getattr(model, "parts", {})
        rotary = parts.get("rotary")
        if rotary is not None:
            rname = getattr(rotary, "__name__", type(rotary).__name__)
            for attr in FUNCTION_METHODS["rotary"]:
                _safe_patch(stack, rotary, attr,
                            lambda fn, attr=attr: tracer.function(f"{rname}.{attr}", "rotary", fn))
        saved = dict(parts)
        for component in ("init", "optimizer", "generate"):
            fn = parts.get(component)
            if fn is not None:
                label = getattr(fn, "__name__", component)
                parts[component] = tracer.function(label, component, fn)
        _follow_inside(stack, tracer, saved, use)
        try:
            yield tracer
        finally:
            parts.update(saved)
            for h in handles:
                h.remove()


def _built_as(instance: Any, cls: type) -> bool:
    """`instance` is a `cls` itself (not a subclass calling its __init__), or the model made from the gpt class `cls`
    (the core mixes its facilities into a class of the same name, `cls` first)."""
    kind = type(instance)
    return kind is cls or (kind.__bases__[:1] == (cls,) and kind.__name__ == cls.__name__)


@contextmanager
def trace_construction(parts: dict[str, Any], use: dict[str, str], mode: str | bool | None,
                       file: TextIO | None = None, layer: int | None = None) -> Iterator[Tracer | None]:
    """Trace model construction: one line per component constructed, and rotary.precompute's table shapes."""
    mode = normalize_mode(mode)
    if mode is None:
        yield None
        return
    tracer = Tracer(mode, file, use, layer)
    if tracer.inside and not own_files(parts, use):
        tracer.emit("--debug=inside follows the code of the components you swap in, and this model is all reference: "
                    "add e.g. --use student:attention.")
    building: list[int | None] = [None]  # the layer being assembled: from its attention's __init__ to its block's
    with ExitStack() as stack:
        for component in MODULE_COMPONENTS:
            cls = parts.get(component)
            if not isinstance(cls, type):
                continue

            def make_init(init: Callable, cls: type = cls, component: str = component) -> Callable:
                @functools.wraps(init)
                def traced_init(self, *args: Any, **kwargs: Any) -> None:
                    layer = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("layer_idx")
                    where = f" for layer {layer}" if isinstance(layer, int) else ""
                    if isinstance(layer, int):
                        building[0] = layer
                    # a part built without a layer index (the MLP, a norm) belongs to the layer being assembled
                    tracer.enter(layer if isinstance(layer, int) else building[0])
                    try:
                        if _built_as(self, cls):
                            tracer.emit(f"{cls.__name__}.__init__() called{where}{tracer.tag(component)}")
                        init(self, *args, **kwargs)
                    finally:
                        tracer.leave()
                        if component == "block" and _built_as(self, cls):
                            building[0] = None  # the block is the last part of its layer (the assembly's order)

                return traced_init

            _safe_patch(stack, cls, "__init__", make_init)
        rotary = parts.get("rotary")
        if rotary is not None:
            rname = getattr(rotary, "__name__", type(rotary).__name__)
            _safe_patch(stack, rotary, "precompute",
                        lambda fn: tracer.function(f"{rname}.precompute", "rotary", fn))
        _follow_inside(stack, tracer, parts, use)
        yield tracer
