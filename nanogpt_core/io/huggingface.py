"""Hugging Face transformers' NanoChat format, written and read: a nanogpt checkpoint becomes a folder that
`AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)` load with no custom code, and a
NanoChat folder (one exported here, or one downloaded from the Hub) becomes a nanogpt checkpoint.

transformers ships `NanoChatForCausalLM` (model_type `nanochat`) for exactly our reference architecture: weightless
RMSNorm after the embedding, in each block and before the head; rotary with nanochat's rotate-half sign; QK-norm after
rotary; relu² MLP of width 4C; a 15·tanh(z/15) softcap; an untied head. An exported folder holds:

    config.json             NanoChatConfig: sizes and head counts, softcap 15, rope theta 10000, float32's eps
    model.safetensors       the weights under transformers' names (model.layers.0.self_attn.q_proj.weight, ...)
    generation_config.json  <|bos|> as bos, eos (a new document starts) and pad
    tokenizer.json          our BPE converted by transformers' own TikTokenConverter (byte-level BPE with our split
    tokenizer_config.json   pattern and special tokens); it puts <|bos|> before every text, as nanogpt's prompts do

Why export checks what it wrote: transformers' NanoChat is an implementation written independently of ours, so before
the folder is moved into place it is loaded with transformers and the logits are compared on fixed tokens. Two
numbers decide (measured on CPU, random weights of 2 to 8 layers, in the docs and tests):

- our reference with transformers' float32 rotary table vs transformers: bit-identical (0.0) on CPU; float32 rounding
  against a float64 run is 2e-6 to 4e-6, so `FLOAT32_TOLERANCE` = 1e-4 leaves 25x for deeper models while the
  smallest real difference (the table's precision, next) is 30x larger;
- the reference as it runs (nanochat's bfloat16 rotary table) vs transformers: 2.7e-3 to 3.4e-3. That gap is the
  price of the bf16 table and is reported, not refused.

A checkpoint trained with other implementations (`--use`) is exported only if it is no farther from transformers than
the reference is (plus float32 rounding): a correct reimplementation passes, a GELU or SwiGLU MLP, a LayerNorm with
weights or a missing QK-norm is refused with the component and the number.

Safety, as for the nanochat import: config.json and tokenizer.json are read as JSON, the weights with safetensors;
nothing is unpickled and no code from the folder runs (a folder asking for custom code, `auto_map`, is refused).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nanogpt_core.data.tokenizer import BOS, Tokenizer
from nanogpt_core.errors import CheckpointError, NanoGPTError, require_extra
from nanogpt_core.files import TMP_PREFIX, fsync_dir, fsync_file
from nanogpt_core.io.checkpoint import load_checkpoint, load_tokenizer, save_checkpoint
from nanogpt_core.io.nanochat import FLOAT_DTYPES, nanochat_shapes, summarize_keys
from nanogpt_core.model.assembly import LOGIT_SOFTCAP, ROTARY_BASE, build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import REFERENCE_SET
from nanogpt_core.model.use_spec import resolve_use

log = logging.getLogger("nanogpt")

MODEL_TYPE = "nanochat"
ARCHITECTURE = "NanoChatForCausalLM"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
EXPORTED_FILES = (CONFIG_FILE, WEIGHTS_FILE, GENERATION_CONFIG_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE)
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")
# The only metadata in model.safetensors (older transformers require it). safetensors writes metadata keys in a
# random order, so a second key would make two exports of the same weights differ byte for byte.
WEIGHTS_METADATA = {"format": "pt"}
HF_EXTRA = ("hf", "the Hugging Face export and import")

# The reference's RMSNorm is F.rms_norm with eps=None, which uses the input dtype's machine epsilon: in float32 that
# is 2^-23 = 1.1920928955078125e-07 exactly (a float32 number, so transformers adds the very same value).
NORM_EPS = torch.finfo(torch.float32).eps
FLOAT32_TOLERANCE = 1e-4  # see the module docstring: measured float32 rounding is 2e-6 to 4e-6
PROBE_TOKENS = 64  # logits are compared at this many positions (or the context, if shorter)
PROBE_SEED = 1234
# What both tokenizers must encode to the same ids: prose, code, digits, contractions, whitespace runs, and characters
# of two to four UTF-8 bytes (special-token strings are left out: transformers matches them in text, nanogpt does not).
SAMPLE_TEXT = ("The capital of France is Paris. It's 2025; we'll see 12345 + 678 = 13023.\n\n"
               "def add(a, b):\n    return a + b  # 'll 've\n\tTabs,   runs  of spaces\r\n"
               "café naïve résumé — 日本語のテキスト ✓ 🎉 Ünïcödé!")
# Components the forward pass does not call: they cannot change what the exported model computes.
NOT_IN_FORWARD = ("init", "optimizer", "generate")
FORWARD_COMPONENTS = tuple(c for c in COMPONENT_NAMES if c not in NOT_IN_FORWARD)
# nanochat's module names -> transformers' NanoChat names, inside each layer.
LAYER_NAMES = {"attn.c_q": "self_attn.q_proj", "attn.c_k": "self_attn.k_proj", "attn.c_v": "self_attn.v_proj",
               "attn.c_proj": "self_attn.o_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_LAYER_KEY = re.compile(r"transformer\.h\.(\d+)\.(\w+\.\w+)\.weight")
SUPPORTED_HF = (f"transformers' {ARCHITECTURE} (model_type {MODEL_TYPE!r}) with relu² MLP of width 4 x hidden, "
                f"softcap {LOGIT_SOFTCAP:g}, default rope with theta {ROTARY_BASE}, no biases, untied head")


def hf_names(config: GPTConfig) -> dict[str, str]:
    """Every nanogpt (= nanochat) state-dict key -> its name in transformers' NanoChatForCausalLM."""
    names = {}
    for key in nanochat_shapes(config):
        if key == "transformer.wte.weight":
            names[key] = "model.embed_tokens.weight"
        elif key == "lm_head.weight":
            names[key] = key
        else:
            layer, module = _LAYER_KEY.fullmatch(key).groups()
            names[key] = f"model.layers.{layer}.{LAYER_NAMES[module]}.weight"
    return names


