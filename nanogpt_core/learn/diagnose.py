"""Turn an exception raised in component code into a diagnosis a learner can act on.

The seed's loop is: run, read the error, implement, run again. A raw traceback through torch internals is a poor thing
to read, so the CLI shows a short panel instead. This module decides what goes in it, without printing anything:

- which component and method raised: the traceback is walked from the innermost frame outwards to the first frame
  whose code belongs to a registered implementation (implementation objects are mapped to their code objects);
- for a skeleton's `NotImplementedError("TODO: ...")`: the TODO text and the reference method to read;
- for a bug inside a component (a shape, device or dtype mismatch, NaN, a missing attribute, a wrong signature): the
  contract's signature and shapes, the tensors the failing frame held (name, shape, dtype, device) and a hint for that
  kind of error, from the seed's "Debugging common issues".

Every path in it is one the user can open from where they are: the learner's file as it is on disk (relative to the
current folder when under it: `rotary.py` inside a workspace, `impls/student/rotary.py` at a checkout's root) and the
reference's file where it is installed, with the command that prints just the method to read
(`nanogpt show reference:rotary.apply`), which works however nanogpt was installed.
"""

from __future__ import annotations

import os
import re
import traceback
import types
from dataclasses import dataclass, field
from typing import Any

import torch

from nanogpt_core.errors import NanoGPTError
from nanogpt_core.files import display_path
from nanogpt_core.learn.source import component_source, find_part
from nanogpt_core.learn.workspace import TODO_RE
from nanogpt_core.model.code_objects import implementation_codes, implementation_file
from nanogpt_core.model.contracts import BY_NAME, COMPONENT_NAMES
from nanogpt_core.model.registry import REFERENCE_SET, get_implementation, registrations

TODO_PREFIX = "TODO: Implement"
EXIT_TODO = 3  # a component is not implemented yet: the expected state while learning
EXIT_COMPONENT_BUG = 4  # a component raised something else: a bug in that component
MAX_LOCALS = 8


@dataclass
class Diagnosis:
    kind: str  # todo, shape, device, dtype, nonfinite, attribute, signature, none-returned, exit, error
    component: str | None  # None when the error surfaced outside any component but suspects are known
    impl_set: str | None
    method: str | None  # "forward", "__init__", "apply", ...
    qualname: str | None  # "CausalSelfAttention.forward"
    file: str | None  # the implementation file (relative to the cwd when inside it)
    line: int | None
    error: str  # "NotImplementedError: TODO: ..." or "RuntimeError: mat1 and mat2 ..."
    message: str  # the exception's own message (for a TODO: the TODO text)
    reference_file: str | None  # the reference's file, where it is installed
    signature: str | None
    shapes: str | None
    actual: list[str] = field(default_factory=list)  # tensors held by the failing frame
    hint: str = ""
    suspects: list[str] = field(default_factory=list)  # non-reference components when the error surfaced elsewhere
    reference_command: str | None = None  # `nanogpt show reference:rotary.apply`: the method to read

    @property
    def exit_code(self) -> int:
        return EXIT_TODO if self.kind == "todo" else EXIT_COMPONENT_BUG

    @property
    def where(self) -> str:
        """`attention.forward` style: component and method."""
        if self.component is None:
            return "the model"
        return f"{self.component}.{self.method}" if self.method else self.component

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"exit_code": self.exit_code}


# --- which implementation owns a frame -------------------------------------------------------------------------


@dataclass
class _Owners:
    by_code: dict[types.CodeType, list[tuple[str, str]]]
    by_file: dict[str, set[str]]  # file -> components whose implementation lives there
    sets_by_file: dict[str, list[tuple[str, str]]]


def _owners() -> _Owners:
    by_code: dict[types.CodeType, list[tuple[str, str]]] = {}
    by_file: dict[str, set[str]] = {}
    sets_by_file: dict[str, list[tuple[str, str]]] = {}
    for (impl_set, component), reg in registrations().items():
        for code in implementation_codes(reg.implementation):
            by_code.setdefault(code, []).append((impl_set, component))
        src = implementation_file(reg.implementation)
        if src:
            by_file.setdefault(src, set()).add(component)
            sets_by_file.setdefault(src, []).append((impl_set, component))
    return _Owners(by_code, by_file, sets_by_file)


def _pick(candidates: list[tuple[str, str]], use: dict[str, str] | None) -> tuple[str, str]:
    """Among (set, component) pairs sharing one piece of code (a variant that subclasses the reference shares its
    methods), prefer the one the model uses (a component `use` does not name is reference's), then non-reference."""
    if use:
        for impl_set, component in candidates:
            if use.get(component, REFERENCE_SET) == impl_set:
                return impl_set, component
    return sorted(candidates, key=lambda sc: sc[0] == REFERENCE_SET)[0]


