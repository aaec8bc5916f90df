"""Checkpoints: safetensors weights and optimizer state, JSON training state, the tokenizer; written atomically.

A run directory keeps one folder per save and a `latest` pointer:

    RUN/checkpoints/step_000100/model.safetensors   weights + metadata (config, use, step, tokenizer fingerprint)
                               /optim.safetensors   every optimizer's tensors; the non-tensor parts as JSON metadata
                               /state.json          step, loader positions, RNG states, settings, file checksums
                               /tokenizer/          the tokenizer's own files
    RUN/checkpoints/latest                          a text file naming the newest complete folder

Why this shape: safetensors cannot run code when loaded (a pickle can), so a checkpoint downloaded from anywhere is
safe to open; a folder is written under a temporary name, fsynced and renamed into place, and only then does
`latest` move (write + os.replace), so a crash mid-save leaves the previous checkpoint and the pointer intact.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nanogpt_core.data.tokenizer import TOKENIZER_DIR, Tokenizer
from nanogpt_core.device import resolve_device
from nanogpt_core.errors import CheckpointError, NanoGPTError
from nanogpt_core.files import (
    TMP_PREFIX,
    atomic_write,
    fsync_dir,
    fsync_file,
    os_error_of,
    sha256_file,
    write_failure,
    write_json_atomic,
    write_text_atomic,
)
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.memory import check_memory, sampling_need
from nanogpt_core.model.use_spec import format_use, resolve_use

FORMAT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
STATE_FILE = "state.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")

log = logging.getLogger("nanogpt")


@dataclass
class Checkpoint:
    """What one checkpoint folder holds, read and checked; tensors already on the requested device."""

    path: Path
    step: int
    config: GPTConfig
    use: dict[str, str]
    tokenizer_fingerprint: str
    model_state: dict[str, torch.Tensor]
    optimizer_states: list[dict[str, Any]] | None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR


# --- where checkpoints are -------------------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder `RUN/checkpoints/latest` names, or None when the run has no checkpoint yet."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise CheckpointError(f"{pointer} is corrupt (it should name a folder like step_000100, found {name!r}).")
    target = root / name
    if not target.is_dir():
        raise CheckpointError(f"{pointer} names {name}, which does not exist; pass a checkpoint folder explicitly.")
    return target


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (-> its latest) or a run's `checkpoints/` folder (-> latest)."""
    p = Path(path)
    if p.is_file():
        if p.suffix in PICKLE_SUFFIXES or _looks_like_pickle(p):
            raise CheckpointError(
                f"{p} is a PyTorch pickle; nanogpt reads only safetensors checkpoints and never unpickles "
                f"(a pickle can run code). Pass a nanogpt checkpoint folder."
            )
        if p.name in (MODEL_FILE, OPTIM_FILE, STATE_FILE):
            p = p.parent
        else:
            raise CheckpointError(f"{p} is a file; pass a checkpoint folder (one with {MODEL_FILE}) or a run folder.")
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: the path does not exist.")
    if (p / MODEL_FILE).is_file():
        return p
    run_dir = p if (p / CHECKPOINTS_DIR).is_dir() else p.parent if p.name == CHECKPOINTS_DIR else None
    if run_dir is not None:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise CheckpointError(f"{p} has no checkpoint yet ({CHECKPOINTS_DIR}/{LATEST_FILE} is missing).")
        return found
    pickles = sorted(q.name for q in p.iterdir() if q.suffix in PICKLE_SUFFIXES) if p.is_dir() else []
    if pickles:
        raise CheckpointError(
            f"{p} holds {pickles[0]}, a PyTorch pickle; nanogpt reads only safetensors checkpoints and never unpickles."
        )
    raise CheckpointError(f"no checkpoint in {p}: expected {MODEL_FILE} or a run folder with {CHECKPOINTS_DIR}/latest.")


def run_dir_of(checkpoint_dir: Path) -> Path:
    """RUN for RUN/checkpoints/step_N; the checkpoint folder itself when it stands alone."""
    checkpoint_dir = Path(checkpoint_dir)
    if checkpoint_dir.parent.name == CHECKPOINTS_DIR:
        return checkpoint_dir.parent.parent
    return checkpoint_dir