def _transformers(feature: str = HF_EXTRA[1]):
    return require_extra("transformers", HF_EXTRA[0], feature)


# --- the agreement with transformers ----------------------------------------------------------------------------


@dataclass
class TransformersAgreement:
    """Max |logit difference| against transformers' NanoChat on the same weights and tokens."""

    positions: int
    exact: float  # nanogpt's reference given transformers' float32 rotary table: float32 rounding only
    reference: float  # the reference as it runs, with nanochat's bfloat16 rotary table
    candidate: float | None = None  # the checkpoint's own implementations, when they are not all reference
    by_component: dict[str, float] = field(default_factory=dict)  # each non-reference component alone

    @property
    def candidate_limit(self) -> float:
        """The most a checkpoint's implementations may differ from transformers: as far as the reference is."""
        return self.reference + FLOAT32_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def _quiet_transformers():
    """No progress bars or advice from transformers while it loads what we just wrote."""
    utils = _transformers().utils.logging
    bars, verbosity = utils.is_progress_bar_enabled(), utils.get_verbosity()
    utils.disable_progress_bar()
    utils.set_verbosity_error()
    try:
        yield
    finally:
        utils.set_verbosity(verbosity)
        if bars:
            utils.enable_progress_bar()


def _model_on(config: GPTConfig, weights: dict[str, torch.Tensor], use: Any = None) -> torch.nn.Module:
    """A model (eval mode, CPU) whose parameters *are* `weights`: several assemblies share one copy of a model."""
    model = build_model(config, use=use, device="cpu")  # torch.empty storage, replaced below before it is touched
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def probe_tokens(config: GPTConfig) -> torch.Tensor:
    """(1, T) fixed pseudo-random token ids: every position and head is exercised, and no text is needed."""
    g = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randint(0, config.vocab_size, (1, min(PROBE_TOKENS, config.sequence_len)), generator=g)


