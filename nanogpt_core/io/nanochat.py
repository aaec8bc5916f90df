"""nanochat's checkpoint format, read and written: a pretrained nanochat model becomes a nanogpt checkpoint and back.

A nanochat checkpoint folder (e.g. ~/.cache/nanochat/base_checkpoints/d20/) holds, per saved step:

    model_000650.pt     torch.save of the model's state_dict (keys may carry torch.compile's `_orig_mod.` prefix;
                        the token embedding is usually bf16, everything else fp32)
    meta_000650.json    {"step", "model_config": {sequence_len, vocab_size, n_layer, n_head, n_kv_head, n_embd}, ...}
    optim_000650*.pt    optimizer state (ignored here)

and the tokenizer lives apart (~/.cache/nanochat/tokenizer/): `tokenizer.pkl`, a pickled tiktoken Encoding, and
`token_bytes.pt`, the UTF-8 length of every token for bits per byte.

Why so strict: our reference reproduces one nanochat model, the GPT of nanochat's first release (October 2025), whose
state dict is exactly `nanochat_shapes(config)`. Later nanochat versions added tensors (`resid_lambdas`, `x0_lambdas`,
`value_embeds.*`, ...) and pad the vocabulary; loading those by dropping or truncating tensors would give a model that
computes something else, silently. So any other key set or shape is refused, naming the keys.

Why it is safe: tensors are read with `torch.load(weights_only=True)` (tensors and plain containers only, no code),
and the tokenizer pickle with `nanogpt_core.io.safe_unpickle`, which admits nothing but tiktoken's Encoding state.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken
import torch

from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import CheckpointError, NanoGPTError
from nanogpt_core.files import atomic_write
from nanogpt_core.io.checkpoint import CHECKPOINTS_DIR, load_checkpoint, load_tokenizer, save_checkpoint
from nanogpt_core.io.safe_unpickle import read_tiktoken_pickle
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig

log = logging.getLogger("nanogpt")

SUPPORTED_NANOCHAT = (
    "nanochat's GPT of October 2025 (the first release: token embedding, per layer attn.c_q/c_k/c_v/c_proj and "
    "mlp.c_fc/c_proj, untied lm_head, vocabulary not padded)"
)
COMPILE_PREFIX = "_orig_mod."
CONFIG_FIELDS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")
TOKENIZER_PICKLE = "tokenizer.pkl"
TOKEN_BYTES_FILE = "token_bytes.pt"
NANOCHAT_TOKENIZER_DIR = "tokenizer"  # nanochat keeps tokenizer.pkl in $NANOCHAT_BASE_DIR/tokenizer/
ENCODING_NAME = "rustbpe"  # the name nanochat gives its tiktoken Encoding
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MODEL_FILE = re.compile(r"model_(\d+)\.pt$")


def model_file(step: int) -> str:
    return f"model_{step:06d}.pt"


def meta_file(step: int) -> str:
    return f"meta_{step:06d}.json"


def nanochat_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the supported nanochat GPT's state dict and its shape (nn.Linear weights are (out, in))."""
    C, V, D = config.n_embd, config.vocab_size, config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (V, C)}
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        shapes[p + "attn.c_q.weight"] = (config.n_head * D, C)
        shapes[p + "attn.c_k.weight"] = (config.n_kv_head * D, C)
        shapes[p + "attn.c_v.weight"] = (config.n_kv_head * D, C)
        shapes[p + "attn.c_proj.weight"] = (C, C)
        shapes[p + "mlp.c_fc.weight"] = (4 * C, C)
        shapes[p + "mlp.c_proj.weight"] = (C, 4 * C)
    shapes["lm_head.weight"] = (V, C)
    return shapes


@dataclass
class NanochatCheckpoint:
    """One nanochat step, read and checked: fp32 weights under nanochat's (= our) key names, config, tokenizer."""

    source: Path
    step: int
    config: GPTConfig
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    tokenizer_dir: Path
    meta: dict[str, Any]
    upcast: list[str] = field(default_factory=list)  # "name: bfloat16" for each tensor widened to fp32


# --- reading ---------------------------------------------------------------------------------------------------