def _looks_like_pickle(path: Path) -> bool:
    """torch.save's zip, or a bare pickle (0x80, then the protocol). A safetensors file starts with its header's
    length (8 bytes, little-endian) and then the JSON header's '{': a length whose low byte is 0x80 is no pickle."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return False
    return head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04",
                                                                                     b"\x05"))


# --- saving ----------------------------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizers: Sequence[torch.optim.Optimizer] | None,
    tokenizer: Any,
    state: dict[str, Any] | None = None,
    *,
    resume_command: str | None = None,
) -> Path:
    """Write RUN/checkpoints/step_<step>/ atomically and point `latest` at it. Returns the folder.

    `model` is the plain (uncompiled) GPT; `state` is any JSON-able training state (loader positions, settings...).
    Any OS error on the way (a full disk, a file-size or quota limit, a read-only or failing disk), whichever library
    meets it, leaves the checkpoints as they were and is one CheckpointError naming the last good checkpoint and
    `resume_command` (default: `nanogpt train --resume RUN`).
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / checkpoint_name(step)
    tmp = placed = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(root)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=root))
        _write_checkpoint_files(tmp, step, model, optimizers, tokenizer, dict(state or {}))
        fsync_dir(tmp)
        if final.exists():  # saving a step twice (e.g. resumed and saved again): swap the old one out
            old = root / f"{TMP_PREFIX}old-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
            placed = final  # complete, but `latest` does not name it yet
        fsync_dir(root)
        write_text_atomic(root / LATEST_FILE, final.name + "\n")
    except BaseException as exc:
        for partial in (tmp, placed):
            if partial is not None:
                shutil.rmtree(partial, ignore_errors=True)
        error = os_error_of(exc)
        if error is None:
            raise
        raise CheckpointError(save_failure_message(error, f"saving {final.name} to {root}", run_dir,
                                                   resume_command)) from exc
    return final


def save_failure_message(error: OSError, doing: str, run_dir: str | Path, resume_command: str | None = None) -> str:
    """`no space left on device while saving step_N to RUN/checkpoints; the last good checkpoint, ..., is intact;
    free some space and continue with: nanogpt train --resume RUN`: an OS error met while writing a run's files."""
    problem, fix = write_failure(error)
    try:
        last = latest_checkpoint(run_dir)
    except CheckpointError:
        last = None
    if last is None:
        return f"{problem} while {doing}; no checkpoint of this run was written yet; {fix} and start the run again."
    command = resume_command or shlex.join(["nanogpt", "train", "--resume", str(run_dir)])
    return f"{problem} while {doing}; the last good checkpoint, {last}, is intact; {fix} and continue with: {command}"


