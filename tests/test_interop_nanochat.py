"""nanochat interop: import a nanochat-format checkpoint built here, export it back, refuse what is unsafe or unknown.

The nanochat side is written in this file from nanochat's format (torch.save of the state dict, meta JSON with
model_config, a pickled tiktoken Encoding, token_bytes.pt), not produced by the code under test.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
import torch
from click.testing import CliRunner
from independent_gpt import gpt_logits
from plugins.alt_impls import ALT_SET, AltImplsPlugin
from plugins.wrong_impls import WrongImplsPlugin

from nanogpt_cli.main import cli
from nanogpt_core import GPTConfig, build_model
from nanogpt_core.compare.pretrained import compare_in_pretrained
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import CheckpointError
from nanogpt_core.io.checkpoint import load_checkpoint, load_model
from nanogpt_core.io.nanochat import export_nanochat, import_nanochat
from nanogpt_core.io.safe_unpickle import loads_tiktoken_state
from nanogpt_core.model.registry import register_plugin, unregister_plugin
from nanogpt_core.train.sampling import complete

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 8,
    "def add(a, b):\n    return a + b\n" * 6,
    "café naïve résumé — 日本語のテキスト ✓ " * 5,
]
# nanochat's GPT state dict (gpt.py, October 2025), written out by hand: one embedding, six matrices per layer, head.
NANOCHAT_LAYER_KEYS = ("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.c_proj.weight",
                       "mlp.c_fc.weight", "mlp.c_proj.weight")


def nanochat_keys(n_layer: int) -> list[str]:
    return (["transformer.wte.weight"]
            + [f"transformer.h.{i}.{k}" for i in range(n_layer) for k in NANOCHAT_LAYER_KEYS]
            + ["lm_head.weight"])


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; the machine is shared
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(TEXTS, vocab_size=300)


@pytest.fixture
def config(tokenizer) -> GPTConfig:
    return GPTConfig(sequence_len=32, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)


@pytest.fixture
def weights(config) -> dict[str, torch.Tensor]:
    """Random weights of nanochat's shapes (nonzero everywhere, unlike a fresh init's zero heads)."""
    g = torch.Generator().manual_seed(1)
    shapes = {k: tuple(v.shape) for k, v in build_model(config, device="meta").state_dict().items()}
    assert list(shapes) == nanochat_keys(config.n_layer)
    return {k: torch.randn(shape, generator=g) * (1.0 if "wte" in k else 0.3) for k, shape in shapes.items()}


def write_nanochat_tokenizer(directory: Path, tok: Tokenizer, encoding=None) -> tiktoken.Encoding:
    """As nanochat's RustBPETokenizer.save and tok_train.py write them."""
    directory.mkdir(parents=True, exist_ok=True)
    enc = encoding or tiktoken.Encoding(name="rustbpe", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks,
                                        special_tokens=tok.special_tokens)
    with open(directory / "tokenizer.pkl", "wb") as f:
        pickle.dump(enc, f)
    specials = set(enc._special_tokens.values())
    lengths = [0 if i in specials else len(enc.decode([i]).encode("utf-8")) for i in range(enc.n_vocab)]
    torch.save(torch.tensor(lengths, dtype=torch.int32), directory / "token_bytes.pt")
    return enc


def write_nanochat_checkpoint(root: Path, weights: dict, config: GPTConfig, tok: Tokenizer, step: int = 20,
                              prefix: str = "", wte_dtype=torch.float32, meta_extra: dict | None = None) -> Path:
    """nanochat's layout: base_dir/base_checkpoints/d2/{model,meta}_NNNNNN.pt|json and base_dir/tokenizer/."""
    folder = root / "base_checkpoints" / f"d{config.n_layer}"
    folder.mkdir(parents=True, exist_ok=True)
    sd = {prefix + k: (v.to(wte_dtype) if k == "transformer.wte.weight" else v) for k, v in weights.items()}
    torch.save(sd, folder / f"model_{step:06d}.pt")
    meta = {"step": step, "val_bpb": 1.23, "model_config": config.to_dict(), "user_config": {"depth": 2},
            "device_batch_size": 4, "max_seq_len": config.sequence_len, **(meta_extra or {})}
    (folder / f"meta_{step:06d}.json").write_text(json.dumps(meta, indent=2))
    if not (root / "tokenizer" / "tokenizer.pkl").exists():
        write_nanochat_tokenizer(root / "tokenizer", tok)
    return folder