def compare_with_transformers(folder: str | Path, config: GPTConfig, weights: dict[str, torch.Tensor],
                              use: dict[str, str] | None = None) -> TransformersAgreement:
    """Load `folder` with transformers and compare its logits with nanogpt's on `weights` (our key names)."""
    transformers = _transformers()
    with _quiet_transformers():
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = probe_tokens(config)
    T, half = ids.size(1), config.head_dim // 2
    with torch.no_grad():
        expected = hf(ids).logits
        reference = _model_on(config, weights)
        as_runs = (reference(ids) - expected).abs().max().item()
        # transformers' own table: (1, T, D) as cat(freqs, freqs); ours is (1, T, 1, D/2), one half of it
        cos, sin = hf.model.rotary_emb(expected, torch.arange(T)[None])
        reference.cos, reference.sin = cos[..., :half].unsqueeze(2), sin[..., :half].unsqueeze(2)
        exact = (reference(ids) - expected).abs().max().item()
        agreement = TransformersAgreement(T, exact, as_runs)
        swapped = [c for c in FORWARD_COMPONENTS if use and use.get(c, REFERENCE_SET) != REFERENCE_SET]
        if swapped:
            agreement.candidate = (_model_on(config, weights, use)(ids) - expected).abs().max().item()
            for component in swapped:
                alone = _model_on(config, weights, {component: use[component]})
                agreement.by_component[component] = (alone(ids) - expected).abs().max().item()
    return agreement


def _check_agreement(agreement: TransformersAgreement, source: Path | str, use: dict[str, str] | None) -> None:
    if agreement.exact > FLOAT32_TOLERANCE:
        raise CheckpointError(
            f"{source}: transformers' NanoChat and nanogpt's reference disagree by {agreement.exact:.2e} in the "
            f"logits even with the same rotary table (float32 rounding stays below {FLOAT32_TOLERANCE:.0e}); this "
            f"transformers ({_transformers().__version__}) computes another model. Supported: {SUPPORTED_HF}.")
    if agreement.candidate is not None and agreement.candidate > agreement.candidate_limit:
        culprits = [c for c, d in agreement.by_component.items() if d > agreement.candidate_limit] \
            or list(agreement.by_component)
        named = ", ".join(f"{c} ({use[c]}, {agreement.by_component[c]:.2e})" for c in culprits)
        raise CheckpointError(
            f"{source} cannot be exported to transformers' NanoChat: it computes something else with these weights "
            f"(max |Δlogit| {agreement.candidate:.2e} against NanoChat, where the reference differs by "
            f"{agreement.reference:.2e}); not expressible: {named}. NanoChat is {SUPPORTED_HF}.")


# --- the tokenizer ------------------------------------------------------------------------------------------------


def hf_tokenizer(tokenizer: Tokenizer):
    """Our tokenizer as a `tokenizers.Tokenizer`, converted by transformers' TikTokenConverter (the same conversion
    transformers applies to tiktoken files), then told to put <|bos|> before each text, as nanogpt's prompts do."""
    convert = require_extra("transformers.convert_slow_tokenizer", *HF_EXTRA)
    processors = require_extra("tokenizers.processors", *HF_EXTRA)
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
        ranks_file = tokenizer.save(tmp) / "tokenizer.tiktoken"  # tiktoken's own text format, as the converter reads
        converted = convert.TikTokenConverter(vocab_file=str(ranks_file), pattern=tokenizer.pattern,
                                              extra_special_tokens=tokenizer.special_tokens).converted()
    ids = {name: converted.token_to_id(name) for name in tokenizer.special_tokens}
    if ids != tokenizer.special_tokens:
        raise CheckpointError(f"the special tokens do not follow the mergeable ranks ({tokenizer.special_tokens} "
                              f"became {ids}); transformers' conversion numbers them right after the ranks.")
    converted.post_processor = processors.Sequence([
        converted.post_processor,
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, tokenizer.bos_id)]),
    ])
    return converted