def read_nanochat_checkpoint(
    src: str | Path, step: int | None = None, tokenizer_dir: str | Path | None = None
) -> NanochatCheckpoint:
    """Read one step of a nanochat checkpoint folder (the newest unless `step`); CheckpointError on anything else.

    `src` may also be a `model_NNNNNN.pt` file, which picks its folder and step.
    """
    folder = Path(src)
    if folder.is_file():
        match = _MODEL_FILE.match(folder.name)
        if not match:
            raise CheckpointError(f"{folder} is not a nanochat model file (model_NNNNNN.pt); pass its folder.")
        if step is not None and step != int(match.group(1)):
            raise CheckpointError(f"{folder} is step {int(match.group(1))}, but --step {step} was asked for.")
        folder, step = folder.parent, int(match.group(1))
    if not folder.is_dir():
        raise CheckpointError(f"no nanochat checkpoint at {folder}: the folder does not exist.")
    step = _pick_step(folder, step)
    meta = _read_meta(folder / meta_file(step))
    config, unknown_fields = _config_from_meta(meta, folder / meta_file(step))
    tok_dir = find_tokenizer_dir(folder, tokenizer_dir)
    tokenizer = read_nanochat_tokenizer(tok_dir)
    weights, upcast = _read_state_dict(folder / model_file(step))
    # A newer nanochat differs in its config *and* its tensors: one message names both.
    also = [f"model_config fields unknown {unknown_fields} (in {meta_file(step)})"] if unknown_fields else []
    check_nanochat_state(weights, config, folder / model_file(step), also=also)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"the tokenizer in {tok_dir} has {tokenizer.vocab_size} tokens but the model was "
                              f"trained with vocab_size {config.vocab_size}; pass the model's own tokenizer with "
                              f"--tokenizer DIR.")
    return NanochatCheckpoint(folder, step, config, weights, tokenizer, tok_dir, meta, upcast)


def _pick_step(folder: Path, step: int | None) -> int:
    steps = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _MODEL_FILE.match(p.name)))
    if not steps:
        hint = " (it holds a nanogpt checkpoint: no import needed)" if (folder / "model.safetensors").is_file() \
            or (folder / CHECKPOINTS_DIR).is_dir() else ""
        raise CheckpointError(f"no nanochat checkpoint in {folder}: no model_NNNNNN.pt file{hint}.")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointError(f"{folder} has no step {step}; it has steps {', '.join(map(str, steps))}.")
    return step


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; nanochat writes it next to each model file with the model's "
                              f"config.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict):
        raise CheckpointError(f"{path} has no model_config; it is not a nanochat checkpoint's metadata.")
    return meta


def _config_from_meta(meta: dict[str, Any], path: Path) -> tuple[GPTConfig, list[str]]:
    """The config from the six fields we know, and the names of any others (a newer nanochat's additions)."""
    cfg = meta["model_config"]
    unknown = sorted(set(cfg) - set(CONFIG_FIELDS))
    missing = [f for f in CONFIG_FIELDS if f not in cfg]
    if missing:
        raise CheckpointError(f"{path}: model_config lacks {missing}; this importer supports {SUPPORTED_NANOCHAT}, "
                              f"whose model_config has exactly {list(CONFIG_FIELDS)}.")
    try:
        return GPTConfig.from_dict({k: cfg[k] for k in CONFIG_FIELDS}), unknown
    except NanoGPTError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def find_tokenizer_dir(folder: Path, explicit: str | Path | None = None) -> Path:
    """`explicit`, else the first of FOLDER/tokenizer, FOLDER itself (Hugging Face uploads keep it there) and
    FOLDER/../../tokenizer (nanochat's own layout: base_dir/base_checkpoints/d20 next to base_dir/tokenizer)."""
    if explicit is not None:
        tok = Path(explicit)
        if not (tok / TOKENIZER_PICKLE).is_file():
            raise CheckpointError(f"no {TOKENIZER_PICKLE} in {tok} (given with --tokenizer).")
        return tok
    candidates = [folder / NANOCHAT_TOKENIZER_DIR, folder, folder.resolve().parent.parent / NANOCHAT_TOKENIZER_DIR]
    for tok in candidates:
        if (tok / TOKENIZER_PICKLE).is_file():
            return tok
    raise CheckpointError(f"no {TOKENIZER_PICKLE} found in {', '.join(str(c) for c in candidates)}; nanochat keeps "
                          f"it in ~/.cache/nanochat/tokenizer: pass --tokenizer DIR.")