def reference_logits(weights: dict, config: GPTConfig, idx: torch.Tensor) -> torch.Tensor:
    model = build_model(config)
    model.load_state_dict(weights, strict=True)
    model.eval()
    with torch.no_grad():
        return model(idx)


def ids(tok: Tokenizer, text: str = "The quick brown fox, café 日本") -> torch.Tensor:
    return torch.tensor([tok.encode(text, prepend_bos=True)])


# --- import ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "compiled", "bf16-wte"])
def test_imported_model_computes_what_the_nanochat_weights_compute(tmp_path, weights, config, tokenizer, variant):
    prefix = "_orig_mod." if variant == "compiled" else ""
    wte_dtype = torch.bfloat16 if variant == "bf16-wte" else torch.float32
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer, prefix=prefix, wte_dtype=wte_dtype)
    import_nanochat(src, tmp_path / "out")
    model, tok, meta = load_model(tmp_path / "out", device="cpu")
    assert meta["step"] == 20 and meta["config"] == config.to_dict() and tok.fingerprint == tokenizer.fingerprint
    expected_weights = dict(weights)
    if variant == "bf16-wte":  # the original model as nanochat runs it on CPU: bf16 embedding widened to fp32
        expected_weights["transformer.wte.weight"] = weights["transformer.wte.weight"].bfloat16().float()
        assert not torch.equal(expected_weights["transformer.wte.weight"], weights["transformer.wte.weight"])
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, expected_weights[name]), name
    x = ids(tokenizer)
    with torch.no_grad():
        got = model(x)
    assert torch.equal(got, reference_logits(expected_weights, config, x))
    # and the same numbers from nanochat's math written independently of impls/reference
    assert (got - gpt_logits(x, expected_weights, config)).abs().max().item() < 1e-4


def test_imported_tokenizer_encodes_as_the_pickled_encoding(tmp_path, weights, config, tokenizer):
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer)
    with open(tmp_path / "nc" / "tokenizer" / "tokenizer.pkl", "rb") as f:
        enc = pickle.load(f)  # our own file, written above: the one place a plain pickle.load is fine
    import_nanochat(src, tmp_path / "out")
    _, tok, _ = load_model(tmp_path / "out", device="cpu")
    for text in [*TEXTS, "unseen words: zebra Ωmega 12345", ""]:
        assert tok.encode(text) == enc.encode_ordinary(text)
        assert tok.decode(enc.encode_ordinary(text)) == text
    assert tok.special_tokens == enc._special_tokens and tok.vocab_size == enc.n_vocab
    assert tok.bos_id == enc.encode_single_token("<|bos|>")


def test_import_picks_the_newest_step_or_the_one_asked_for(tmp_path, weights, config, tokenizer):
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer, step=100)
    other = {k: v * 2 for k, v in weights.items()}
    write_nanochat_checkpoint(tmp_path / "nc", other, config, tokenizer, step=1000)
    import_nanochat(src, tmp_path / "newest")
    import_nanochat(src, tmp_path / "old", step=100)
    assert load_checkpoint(tmp_path / "newest", load_optimizer=False).step == 1000
    old = load_checkpoint(tmp_path / "old", load_optimizer=False)
    assert old.step == 100 and torch.equal(old.model_state["lm_head.weight"], weights["lm_head.weight"])
    with pytest.raises(CheckpointError, match="has no step 5; it has steps 100, 1000"):
        import_nanochat(src, tmp_path / "none", step=5)