def _encoding_behaviour(data: dict[str, Any]) -> dict[str, Any]:
    """What decides the ids a tokenizer.json gives a text, in one form across tokenizers versions."""
    model = data.get("model") or {}
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
    return {
        "normalizer": data.get("normalizer"),
        "pre_tokenizer": _without(data.get("pre_tokenizer"), "trim_offsets"),  # it moves offsets, never ids
        "model": {k: model.get(k) for k in ("type", "dropout", "unk_token", "continuing_subword_prefix",
                                             "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges")},
        "vocab": model.get("vocab"),
        "merges": merges,
        "added_tokens": sorted((t.get("content"), t.get("id"), bool(t.get("special"))) for t in
                               data.get("added_tokens") or []),
    }


def _without(value: Any, key: str) -> Any:
    """`value` (JSON) with `key` removed from every object in it."""
    if isinstance(value, dict):
        return {k: _without(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [_without(v, key) for v in value]
    return value


def tokenizer_from_hf(path: Path) -> Tokenizer:
    """A tokenizer.json as our Tokenizer, refused unless converting the result back gives the same encoder."""
    convert = require_extra("transformers.convert_slow_tokenizer", *HF_EXTRA)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pattern = data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
        byte_of = {char: byte for byte, char in convert.bytes_to_unicode().items()}
        ranks = {bytes(byte_of[c] for c in token): rank for token, rank in data["model"]["vocab"].items()}
        specials = {t["content"]: t["id"] for t in data["added_tokens"] if t.get("special")}
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}).") from exc
    except (KeyError, IndexError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a byte-level BPE with a split pattern (no {exc}); nanogpt imports the "
                              f"tokenizer NanoChat uses, a tiktoken-style BPE as TikTokenConverter writes it.") from exc
    try:
        tokenizer = Tokenizer(ranks, pattern, specials)
    except (NanoGPTError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    expected = _encoding_behaviour(json.loads(hf_tokenizer(tokenizer).to_str()))
    found = _encoding_behaviour(data)
    differ = [part for part in expected if expected[part] != found[part]]
    if differ:
        raise CheckpointError(f"{path} encodes differently from the tiktoken-style BPE its vocabulary implies (its "
                              f"{', '.join(differ)} differ from TikTokenConverter's); nanogpt would give other ids.")
    return tokenizer


def _check_tokenizer_files(folder: Path, tokenizer: Tokenizer) -> None:
    """transformers' AutoTokenizer, loaded from the folder, gives our ids on a sample text (<|bos|> first)."""
    with _quiet_transformers():  # the sample may be longer than model_max_length (the context): no warning
        auto = _transformers().AutoTokenizer.from_pretrained(str(folder))
        got = auto(SAMPLE_TEXT)["input_ids"]
    want = tokenizer.encode(SAMPLE_TEXT, prepend_bos=True)
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise CheckpointError(f"transformers' tokenizer from {folder} encodes the sample text differently from "
                              f"nanogpt's (first at token {first}: {got[first:first + 3]} vs {want[first:first + 3]}).")


# --- export -------------------------------------------------------------------------------------------------------


def hf_config(config: GPTConfig, tokenizer: Tokenizer):
    """The NanoChatConfig of a nanogpt model: every number the architecture takes, none left to a default."""
    transformers = _transformers()
    hf = transformers.NanoChatConfig(
        vocab_size=config.vocab_size, hidden_size=config.n_embd, intermediate_size=4 * config.n_embd,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head, num_key_value_heads=config.n_kv_head,
        max_position_embeddings=config.sequence_len, hidden_act="relu2", rms_norm_eps=NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": float(ROTARY_BASE)},
        final_logit_softcapping=LOGIT_SOFTCAP, attention_bias=False, tie_word_embeddings=False,
        # pad None: transformers would otherwise freeze that row of the embedding (padding_idx) when fine-tuning
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.bos_id, pad_token_id=None, dtype="float32",
    )
    hf.architectures = [ARCHITECTURE]
    return hf


def export_hf(ckpt_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> tuple[list[Path],
                                                                                           TransformersAgreement]:
    """Write a nanogpt checkpoint as a transformers NanoChat folder OUT_DIR; returns the files and the agreement.

    The folder is written aside, loaded back with transformers and compared (logits, tokenizer ids) before its
    files move into OUT_DIR, so a refused or failed export leaves OUT_DIR as it was. Existing files of the same
    names are refused unless `overwrite`.
    """
    _transformers()  # a missing extra is said before anything is read
    ckpt = load_checkpoint(ckpt_path, device="cpu", load_optimizer=False)
    tokenizer = load_tokenizer(ckpt)
    use = resolve_use(ckpt.use)
    _check_expressible_state(ckpt.model_state, ckpt.config, ckpt.path, use)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file; pass a folder for the exported model.")
    present = [name for name in EXPORTED_FILES if (out / name).exists()]
    if present and not overwrite:
        raise CheckpointError(f"{out / present[0]} already exists; choose another folder or pass --overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the exported one is for sharing, as mkdir makes it
    try:
        _write_hf_folder(tmp, ckpt, tokenizer)
        agreement = compare_with_transformers(tmp, ckpt.config, ckpt.model_state, use)
        _check_agreement(agreement, ckpt.path, use)
        _check_tokenizer_files(tmp, tokenizer)
        for name in EXPORTED_FILES:
            fsync_file(tmp / name)
        if not out.exists():
            os.rename(tmp, out)  # the whole folder appears at once
        else:
            for name in EXPORTED_FILES:  # each rename is atomic: a reader sees the old file or the new one
                os.replace(tmp / name, out / name)
        fsync_dir(out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in EXPORTED_FILES], agreement


def _write_hf_folder(folder: Path, ckpt, tokenizer: Tokenizer) -> None:
    """The five files, written by transformers' own savers (config, generation config, tokenizer) and safetensors."""
    transformers = _transformers()
    names = hf_names(ckpt.config)
    weights = {names[key]: ckpt.model_state[key].detach().contiguous() for key in names}
    save_file(weights, str(folder / WEIGHTS_FILE), metadata=WEIGHTS_METADATA)
    hf_config(ckpt.config, tokenizer).save_pretrained(str(folder))
    transformers.GenerationConfig(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.bos_id,
                                  pad_token_id=tokenizer.bos_id).save_pretrained(str(folder))
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=hf_tokenizer(tokenizer), bos_token=BOS, eos_token=BOS, pad_token=BOS,
        model_max_length=ckpt.config.sequence_len,
    ).save_pretrained(str(folder))
    written = sorted(p.name for p in folder.iterdir())
    if written != sorted(EXPORTED_FILES):
        raise CheckpointError(f"transformers {transformers.__version__} wrote {written}, not the expected "
                              f"{sorted(EXPORTED_FILES)}; install the pinned version: pip install 'nanogpt[hf]'.")


def _check_expressible_state(weights: dict[str, Any], config: GPTConfig, path: Path, use: dict[str, str]) -> None:
    """NanoChat has exactly nanochat's tensors: anything else came from an implementation it cannot express."""
    expected = nanochat_shapes(config)
    extra = sorted(set(weights) - set(expected))
    missing = sorted(set(expected) - set(weights), key=list(expected).index)
    wrong = [f"{k} is {tuple(weights[k].shape)}, not {s}" for k, s in expected.items()
             if k in weights and tuple(weights[k].shape) != s]
    if not (extra or missing or wrong):
        return
    swapped = [f"{c} ({use[c]})" for c in FORWARD_COMPONENTS if use[c] != REFERENCE_SET]
    problems = [f"no place for {summarize_keys(extra)}" if extra else "",
                f"no {summarize_keys(missing)}" if missing else "", "; ".join(wrong[:2])]
    by = f" (from the implementations {', '.join(swapped)})" if swapped else ""
    raise CheckpointError(f"{path} cannot be exported to transformers' NanoChat: "
                          f"{'; '.join(p for p in problems if p)}{by}. NanoChat is {SUPPORTED_HF}.")


# --- import -------------------------------------------------------------------------------------------------------


@dataclass
class HFModel:
    """A NanoChat folder, read and checked: config, weights under our names (float32), tokenizer."""

    source: Path
    config: GPTConfig
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    hf_config: dict[str, Any]
    upcast: list[str] = field(default_factory=list)  # "name: bfloat16" for each tensor widened to fp32


def read_hf_folder(src: str | Path) -> HFModel:
    """Read a transformers NanoChat folder (config.json, safetensors weights, tokenizer.json); CheckpointError on
    anything that is not exactly the architecture nanogpt's reference computes."""
    folder = Path(src)
    if not folder.is_dir():
        raise CheckpointError(f"no Hugging Face model at {folder}: the folder does not exist.")
    hf = _read_json(folder / CONFIG_FILE, "the model's config.json")
    config = _config_from_hf(hf, folder / CONFIG_FILE)
    weights, upcast = _read_weights(folder, config)
    tokenizer_path = folder / TOKENIZER_FILE
    if not tokenizer_path.is_file():
        raise CheckpointError(f"{tokenizer_path} is missing; nanogpt needs the model's own tokenizer.json.")
    tokenizer = tokenizer_from_hf(tokenizer_path)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"{tokenizer_path} has {tokenizer.vocab_size} tokens but config.json says vocab_size "
                              f"{config.vocab_size}; a padded vocabulary is not the NanoChat nanogpt supports.")
    return HFModel(folder, config, weights, tokenizer, hf, upcast)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; a Hugging Face model folder keeps {what} there.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object.")
    return data


def _config_from_hf(hf: dict[str, Any], path: Path) -> GPTConfig:
    """Our six numbers from a NanoChatConfig, after checking every field that would change what it computes."""
    if "auto_map" in hf:
        raise CheckpointError(f"{path} asks for custom code (auto_map); nanogpt never runs code from a model folder. "
                              f"Supported: {SUPPORTED_HF}.")
    if hf.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{path} is model_type {hf.get('model_type')!r}, not {MODEL_TYPE!r}; nanogpt imports "
                              f"{SUPPORTED_HF}.")
    sizes = {"max_position_embeddings": "sequence_len", "vocab_size": "vocab_size", "num_hidden_layers": "n_layer",
             "num_attention_heads": "n_head", "num_key_value_heads": "n_kv_head", "hidden_size": "n_embd"}
    values = {**hf, "num_key_value_heads": hf.get("num_key_value_heads") or hf.get("num_attention_heads")}
    try:
        config = GPTConfig(**{ours: values.get(theirs) for theirs, ours in sizes.items()}).validate()
    except NanoGPTError as exc:
        message = str(exc)
        for theirs, ours in sizes.items():
            message = re.sub(rf"\b{ours}\b", theirs, message)
        raise CheckpointError(f"{path}: {message}") from exc
    # Any field this transformers does not know might change the model in a version that does: refuse it.
    known = set(_transformers().NanoChatConfig().to_dict()) | {"torch_dtype", "rope_theta", "head_dim"}
    unknown = sorted(set(hf) - known)
    rope = hf.get("rope_parameters") or {"rope_type": "default", "rope_theta": hf.get("rope_theta", ROTARY_BASE)}
    wrong = [f"fields this transformers' NanoChat does not know {unknown}"] if unknown else []
    for name, got, want in (
        ("architectures", hf.get("architectures") or [ARCHITECTURE], [ARCHITECTURE]),
        ("hidden_act", hf.get("hidden_act", "relu2"), "relu2"),
        ("final_logit_softcapping", hf.get("final_logit_softcapping", LOGIT_SOFTCAP), LOGIT_SOFTCAP),
        ("rope_type", rope.get("rope_type"), "default"),
        ("rope_theta", rope.get("rope_theta"), ROTARY_BASE),
        ("attention_bias", hf.get("attention_bias", False), False),
        ("tie_word_embeddings", hf.get("tie_word_embeddings", False), False),
        ("intermediate_size", hf.get("intermediate_size"), 4 * config.n_embd),
        ("head_dim", hf.get("head_dim") or config.head_dim, config.head_dim),
    ):
        if got != want:
            wrong.append(f"{name} {got!r} (nanogpt computes {want!r})")
    if wrong:
        raise CheckpointError(f"{path} describes a model nanogpt's reference does not compute: {'; '.join(wrong)}. "
                              f"Supported: {SUPPORTED_HF}.")
    eps = hf.get("rms_norm_eps", NORM_EPS)
    if eps != NORM_EPS:
        log.warning("%s has rms_norm_eps %g; nanogpt's RMSNorm uses float32's epsilon %.3g, as nanochat does (it "
                    "matters only for vectors whose mean square is near that size).", path, eps, NORM_EPS)
    return config