def read_nanochat_tokenizer(directory: str | Path) -> Tokenizer:
    """nanochat's tokenizer.pkl as our Tokenizer, never unpickling code; token_bytes.pt, if there, must fit it."""
    directory = Path(directory)
    state = read_tiktoken_pickle(directory / TOKENIZER_PICKLE)
    try:
        tokenizer = Tokenizer(state["mergeable_ranks"], state["pat_str"], state["special_tokens"])
    except NanoGPTError as exc:
        raise CheckpointError(f"{directory / TOKENIZER_PICKLE}: {exc}") from exc
    except ValueError as exc:  # tiktoken refusing the ranks or the pattern
        raise CheckpointError(f"{directory / TOKENIZER_PICKLE} holds an Encoding tiktoken cannot build ({exc}).") \
            from exc
    token_bytes_path = directory / TOKEN_BYTES_FILE
    if token_bytes_path.is_file():
        token_bytes = _torch_load(token_bytes_path)
        if not torch.is_tensor(token_bytes) or token_bytes.shape != (tokenizer.vocab_size,):
            shape = tuple(token_bytes.shape) if torch.is_tensor(token_bytes) else type(token_bytes).__name__
            raise CheckpointError(f"{token_bytes_path} is {shape}, not one length per token "
                                  f"({tokenizer.vocab_size}); it belongs to another tokenizer.")
    return tokenizer


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True (tensors and plain containers; nothing is called), as one-line errors."""
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it refers to {found.group(1)}" if found else str(exc).strip().splitlines()[-1]
        raise CheckpointError(f"{path} holds more than tensors ({what}); refusing to load it "
                              f"(a pickle can run code).") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable torch.save file ({first}).") from exc


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing.")
    data = _torch_load(path)
    if not isinstance(data, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
        raise CheckpointError(f"{path} is not a state dict (a dict of named tensors).")
    weights: dict[str, torch.Tensor] = {}
    upcast = []
    for name, tensor in data.items():
        key = name.removeprefix(COMPILE_PREFIX)
        if key in weights:
            raise CheckpointError(f"{path} holds {key} twice (with and without the {COMPILE_PREFIX} prefix).")
        if tensor.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{path}: {key} is {tensor.dtype}; a nanochat GPT's weights are floating point.")
        if tensor.dtype != torch.float32:
            upcast.append(f"{key}: {str(tensor.dtype).removeprefix('torch.')}")
        weights[key] = tensor.to(torch.float32).contiguous()  # bf16 -> fp32 is exact
    return weights, upcast


def check_nanochat_state(weights: dict[str, Any], config: GPTConfig, path: Path | str,
                         also: list[str] | None = None) -> None:
    """Refuse, naming the keys, a state dict that is not exactly the supported nanochat GPT's for `config`.

    `also` are other differences already found (e.g. unknown config fields), reported in the same message.
    """
    expected = nanochat_shapes(config)
    unknown = sorted(set(weights) - set(expected))
    missing = sorted(set(expected) - set(weights), key=list(expected).index)
    problems = [*(also or []), f"unknown keys {summarize_keys(unknown)}" if unknown else "",
                f"missing keys {summarize_keys(missing)}" if missing else ""]
    if unknown or missing or also:
        raise CheckpointError(f"{path} is not from the nanochat version this importer supports: "
                              f"{'; '.join(p for p in problems if p)}. Supported: {SUPPORTED_NANOCHAT}.")
    for name in ("transformer.wte.weight", "lm_head.weight"):
        rows = tuple(weights[name].shape)[0]
        if rows != config.vocab_size:
            raise CheckpointError(f"{path}: {name} has {rows} rows for a vocabulary of {config.vocab_size} tokens "
                                  f"(a padded vocabulary, from a newer nanochat). Supported: {SUPPORTED_NANOCHAT}.")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(f"{path}: {name} is {tuple(weights[name].shape)}, but model_config implies "
                                  f"{shape}; the weights and meta file do not belong together.")


def summarize_keys(keys: list[str], limit: int = 12) -> str:
    """Keys that differ only in a layer number are folded into one pattern, so a long list stays one line."""
    patterns: dict[str, list[str]] = {}
    for key in keys:
        patterns.setdefault(re.sub(r"\.\d+(?=\.|$)", ".*", key), []).append(key)
    items = [group[0] if len(group) == 1 else f"{pattern} (x{len(group)})" for pattern, group in patterns.items()]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + more + "]"


# --- import ----------------------------------------------------------------------------------------------------


def import_nanochat(
    src: str | Path, out_dir: str | Path, step: int | None = None, tokenizer_dir: str | Path | None = None
) -> Path:
    """Convert a nanochat checkpoint into a nanogpt run folder OUT_DIR with one weights-only checkpoint.

    Returns the checkpoint folder (OUT_DIR/checkpoints/step_N). `nanogpt sample OUT_DIR` and `load_model(OUT_DIR)`
    then work as on a model trained here; there is no optimizer state, so it cannot resume training.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not empty; choose a new folder for the imported model.")
    ckpt = read_nanochat_checkpoint(src, step=step, tokenizer_dir=tokenizer_dir)
    # Built on the meta device, then the read tensors are assigned: no second copy of a large model in memory.
    model = build_model(ckpt.config, device="meta")
    model.load_state_dict(ckpt.weights, strict=True, assign=True)
    state = {"imported_from": {
        "format": "nanochat", "source": str(ckpt.source.resolve()), "step": ckpt.step,
        "tokenizer": str(ckpt.tokenizer_dir.resolve()), "upcast_to_float32": ckpt.upcast, "meta": ckpt.meta,
    }}
    return save_checkpoint(out, ckpt.step, model, None, ckpt.tokenizer, state=state)