def locate(exc: BaseException, use: dict[str, str] | None = None) -> tuple[str, str, types.FrameType, int] | None:
    """(impl_set, component, frame, line) of the innermost traceback frame inside a registered implementation."""
    owners = _owners()
    frames = list(traceback.walk_tb(exc.__traceback__))
    for frame, line in reversed(frames):
        code = frame.f_code
        if code in owners.by_code:
            impl_set, component = _pick(owners.by_code[code], use)
            return impl_set, component, frame, line
        path = os.path.realpath(code.co_filename)
        components = owners.by_file.get(path)
        if components and len(components) == 1:  # a helper function in a one-component file
            impl_set, component = _pick(owners.sets_by_file[path], use)
            return impl_set, component, frame, line
    return None


# --- what kind of error, and what to do about it ---------------------------------------------------------------

_KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("device", re.compile(r"same device|device type|expected device|on (the )?(cpu|cuda|mps|meta)\b.*device", re.I)),
    ("dtype", re.compile(r"dtype|scalar type|BFloat16|Half|expected .*Float", re.I)),
    ("shape", re.compile(r"shape|size|dimension|cannot be multiplied|mat1|mat2|broadcast|view|reshape", re.I)),
    ("nonfinite", re.compile(r"\bnan\b|\binf\b|non-finite|not finite", re.I)),
]

HINTS = {
    "todo": "Read the reference's {where} (`{show}`) next to {file}, write it in your own words, delete the "
            "`raise NotImplementedError` line, and run the same command again.",
    "shape": "Shape mismatch. Check head_dim = n_embd // n_head; q has n_head heads but k and v have n_kv_head; "
             "view to (B, T, heads, head_dim) before transposing to (B, heads, T, head_dim), and back with "
             ".transpose(1, 2).contiguous().view(B, T, C); a reshape must keep the number of elements.",
    "device": "Tensors on different devices. The rotary cos/sin table must be on the model's device (use the "
              "`device` argument of precompute); create new tensors with device=x.device, never a fixed 'cuda' or "
              "'cpu'.",
    "dtype": "Mixed dtypes. The rotary table is bfloat16: cast the rotated result back with .to(x.dtype); keep "
             "the input's dtype through the component.",
    "nonfinite": "NaN/Inf. Check the init scale (small stds, zeroed c_proj and lm_head), the eps inside the norm "
                 "(no division by zero), the logit softcap, and the learning rates. `nanogpt train --debug=stats` "
                 "marks the first component whose output is not finite.",
    "attribute": "A missing attribute: create it in __init__ under the name the contract and the reference use "
                 "(checkpoint keys depend on these names).",
    "signature": "The call does not match the contract's signature: keep the parameters (and keyword-only "
                 "arguments after `*`) exactly as the skeleton declares them.",
    "none-returned": "A method returned None: did you forget the `return` at the end?",
    "exit": "A component must never end the program: sys.exit() (or exit()) inside it stops the run without "
            "saving and without saying why. Raise an exception with a message instead.",
    "error": "Compare this method with the reference's (`{show}`), line by line.",
}


# The same kind of error means different things in different components: a shape error in the norm is a lost
# keepdim, not a head_dim. Where a component has its own likely cause, its hint replaces the generic one.
COMPONENT_HINTS: dict[tuple[str, str], str] = {
    ("norm", "shape"): "Shape mismatch in the norm: keep the reduced dimension, x.pow(2).mean(dim=-1, keepdim=True), "
                       "so it broadcasts against x, and return x's shape (..., dim).",
    ("norm", "dtype"): "Mixed dtypes in the norm: return the input's dtype (compute in float32 if you like, then "
                       ".to(x.dtype)).",
    ("rotary", "shape"): "Shape mismatch with the rotary table: precompute returns cos and sin shaped (1, seq_len, 1, "
                         "head_dim // 2); apply splits the last dimension of x (B, T, H, D) into halves x[..., :D//2], "
                         "x[..., D//2:] and returns torch.cat([y1, y2], dim=-1), x's shape.",
    ("mlp", "shape"): "Shape mismatch in the MLP: c_fc = nn.Linear(n_embd, 4 * n_embd), c_proj = nn.Linear(4 * n_embd, "
                      "n_embd); forward maps (B, T, C) to (B, T, C).",
    ("block", "shape"): "Shape mismatch in the block: attn and mlp each return (B, T, C), which you add to x; call "
                        "self.attn(self.attn_norm(x), cos_sin, kv_cache) and self.mlp(self.mlp_norm(x)).",
    ("init", "shape"): "Shape mismatch in init: a Linear's weight is (fan_out, fan_in); init modifies weights in "
                       "place (nn.init.normal_, .zero_()) and never replaces them with tensors of another shape.",
    ("generate", "shape"): "Shape mismatch in generate: the model takes token ids of shape (1, T), "
                           "torch.tensor([tokens]); the next-token logits are logits[:, -1, :], shape (1, vocab).",
    ("optimizer", "shape"): "torch.optim.Muon takes 2-D parameters only: give it the matrices of model.transformer.h "
                            "(p.ndim == 2) and everything else to AdamW.",
    ("optimizer", "error"): "Compare the parameter lists and the optimizer arguments with the contract: block "
                            "matrices to torch.optim.Muon, everything else to torch.optim.AdamW.",
    ("generate", "error"): "Compare the sampling with the contract: argmax at temperature 0, else "
                           "torch.multinomial(softmax(logits / T), 1, generator=rng).",
}