def _read_weights(folder: Path, config: GPTConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The safetensors file (or shards named by model.safetensors.index.json), renamed to our keys, in float32;
    also which tensors were widened."""
    if (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    elif (folder / WEIGHTS_INDEX_FILE).is_file():
        index = _read_json(folder / WEIGHTS_INDEX_FILE, "the shard index")
        shards = sorted(set((index.get("weight_map") or {}).values()))
        if not shards or any("/" in s or "\\" in s or s.startswith(".") for s in shards):
            raise CheckpointError(f"{folder / WEIGHTS_INDEX_FILE} names no shard files in this folder.")
        files = [folder / s for s in shards]
    else:
        pickled = [name for name in PICKLED_WEIGHTS if (folder / name).exists()]
        hint = (f" It holds {pickled[0]}, a PyTorch pickle; nanogpt never unpickles (a pickle can run code): download "
                f"the model's safetensors files instead.") if pickled else ""
        raise CheckpointError(f"no {WEIGHTS_FILE} in {folder}.{hint}")
    ours_of = {hf: ours for ours, hf in hf_names(config).items()}
    weights: dict[str, torch.Tensor] = {}
    unknown, upcast = [], []
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (named by {WEIGHTS_INDEX_FILE}).")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    if key not in ours_of:
                        unknown.append(key)
                        continue
                    tensor = f.get_tensor(key)
                    if tensor.dtype not in FLOAT_DTYPES:
                        raise CheckpointError(f"{path}: {key} is {tensor.dtype}; NanoChat's weights are floating "
                                              f"point (a quantized model cannot be imported).")
                    if tensor.dtype != torch.float32:
                        upcast.append(f"{key}: {str(tensor.dtype).removeprefix('torch.')}")
                    weights[ours_of[key]] = tensor.to(torch.float32).contiguous()  # bf16/fp16 -> fp32 is exact
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it is truncated or "
                                  f"corrupt.") from exc
    missing = [hf for hf, ours in ours_of.items() if ours not in weights]
    if unknown or missing:
        what = [f"unknown tensors {summarize_keys(sorted(unknown))}" if unknown else "",
                f"missing {summarize_keys(missing)}" if missing else ""]
        raise CheckpointError(f"{folder} is not the NanoChat nanogpt supports: {'; '.join(w for w in what if w)}. "
                              f"Supported: {SUPPORTED_HF}.")
    for key, shape in nanochat_shapes(config).items():
        if tuple(weights[key].shape) != shape:
            raise CheckpointError(f"{folder}: {hf_names(config)[key]} is {tuple(weights[key].shape)}, but config.json "
                                  f"implies {shape}; the weights and config do not belong together.")
    return weights, upcast


def import_hf(src: str | Path, out_dir: str | Path) -> tuple[Path, TransformersAgreement]:
    """Convert a transformers NanoChat folder into a nanogpt run folder OUT_DIR with one weights-only checkpoint.

    The folder is also loaded with transformers and its logits compared with the imported model's, so what nanogpt
    runs is what transformers runs (within the rotary table's precision). Returns the checkpoint folder and that
    agreement.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not empty; choose a new folder for the imported model.")
    model = read_hf_folder(src)
    agreement = compare_with_transformers(model.source, model.config, model.weights)
    _check_agreement(agreement, model.source, None)
    gpt = build_model(model.config, device="meta")  # then the read tensors are assigned: no second copy
    gpt.load_state_dict(model.weights, strict=True, assign=True)
    state = {"imported_from": {
        "format": "huggingface", "source": str(model.source.resolve()), "upcast_to_float32": model.upcast,
        "config": model.hf_config, "agreement_with_transformers": agreement.to_dict(),
    }}
    # A NanoChat folder records no training step: the imported checkpoint is step 0 of its new life here.
    return save_checkpoint(out, 0, gpt, None, model.tokenizer, state=state), agreement