# --- export ----------------------------------------------------------------------------------------------------


def export_nanochat(ckpt_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Write a nanogpt checkpoint as nanochat's files in OUT_DIR: model_N.pt, meta_N.json, tokenizer/{tokenizer.pkl,
    token_bytes.pt}. nanochat's `GPT.load_state_dict(strict=True)` takes the state dict as it is.

    Returns the paths written. Existing files of the same names are refused unless `overwrite`.
    """
    source = Path(ckpt_path)
    if source.is_dir() and any(_MODEL_FILE.match(p.name) for p in source.iterdir()):
        raise CheckpointError(f"{source} is a nanochat checkpoint already; export takes a nanogpt checkpoint "
                              f"(import this one with `nanogpt import nanochat`).")
    ckpt = load_checkpoint(source, device="cpu", load_optimizer=False)
    tokenizer = load_tokenizer(ckpt)
    expected = nanochat_shapes(ckpt.config)
    extra = sorted(set(ckpt.model_state) - set(expected))
    if extra:
        raise CheckpointError(f"{ckpt.path} cannot be exported to nanochat: nanochat's GPT has no place for "
                              f"{summarize_keys(extra)} (added by the implementations {ckpt.use}).")
    check_nanochat_state(ckpt.model_state, ckpt.config, ckpt.path)
    out = Path(out_dir)
    targets = [out / model_file(ckpt.step), out / meta_file(ckpt.step), out / NANOCHAT_TOKENIZER_DIR / TOKENIZER_PICKLE,
               out / NANOCHAT_TOKENIZER_DIR / TOKEN_BYTES_FILE]
    present = [str(p) for p in targets if p.exists()]
    if present and not overwrite:
        raise CheckpointError(f"{present[0]} already exists; choose another folder or pass --overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    # Own storage per tensor, in nanochat's key order: torch.save writes each storage whole.
    state_dict = {name: ckpt.model_state[name].detach().clone().contiguous() for name in expected}
    atomic_write(targets[0], lambda tmp: torch.save(state_dict, tmp))
    meta = {"step": ckpt.step, "model_config": ckpt.config.to_dict(),
            "nanogpt": {"use": ckpt.use, "tokenizer_fingerprint": ckpt.tokenizer_fingerprint,
                        "source": str(ckpt.path.resolve())}}
    atomic_write(targets[1], lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8"))
    write_nanochat_tokenizer(tokenizer, out / NANOCHAT_TOKENIZER_DIR)
    return targets


def write_nanochat_tokenizer(tokenizer: Tokenizer, directory: str | Path) -> Path:
    """tokenizer.pkl (a pickled tiktoken Encoding, as nanochat's RustBPETokenizer saves it) and token_bytes.pt."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    enc = tiktoken.Encoding(name=ENCODING_NAME, pat_str=tokenizer.pattern, mergeable_ranks=tokenizer.mergeable_ranks,
                            special_tokens=tokenizer.special_tokens)
    data = pickle.dumps(enc, protocol=4)  # protocol 4, as nanochat's pickle.dump writes it
    atomic_write(directory / TOKENIZER_PICKLE, lambda tmp: tmp.write_bytes(data))
    lengths = nanochat_token_bytes(tokenizer)
    atomic_write(directory / TOKEN_BYTES_FILE, lambda tmp: torch.save(lengths, tmp))
    return directory


def nanochat_token_bytes(tokenizer: Tokenizer) -> torch.Tensor:
    """int32 (vocab,): token bytes as nanochat's tok_train computes them, so its bits per byte stays its own.

    nanochat measures `len(decode([id]).encode())`, which counts a token ending mid-character as the 3 bytes of
    U+FFFD; our `Tokenizer.token_bytes` counts the token's real bytes. Specials are 0 in both.
    """
    specials = set(tokenizer.special_tokens.values())
    return torch.tensor([0 if i in specials else len(tokenizer.decode([i]).encode("utf-8"))
                         for i in range(tokenizer.vocab_size)], dtype=torch.int32)