def test_tokenizer_found_in_nanochat_layout_next_to_the_model_or_given(tmp_path, weights, config, tokenizer):
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer)
    folder = load_checkpoint(import_nanochat(src, tmp_path / "a"), load_optimizer=False)
    assert folder.state["imported_from"]["tokenizer"] == str((tmp_path / "nc" / "tokenizer").resolve())
    os.rename(tmp_path / "nc" / "tokenizer", tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="no tokenizer.pkl found in .*pass --tokenizer DIR"):
        import_nanochat(src, tmp_path / "b")
    import_nanochat(src, tmp_path / "c", tokenizer_dir=tmp_path / "elsewhere")
    for name in ("tokenizer.pkl", "token_bytes.pt"):  # a Hugging Face upload keeps everything in one folder
        os.rename(tmp_path / "elsewhere" / name, src / name)
    import_nanochat(src, tmp_path / "d")


# --- export ----------------------------------------------------------------------------------------------------


def test_export_is_nanochat_loadable_and_round_trips_bit_exactly(tmp_path, weights, config, tokenizer):
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer, wte_dtype=torch.bfloat16)
    first = import_nanochat(src, tmp_path / "first")
    export_nanochat(tmp_path / "first", tmp_path / "exported")

    exported = torch.load(tmp_path / "exported" / "model_000020.pt", map_location="cpu", weights_only=True)
    assert list(exported) == nanochat_keys(config.n_layer)
    for name, tensor in exported.items():
        assert tensor.dtype == torch.float32 and tensor.is_contiguous(), name
        assert tensor.untyped_storage().nbytes() == tensor.numel() * 4, name  # own storage, no hidden extra bytes
    fresh = build_model(config)
    fresh.load_state_dict(exported, strict=True)  # what nanochat's GPT.load_state_dict(strict=True) sees
    meta = json.loads((tmp_path / "exported" / "meta_000020.json").read_text())
    assert meta["step"] == 20 and meta["model_config"] == config.to_dict()

    with open(tmp_path / "exported" / "tokenizer" / "tokenizer.pkl", "rb") as f:
        enc = pickle.load(f)  # written by our exporter in this test: loading it plainly checks nanochat can
    assert isinstance(enc, tiktoken.Encoding) and enc.name == "rustbpe"
    assert enc._mergeable_ranks == tokenizer.mergeable_ranks and enc._special_tokens == tokenizer.special_tokens
    token_bytes = torch.load(tmp_path / "exported" / "tokenizer" / "token_bytes.pt", weights_only=True)
    specials = set(tokenizer.special_tokens.values())
    # nanochat's tok_train.py: len(decode([id]).encode("utf-8")), 0 for special tokens
    expected = [0 if i in specials else len(enc.decode_single_token_bytes(i).decode("utf-8", errors="replace")
                                            .encode("utf-8")) for i in range(enc.n_vocab)]
    assert token_bytes.dtype == torch.int32 and token_bytes.tolist() == expected
    assert token_bytes.tolist() != tokenizer.token_bytes().tolist()  # the multi-byte text gave partial tokens

    second = import_nanochat(tmp_path / "exported", tmp_path / "second")
    a, b = load_checkpoint(first, load_optimizer=False), load_checkpoint(second, load_optimizer=False)
    assert a.config == b.config and a.step == b.step and a.tokenizer_fingerprint == b.tokenizer_fingerprint
    assert list(a.model_state) == list(b.model_state)
    for name in a.model_state:
        assert torch.equal(a.model_state[name], b.model_state[name]), name
    _, tok_b, _ = load_model(second, device="cpu")
    for text in TEXTS:
        assert tok_b.encode(text) == tokenizer.encode(text)