def _write_checkpoint_files(
    folder: Path, step: int, model: torch.nn.Module, optimizers, tokenizer, state: dict[str, Any]
) -> None:
    fingerprint = str(tokenizer.fingerprint)
    config = model.config
    model_meta = {
        "format": "pt",
        "nanogpt_format_version": str(FORMAT_VERSION),
        "kind": "nanogpt.model",
        "config": json.dumps(config.to_dict()),
        "use": json.dumps(dict(model.use), sort_keys=True),
        "use_spec": format_use(model.use),
        "step": str(step),
        "tokenizer_fingerprint": fingerprint,
    }
    weights = _one_storage_each({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    _save_safetensors(weights, folder / MODEL_FILE, model_meta)
    files = {MODEL_FILE: sha256_file(folder / MODEL_FILE)}
    if optimizers is not None:
        tensors, opt_meta = optimizer_state_to_flat(optimizers)
        meta = {"format": "pt", "nanogpt_format_version": str(FORMAT_VERSION), "kind": "nanogpt.optimizers",
                "optimizers": json.dumps(opt_meta)}
        _save_safetensors(tensors, folder / OPTIM_FILE, meta)
        files[OPTIM_FILE] = sha256_file(folder / OPTIM_FILE)
    tokenizer.save(str(folder / TOKENIZER_DIR))
    for p in (folder / TOKENIZER_DIR).rglob("*"):
        if p.is_file():
            fsync_file(p)
    fsync_dir(folder / TOKENIZER_DIR)
    state = {**state, "format_version": FORMAT_VERSION, "step": step, "tokenizer_fingerprint": fingerprint,
             "files": files}
    write_json_atomic(folder / STATE_FILE, state, indent=1)


def _one_storage_each(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy for every name after the first of a shared tensor (tied embeddings: `transformer.wte.weight` and
    `lm_head.weight` are one parameter). safetensors refuses shared memory; loading writes both names back into the
    one parameter, so the tie survives the round trip."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        storage = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if storage in seen else tensor
        seen.add(storage)
    return out


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' own writer, made durable: after this returns the bytes are on disk."""
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _remove_stale_temporaries(root: Path) -> None:
    """Folders left by a save that was killed midway; only rank 0 writes here, so none is in use."""
    for p in root.glob(f"{TMP_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


# --- optimizer state <-> flat tensors + JSON -------------------------------------------------------------------


def optimizer_state_to_flat(optimizers: Sequence[torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], list]:
    """Split each optimizer's state_dict into tensors (keyed `opt<i>.<param>.<name>`) and JSON for the rest.

    Works for any torch optimizer whose state is tensors plus plain Python values (AdamW, Muon, SGD, ...).
    """
    tensors: dict[str, torch.Tensor] = {}
    meta = []
    for i, opt in enumerate(optimizers):
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        tensor_keys: dict[str, list[str]] = {}
        for pid, per_param in sd["state"].items():
            for key, value in per_param.items():
                if torch.is_tensor(value):
                    tensors[f"opt{i}.{pid}.{key}"] = value.detach().contiguous()
                    tensor_keys.setdefault(str(pid), []).append(key)
                else:
                    scalars.setdefault(str(pid), {})[key] = _encode(value)
        meta.append({
            "type": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "param_groups": _encode(sd["param_groups"]),
            "scalars": scalars,
            "tensor_keys": tensor_keys,
        })
    return tensors, meta


def optimizer_state_from_flat(tensors: dict[str, torch.Tensor], meta: list) -> list[dict[str, Any]]:
    """The inverse of `optimizer_state_to_flat`: one `state_dict()` per optimizer, ready for `load_state_dict`."""
    states = []
    for i, m in enumerate(meta):
        state: dict[int, dict[str, Any]] = {}
        for pid, keys in m["tensor_keys"].items():
            for key in keys:
                name = f"opt{i}.{pid}.{key}"
                if name not in tensors:
                    raise CheckpointError(f"optimizer state is missing tensor {name}; the checkpoint is corrupt.")
                state.setdefault(int(pid), {})[key] = tensors[name]
        for pid, values in m["scalars"].items():
            for key, value in values.items():
                state.setdefault(int(pid), {})[key] = _decode(value)
        # keep the per-parameter key order torch wrote (tensors and scalars interleave, e.g. AdamW's step first)
        states.append({"type": m["type"], "state": state, "param_groups": _decode(m["param_groups"])})
    return states


def load_optimizer_states(optimizers: Sequence[torch.optim.Optimizer], states: list[dict[str, Any]]) -> None:
    """Load saved states into freshly built optimizers, refusing a mismatch in kind or layout with one line."""
    if len(states) != len(optimizers):
        raise CheckpointError(f"the checkpoint holds {len(states)} optimizers but this model builds {len(optimizers)}; "
                              f"was it trained with another optimizer implementation?")
    for opt, saved in zip(optimizers, states):
        kind = f"{type(opt).__module__}.{type(opt).__qualname__}"
        if not _same_optimizer(saved["type"], type(opt)):
            raise CheckpointError(f"optimizer mismatch: the checkpoint has {saved['type']}, this model builds {kind}.")
        sizes = [len(g["params"]) for g in opt.param_groups]
        saved_sizes = [len(g["params"]) for g in saved["param_groups"]]
        if sizes != saved_sizes:
            raise CheckpointError(f"{kind} parameter groups differ: checkpoint {saved_sizes} parameters per group, "
                                  f"this model {sizes}; the checkpoint is of another shape.")
        try:
            opt.load_state_dict({"state": saved["state"], "param_groups": saved["param_groups"]})
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"cannot load the {kind} state: {exc}") from exc


def _same_optimizer(saved_type: str, built: type) -> bool:
    """The saved optimizer is the built one, or one of its bases (torch's Muon for the reference's), or a name the
    built class is known by. Names are looked up among modules already imported, never imported from a file."""
    if saved_type == f"{built.__module__}.{built.__qualname__}":
        return True
    module, _, name = saved_type.rpartition(".")
    saved = getattr(sys.modules.get(module), name, None)
    return isinstance(saved, type) and issubclass(built, saved)


def _encode(value: Any) -> Any:
    """JSON for optimizer metadata that keeps tuples as tuples (AdamW's betas) so a round trip is exact."""
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if torch.is_tensor(value):
        raise CheckpointError("a tensor inside an optimizer's param_groups cannot be saved; keep lr etc. as floats.")
    raise CheckpointError(f"cannot save optimizer setting of type {type(value).__name__}: {value!r}.")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


# --- RNG state -------------------------------------------------------------------------------------------------


def rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """Python's and torch's generators as JSON, so a resumed run draws the same numbers."""
    state: dict[str, Any] = {
        "python": _encode(random.getstate()),
        "torch_cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        state["torch_cuda"] = [base64.b64encode(s.numpy().tobytes()).decode("ascii")
                               for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved; a damaged state (bad base64, wrong length, wrong types) is a CheckpointError."""
    try:
        random.setstate(_decode(state["python"]))
        torch.set_rng_state(_bytes_tensor(state["torch_cpu"]))
        cuda = state.get("torch_cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in cuda])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"the random-number state in {STATE_FILE} is damaged ({type(exc).__name__}: {exc}); "
                              f"resume from another checkpoint of the run.") from exc


def _bytes_tensor(b64: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(b64)), dtype=torch.uint8).clone()


# --- loading ---------------------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", load_optimizer: bool = True
) -> Checkpoint:
    """Read and check a checkpoint (folder or run folder). Every problem is a one-line CheckpointError."""
    folder = resolve_checkpoint(path)
    state = _read_state(folder)
    _verify_checksums(folder, state)
    weights, meta = _read_safetensors(folder / MODEL_FILE, device)
    _check_version(meta.get("nanogpt_format_version", "0"), folder / MODEL_FILE)
    if meta.get("kind") != "nanogpt.model":
        raise CheckpointError(f"{folder / MODEL_FILE} is a safetensors file but not a nanogpt model (no metadata).")
    try:
        config = GPTConfig.from_dict(json.loads(meta["config"]))
        use = json.loads(meta["use"])
        step = int(meta["step"])
        fingerprint = meta["tokenizer_fingerprint"]
    except (KeyError, ValueError, TypeError, NanoGPTError) as exc:
        raise CheckpointError(f"{folder / MODEL_FILE} has unreadable metadata ({exc}).") from exc
    _check_weights(folder / MODEL_FILE, config, weights)
    optimizer_states = None
    if load_optimizer:
        if not (folder / OPTIM_FILE).is_file():
            raise CheckpointError(f"{folder} has no {OPTIM_FILE}, so training cannot resume from it.")
        tensors, opt_meta = _read_safetensors(folder / OPTIM_FILE, device)
        _check_version(opt_meta.get("nanogpt_format_version", "0"), folder / OPTIM_FILE)
        _check_finite(folder / OPTIM_FILE, tensors)
        try:
            optimizer_states = optimizer_state_from_flat(tensors, json.loads(opt_meta["optimizers"]))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{folder / OPTIM_FILE} has unreadable metadata ({exc}).") from exc
    return Checkpoint(folder, step, config, use, fingerprint, weights, optimizer_states, state)


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    if not path.is_file():
        return {}  # a bare model folder (weights + tokenizer) can still be loaded for sampling
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt.") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a JSON {type(state).__name__} where nanogpt writes an object; the "
                              f"checkpoint is damaged: use another checkpoint of the run.")
    _check_version(state.get("format_version", 0), path)
    files = state.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise CheckpointError(f"{path} has a damaged 'files' entry (file name -> sha256 expected); use another "
                              f"checkpoint of the run.")
    return state


# What resuming reads from state.json (`nanogpt_core.train.loop._restore`), and the type each must have.
TRAINING_STATE = {"settings": dict, "train_loader": dict, "rng": dict, "loop": dict}
RNG_STATE_KEYS = ("python", "torch_cpu")


def check_training_state(ckpt: Checkpoint) -> None:
    """Refuse, in one line, a checkpoint whose state.json lacks (or garbles) what resuming it needs."""
    path = ckpt.path / STATE_FILE
    if not ckpt.state:
        raise CheckpointError(f"{ckpt.path} has no training state ({STATE_FILE}); it can be sampled "
                              f"(nanogpt sample {shlex.quote(str(ckpt.path))}) but not resumed.")
    for key, kind in TRAINING_STATE.items():
        if not isinstance(ckpt.state.get(key), kind):
            found = "missing" if key not in ckpt.state else f"a {type(ckpt.state[key]).__name__}"
            raise CheckpointError(f"{path} is damaged: its {key!r} entry is {found} ({kind.__name__} expected); "
                                  f"resume from another checkpoint of the run.")
    missing = [key for key in RNG_STATE_KEYS if key not in ckpt.state["rng"]]
    if missing:
        raise CheckpointError(f"{path} is damaged: its 'rng' entry lacks {missing[0]!r}; resume from another "
                              f"checkpoint of the run.")


_LAYER_KEY = re.compile(r"transformer\.h\.(\d+)\.")


def _check_weights(path: Path, config: GPTConfig, weights: dict[str, torch.Tensor]) -> None:
    """The weights the metadata's config implies, before a model of that config is allocated: a config edited to
    100000 layers must not make `sample` allocate until it dies. Then every weight must be finite."""
    for name in ("transformer.wte.weight", "lm_head.weight"):
        tensor = weights.get(name)
        if tensor is None:
            raise CheckpointError(f"{path} has no {name}; the checkpoint is damaged.")
        if tuple(tensor.shape) != (config.vocab_size, config.n_embd):
            raise CheckpointError(f"{path} is damaged: its metadata says vocab_size {config.vocab_size} and n_embd "
                                  f"{config.n_embd}, but {name} is {tuple(tensor.shape)}.")
    layers = {int(m.group(1)) for name in weights if (m := _LAYER_KEY.match(name))}
    if layers != set(range(config.n_layer)):
        raise CheckpointError(f"{path} is damaged: its metadata says n_layer {config.n_layer}, but its weights "
                              f"hold {len(layers)} layer(s).")
    _check_finite(path, weights)


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path} holds NaN or Inf in {name}; nothing can be sampled or trained from it: "
                                  f"use an earlier checkpoint of the run.")


def _check_version(value: Any, path: Path) -> None:
    """A format version as nanogpt writes it (an int in JSON, a digit string in safetensors metadata)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(f"{path} has format version {value!r}, not a whole number; the file is damaged.")
    version = value
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}, newer than this nanogpt reads "
                              f"({FORMAT_VERSION}); upgrade nanogpt.")
    if version < 1:
        raise CheckpointError(f"{path} has no nanogpt format version; it was not written by nanogpt.")


def _verify_checksums(folder: Path, state: dict[str, Any]) -> None:
    for name, expected in state.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the checkpoint is incomplete.")
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path} does not match its checksum in {STATE_FILE}; the file is corrupt.")


def _read_safetensors(path: Path, device: str | torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing.")
    if _looks_like_pickle(path):
        raise CheckpointError(f"{path} is a PyTorch pickle, not safetensors; nanogpt never unpickles.")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt.") \
            from exc
    return tensors, meta


def load_model_state(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy weights into `model`, naming the first missing, unexpected or differently shaped tensor on failure."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"the checkpoint does not fit this model ({what}); it is of another shape.")
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"the checkpoint is of another shape: {name} is {tuple(tensor.shape)} there, "
                                  f"{tuple(expected[name].shape)} in this model.")
    model.load_state_dict(weights, strict=True)


def load_model(path: str | Path, use: Any = None, device: str | torch.device | None = None):
    """Load a trained model for use: `(model, tokenizer, meta)`, the model in eval mode on `device` (None: auto).

    `use` swaps implementations at load time (the weights are shared by contract); a change from the recorded
    choice is logged, so it is never silent. `meta` holds step, config, use (recorded and loaded), the tokenizer
    fingerprint and the folder.
    """
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, device="cpu", load_optimizer=False)
    tokenizer = load_tokenizer(ckpt)
    recorded = resolve_use(ckpt.use)
    chosen = recorded if use is None else resolve_use(use)
    if chosen != recorded:
        log.warning("Loading %s with --use %s (trained with %s); weights are shared by contract.",
                    ckpt.path, format_use(chosen), format_use(recorded))
    check_memory(sampling_need(ckpt.config), dev, f"this model ({ckpt.path})", "sample on a device with more "
                 "memory (e.g. --device cpu when the GPU is too small)")
    model = build_model(ckpt.config, use=chosen, device=dev)
    load_model_state(model, ckpt.model_state)
    model.eval()
    meta = {"path": str(ckpt.path), "step": ckpt.step, "config": ckpt.config.to_dict(), "use": dict(chosen),
            "recorded_use": dict(recorded), "tokenizer_fingerprint": ckpt.tokenizer_fingerprint,
            "format_version": FORMAT_VERSION, "state": ckpt.state}
    return model, tokenizer, meta


def load_tokenizer(ckpt: Checkpoint):
    """The checkpoint's tokenizer, refused if it is not the one the weights were trained with."""
    if not ckpt.tokenizer_dir.is_dir():
        raise CheckpointError(f"{ckpt.path} has no {TOKENIZER_DIR}/ folder; the checkpoint is incomplete.")
    tokenizer = Tokenizer.load(str(ckpt.tokenizer_dir))  # a damaged file is one line naming it
    if tokenizer.fingerprint != ckpt.tokenizer_fingerprint:
        raise CheckpointError(f"{ckpt.tokenizer_dir} is not the tokenizer these weights were trained with "
                              f"(fingerprint {tokenizer.fingerprint} != {ckpt.tokenizer_fingerprint}).")
    return tokenizer