def hint_for(component: str | None, kind: str) -> str:
    return COMPONENT_HINTS.get((component or "", kind), HINTS[kind])


def classify(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, NotImplementedError) and TODO_PREFIX in text:
        return "todo"
    if isinstance(exc, SystemExit):
        return "exit"
    if "NoneType" in text:
        return "none-returned"
    if isinstance(exc, AttributeError):
        return "attribute"
    if isinstance(exc, TypeError) and re.search(r"argument|positional|keyword", text):
        return "signature"
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return kind
    return "error"


def reference_source(component: str, method: str | None) -> tuple[str | None, str]:
    """(the reference's file as the user can open it, the `nanogpt show` command that prints the method to read):
    that method when the reference has one of that name, else the whole component."""
    path = implementation_file(get_implementation(REFERENCE_SET, component))
    target = f"reference:{component}"
    if method is not None:
        try:
            find_part(component_source(REFERENCE_SET, component), method)
            target = f"{target}.{method}"
        except NanoGPTError:  # a helper of the learner's own that the reference does not have
            pass
    return (display_path(path) if path else None), f"nanogpt show {target}"


def _describe_locals(frame: types.FrameType) -> list[str]:
    rows = []
    for name, value in frame.f_locals.items():
        if isinstance(value, torch.Tensor):
            rows.append(f"{name}: {tuple(value.shape)} {str(value.dtype).replace('torch.', '')} {value.device}")
        elif isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
            rows.append(f"{name}: (" + ", ".join(str(tuple(v.shape)) for v in value) + ")")
        if len(rows) >= MAX_LOCALS:
            break
    return rows


def _qualname(frame: types.FrameType) -> str:
    return getattr(frame.f_code, "co_qualname", frame.f_code.co_name)


def diagnose(exc: BaseException, use: dict[str, str] | None = None) -> Diagnosis | None:
    """A Diagnosis when `exc` came from component code (or is a skeleton's TODO); None for anything else.

    `use` ({component: impl_set}, as `model.use`) disambiguates code shared by two sets and names the suspects when
    an error surfaces in reference code while other components are swapped in.
    """
    kind = classify(exc)
    message = str(exc)
    found = locate(exc, use)
    component = impl_set = method = qualname = file = None
    line = None
    actual: list[str] = []
    if found is not None:
        impl_set, component, frame, line = found
        method = frame.f_code.co_name
        qualname = _qualname(frame)
        file = display_path(frame.f_code.co_filename)
        actual = _describe_locals(frame)
    if kind == "todo":
        m = TODO_RE.search(message)
        if m and m.group(1) in BY_NAME:
            component, method = m.group(1), m.group(2)  # the skeleton says which method it is
    blamed = getattr(exc, "component", None)  # a ComponentError the core raised names the component it blames
    if component is None and blamed in BY_NAME:
        component, impl_set = blamed, (use or {}).get(blamed, REFERENCE_SET)
    suspects: list[str] = []
    if use and (impl_set in (None, REFERENCE_SET)) and kind != "todo":
        suspects = [c for c in COMPONENT_NAMES if use.get(c, REFERENCE_SET) != REFERENCE_SET]
    if component is None and not (kind == "todo" or suspects):
        return None
    contract = BY_NAME.get(component) if component else None
    reference_file, show = reference_source(component, method) if component else (None, None)
    # an error surfacing in reference code is the swapped-in component's: its hint, when there is one suspect
    hinted = suspects[0] if len(suspects) == 1 else (None if suspects else component)
    hint_show = show or (reference_source(hinted, None)[1] if hinted else "nanogpt show reference:<component>")
    hint = hint_for(hinted, kind).format(show=hint_show, file=file or "your file",
                                         where=f"{component}.{method}" if component else "it")
    if suspects:
        hint = (f"The error surfaced in {'reference' if component else 'core'} code, so the likely cause is what "
                f"your {', '.join(suspects)} returned or stored: compare its output with the contract. ") + hint
    return Diagnosis(
        kind=kind, component=component, impl_set=impl_set if component else None, method=method,
        qualname=qualname, file=file, line=line, error=f"{type(exc).__name__}: {message}", message=message,
        reference_file=reference_file, signature=contract.signature if contract else None,
        shapes=contract.shapes if contract else None, actual=actual, hint=hint, suspects=suspects,
        reference_command=show,
    )