def test_export_refuses_to_overwrite_and_a_model_nanochat_cannot_hold(tmp_path, weights, config, tokenizer):
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer)
    import_nanochat(src, tmp_path / "run")
    export_nanochat(tmp_path / "run", tmp_path / "exp")
    with pytest.raises(CheckpointError, match="already exists.*--overwrite"):
        export_nanochat(tmp_path / "run", tmp_path / "exp")
    export_nanochat(tmp_path / "run", tmp_path / "exp", overwrite=True)
    with pytest.raises(CheckpointError, match="not empty"):
        import_nanochat(src, tmp_path / "run")
    with pytest.raises(CheckpointError, match="is a nanochat checkpoint already"):
        export_nanochat(src, tmp_path / "exp2")


# --- refused: unsafe pickles ------------------------------------------------------------------------------------


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class RunsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class RunsSubprocess:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, ([sys.executable, "-c", f"open({str(self.marker)!r}, 'w')"],))


@pytest.mark.parametrize("payload, global_name", [
    (RunsShell, f"{os.system.__module__}.system"),
    (RunsEval, "builtins.eval"),
    (RunsSubprocess, "subprocess.call"),
    (lambda m: [RunsShell(m)], f"{os.system.__module__}.system"),
])
def test_a_tokenizer_pickle_with_anything_but_an_encoding_is_refused_unrun(
        tmp_path, weights, config, tokenizer, payload, global_name):
    marker = tmp_path / "pwned"
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer)
    (tmp_path / "nc" / "tokenizer" / "tokenizer.pkl").write_bytes(pickle.dumps(payload(marker)))
    with pytest.raises(CheckpointError, match=rf"refers to {global_name}, which a tokenizer pickle never needs"):
        import_nanochat(src, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()
    result = CliRunner().invoke(cli, ["import", "nanochat", str(src), str(tmp_path / "out2")])
    assert result.exit_code == 2 and result.output.startswith("Error: ") and "Traceback" not in result.output
    assert global_name in result.output and not marker.exists()


def test_an_encoding_smuggling_a_payload_or_naming_a_registry_encoding_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    enc = tiktoken.Encoding(name="x", pat_str=r"\w+", mergeable_ranks={bytes([i]): i for i in range(256)},
                            special_tokens={"<|bos|>": 256})
    with pytest.raises(CheckpointError, match="refers to"):
        loads_tiktoken_state(pickle.dumps({"enc": enc, "extra": RunsShell(marker)}))
    assert not marker.exists()
    state = loads_tiktoken_state(pickle.dumps(enc))
    assert state["mergeable_ranks"] == enc._mergeable_ranks and state["special_tokens"] == {"<|bos|>": 256}

    # what pickle.dumps(tiktoken.get_encoding("cl100k_base")) holds: an Encoding whose state is just its name
    by_name = (b"\x80\x04\x8c\x0dtiktoken.core\x8c\x08Encoding\x93)\x81\x8c\x0bcl100k_base" + b"b.")
    with pytest.raises(CheckpointError, match="never downloads"):
        loads_tiktoken_state(by_name)
    with pytest.raises(CheckpointError, match="not a readable pickled tiktoken Encoding"):
        loads_tiktoken_state(pickle.dumps(enc)[:-20])


def test_a_model_file_holding_more_than_tensors_is_refused_unrun(tmp_path, weights, config, tokenizer):
    marker = tmp_path / "pwned"
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer)
    torch.save({**weights, "evil": RunsShell(marker)}, src / "model_000020.pt")
    with pytest.raises(CheckpointError, match=rf"holds more than tensors \(it refers to {os.system.__module__}"):
        import_nanochat(src, tmp_path / "out")
    assert not marker.exists()


# --- refused: other nanochat versions ---------------------------------------------------------------------------


def test_a_newer_nanochat_state_dict_is_refused_with_its_keys(tmp_path, weights, config, tokenizer):
    newer = {**weights, "resid_lambdas": torch.ones(2), "x0_lambdas": torch.zeros(2),
             "value_embeds.0.weight": torch.zeros(config.vocab_size, 32),
             "value_embeds.1.weight": torch.zeros(config.vocab_size, 32)}
    src = write_nanochat_checkpoint(tmp_path / "nc", newer, config, tokenizer)
    with pytest.raises(CheckpointError) as err:
        import_nanochat(src, tmp_path / "out")
    message = str(err.value)
    assert "unknown keys [resid_lambdas, value_embeds.*.weight (x2), x0_lambdas]" in message
    assert "October 2025" in message and "missing" not in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_a_2026_nanochat_checkpoint_is_refused_naming_its_config_fields_and_keys(tmp_path, weights, config,
                                                                               tokenizer):
    """The layout of nanochat's GPT in 2026: padded vocabulary, sliding windows, value embeddings, per-layer
    scalars and norm weights (written out here from that version's module tree)."""
    padded = (config.vocab_size + 63) // 64 * 64
    kv_dim = config.n_kv_head * config.head_dim
    newer = {k: (torch.zeros(padded, config.n_embd) if k in ("transformer.wte.weight", "lm_head.weight") else v)
             for k, v in weights.items()}
    newer.update({"resid_lambdas": torch.ones(config.n_layer), "x0_lambdas": torch.zeros(config.n_layer),
                  "value_embeds.1.weight": torch.zeros(padded, kv_dim)})
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        C = config.n_embd
        newer.update({p + "attn_norm.weight": torch.ones(C), p + "mlp_norm.weight": torch.ones(C),
                      p + "attn.c_proj_scalar": torch.zeros(C), p + "mlp.c_proj_scalar": torch.zeros(C)})
    newer["transformer.h.1.attn.ve_gate.weight"] = torch.zeros(config.n_kv_head, 32)
    src = write_nanochat_checkpoint(tmp_path / "nc", newer, config, tokenizer, prefix="_orig_mod.",
                                    wte_dtype=torch.bfloat16)
    meta_path = src / "meta_000020.json"
    meta = json.loads(meta_path.read_text())
    meta["model_config"]["window_pattern"] = "SSSL"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        import_nanochat(src, tmp_path / "out")
    message = str(err.value)
    assert "model_config fields unknown ['window_pattern'] (in meta_000020.json)" in message
    assert ("unknown keys [resid_lambdas, transformer.h.*.attn.c_proj_scalar (x2), transformer.h.*.attn_norm.weight "
            "(x2), transformer.h.*.mlp.c_proj_scalar (x2), transformer.h.*.mlp_norm.weight (x2), "
            "transformer.h.1.attn.ve_gate.weight, value_embeds.1.weight, x0_lambdas]") in message
    assert "vocabulary not padded" in message and "\n" not in message
    result = CliRunner().invoke(cli, ["import", "nanochat", str(src), str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "resid_lambdas" in result.output


def test_missing_keys_padded_vocab_and_unknown_config_fields_are_refused(tmp_path, weights, config, tokenizer):
    missing = {k: v for k, v in weights.items() if k != "transformer.h.1.mlp.c_fc.weight"}
    src = write_nanochat_checkpoint(tmp_path / "a", missing, config, tokenizer)
    with pytest.raises(CheckpointError, match=r"missing keys \[transformer.h.1.mlp.c_fc.weight\]"):
        import_nanochat(src, tmp_path / "out")

    padded_rows = (config.vocab_size + 63) // 64 * 64
    padded = {k: (torch.cat([v, torch.zeros(padded_rows - v.size(0), v.size(1))])
                  if k in ("transformer.wte.weight", "lm_head.weight") else v) for k, v in weights.items()}
    src = write_nanochat_checkpoint(tmp_path / "b", padded, config, tokenizer)
    with pytest.raises(CheckpointError, match=f"{padded_rows} rows .* padded vocabulary"):
        import_nanochat(src, tmp_path / "out")

    src = write_nanochat_checkpoint(tmp_path / "c", weights, config, tokenizer)
    meta_path = src / "meta_000020.json"
    meta = json.loads(meta_path.read_text())
    meta["model_config"]["window_pattern"] = "SSSL"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model_config fields unknown \['window_pattern'\].*Supported"):
        import_nanochat(src, tmp_path / "out")


def test_a_tokenizer_of_another_size_is_refused(tmp_path, weights, config, tokenizer):
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer)
    smaller = Tokenizer.train(TEXTS, vocab_size=280)
    write_nanochat_tokenizer(tmp_path / "nc" / "tokenizer", smaller)
    with pytest.raises(CheckpointError, match=f"has {smaller.vocab_size} tokens but the model was trained with "
                                              f"vocab_size {config.vocab_size}"):
        import_nanochat(src, tmp_path / "out")


# --- using an imported model ------------------------------------------------------------------------------------


@pytest.fixture
def alt_and_bugs() -> Iterator[None]:
    register_plugin(AltImplsPlugin(), name="interop-test-alt")
    register_plugin(WrongImplsPlugin(), name="interop-test-bugs")
    yield
    unregister_plugin(name="interop-test-alt")
    unregister_plugin(name="interop-test-bugs")


def test_sample_cli_on_an_imported_model_with_any_use_mix(tmp_path, weights, config, tokenizer, alt_and_bugs):
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer, prefix="_orig_mod.")
    result = CliRunner().invoke(cli, ["import", "nanochat", str(src), str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "imported nanochat step 20" in result.output
    original = build_model(config)
    original.load_state_dict(weights)
    expected = complete(original, tokenizer, "The quick", max_tokens=8, temperature=0.0)
    assert expected  # greedy decoding of random weights still writes something
    for use in (None, f"{ALT_SET}:attention,{ALT_SET}:mlp", ALT_SET):
        args = ["sample", str(tmp_path / "run"), "--prompt", "The quick", "--max-tokens", "8", "--temperature", "0",
                "--device", "cpu"] + (["--use", use] if use else [])
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert result.output.endswith("The quick" + expected + "\n"), (use, result.output)


def test_compare_in_pretrained_passes_a_correct_part_and_catches_a_wrong_one(tmp_path, weights, config, tokenizer,
                                                                            alt_and_bugs):
    src = write_nanochat_checkpoint(tmp_path / "nc", weights, config, tokenizer)
    import_nanochat(src, tmp_path / "run")
    prompts = ["The quick", "def add"]
    same = compare_in_pretrained(tmp_path / "run", "reference", prompts, max_tokens=6)
    assert same.passed and same.max_abs_diff == 0.0 and all(p.same_text for p in same.prompts)
    assert [p.positions for p in same.prompts] == [len(tokenizer.encode(p, prepend_bos=True)) + 6 for p in prompts]

    alt = compare_in_pretrained(tmp_path / "run", f"{ALT_SET}:attention,{ALT_SET}:norm", prompts, max_tokens=6)
    assert alt.passed and 0 < alt.max_abs_diff < 1e-4 and alt.candidate_use["attention"] == ALT_SET

    wrong = compare_in_pretrained(tmp_path / "run", "bug-no-causal-mask:attention", prompts, max_tokens=6)
    assert not wrong.passed and wrong.max_abs_diff > 1e-2 and wrong.exit_code == 1

    result = CliRunner().invoke(cli, ["pretrained-compare", str(tmp_path / "run"), "--use",
                                      "bug-no-causal-mask:attention", "--prompt", "The quick", "--max-tokens", "4",
                                      "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["passed"] is False and report["prompts"][0]["prompt"] == "The quick"
    # the same through `nanogpt compare --checkpoint`
    via_compare = CliRunner().invoke(cli, ["compare", "--checkpoint", str(tmp_path / "run"), "--use",
                                           f"{ALT_SET}:attention", "--json", "-"])
    assert via_compare.exit_code == 0, via_compare.output
    assert json.loads(via_compare.output[via_compare.output.index("{"):])["passed"] is True
