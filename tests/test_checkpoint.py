"""Checkpoints: a bit-exact round trip of weights, AdamW and Muon state, loader position and RNG; atomic saves; and a
clean one-line refusal of everything that is not a good nanogpt checkpoint (never unpickling)."""

from __future__ import annotations

import json
import logging
import pickle
import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_learner_support import REFERENCE_PARTS, make_set, registered
from tiny_training import VOCAB_SIZE, _one_thread, tiny_corpus, tiny_tokenizer  # noqa: F401

import nanogpt_core.io.checkpoint as ckpt_mod
from nanogpt_core import GPTConfig, build_model
from nanogpt_core.data.loader import TokenLoader
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import CheckpointError
from nanogpt_core.io.checkpoint import (
    MODEL_FILE,
    OPTIM_FILE,
    STATE_FILE,
    latest_checkpoint,
    load_checkpoint,
    load_model,
    load_model_state,
    load_optimizer_states,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

CONFIG = GPTConfig(sequence_len=32, vocab_size=VOCAB_SIZE, n_layer=2, n_head=2, n_kv_head=1, n_embd=64)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):  # noqa: F811
    return Tokenizer.load(tiny_tokenizer)


def trained(steps: int = 3, config: GPTConfig = CONFIG):
    """A model and its two optimizers after a few real steps, so AdamW and Muon both hold state."""
    model = build_model(config)
    model.init_weights()
    optimizers = model.setup_optimizers()
    for group in optimizers[1].param_groups:
        group["momentum"] = 0.87  # a non-default value the round trip must keep
    for _ in range(steps):
        x = torch.randint(0, config.vocab_size, (2, config.sequence_len))
        model(x, x).backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
    return model, optimizers


def fresh(config: GPTConfig = CONFIG):
    model = build_model(config)
    model.init_weights()
    return model, model.setup_optimizers()


def assert_state_equal(a, b):
    """Optimizer state_dicts equal exactly: every tensor bitwise, every other value by ==."""
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for pid in a["state"]:
        sa, sb = a["state"][pid], b["state"][pid]
        assert sa.keys() == sb.keys()
        for key in sa:
            if torch.is_tensor(sa[key]):
                assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), (pid, key)
            else:
                assert sa[key] == sb[key], (pid, key)


def test_round_trip_is_bit_exact(tmp_path, tokenizer):
    model, optimizers = trained()
    loader = TokenLoader(torch.arange(10_000), 2, 32)
    for _ in range(5):
        loader.next_batch()
    random.seed(3)
    torch.manual_seed(3)
    state = {"train_loader": loader.state_dict(), "rng": rng_state()}
    expected_py, expected_torch = random.random(), torch.rand(4)  # drawn right after the save point
    path = save_checkpoint(tmp_path, 3, model, optimizers, tokenizer, state)
    assert path == tmp_path / "checkpoints" / "step_000003"
    assert latest_checkpoint(tmp_path) == path

    ckpt = load_checkpoint(tmp_path)
    model2, optimizers2 = fresh()
    load_model_state(model2, ckpt.model_state)
    load_optimizer_states(optimizers2, ckpt.optimizer_states)
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(optimizers, optimizers2):
        assert_state_equal(a.state_dict(), b.state_dict())
    muon_state = optimizers2[1].state_dict()["state"]
    assert all("momentum_buffer" in s and s["momentum_buffer"].abs().sum() > 0 for s in muon_state.values())
    assert optimizers2[1].param_groups[0]["momentum"] == 0.87
    assert isinstance(optimizers2[0].param_groups[0]["betas"], tuple)
    loader2 = TokenLoader(torch.arange(10_000), 2, 32)
    loader2.load_state_dict(ckpt.state["train_loader"])
    assert torch.equal(loader2.next_batch()[0], loader.next_batch()[0])
    random.seed(99)
    torch.manual_seed(99)
    set_rng_state(ckpt.state["rng"])
    assert random.random() == expected_py and torch.equal(torch.rand(4), expected_torch)
    # a step after loading is the same step: the restored state is usable, not just equal
    x = torch.randint(0, VOCAB_SIZE, (2, 32))
    for m, opts in ((model, optimizers), (model2, optimizers2)):
        m(x, x).backward()
        for opt in opts:
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_model_file_carries_its_metadata(tmp_path, tokenizer):
    model, optimizers = trained(1)
    path = save_checkpoint(tmp_path, 1, model, optimizers, tokenizer)
    with safe_open(str(path / MODEL_FILE), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"]) == CONFIG.to_dict()
    assert meta["step"] == "1" and meta["nanogpt_format_version"] == "1"
    assert meta["tokenizer_fingerprint"] == tokenizer.fingerprint
    assert json.loads(meta["use"])["attention"] == "reference"
    assert (path / "tokenizer" / "tokenizer.json").is_file()


def test_load_model_returns_a_working_model(tmp_path, tokenizer):
    model, optimizers = trained(2)
    save_checkpoint(tmp_path, 2, model, optimizers, tokenizer)
    loaded, tok, meta = load_model(tmp_path, device="cpu")
    assert meta["step"] == 2 and tok.fingerprint == tokenizer.fingerprint and not loaded.training
    x = torch.randint(0, VOCAB_SIZE, (1, 16))
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_load_model_with_another_use_says_so(tmp_path, tokenizer, caplog):
    model, optimizers = trained(1)
    save_checkpoint(tmp_path, 1, model, optimizers, tokenizer)
    with registered(make_set("ckptalt", REFERENCE_PARTS), "test-ckpt-alt"):
        with caplog.at_level(logging.WARNING, logger="nanogpt"):
            loaded, _, meta = load_model(tmp_path, use="ckptalt:attention", device="cpu")
    assert meta["use"]["attention"] == "ckptalt" and meta["recorded_use"]["attention"] == "reference"
    assert "ckptalt:attention" in caplog.text and "trained with reference" in caplog.text
    x = torch.randint(0, VOCAB_SIZE, (1, 16))
    model.eval()
    assert torch.equal(loaded(x), model(x))  # the same weights, by contract


# --- atomic saves ----------------------------------------------------------------------------------------------


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, tokenizer, monkeypatch):
    model, optimizers = trained(1)
    good = save_checkpoint(tmp_path, 1, model, optimizers, tokenizer)
    real_save = ckpt_mod._save_safetensors

    def crash_on_optimizer_file(tensors, path, metadata):
        real_save(tensors, path, metadata)
        if path.name == OPTIM_FILE:
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_mod, "_save_safetensors", crash_on_optimizer_file)
    with pytest.raises(CheckpointError, match=f"simulated.* the last good checkpoint, {good}, is intact"):
        save_checkpoint(tmp_path, 2, model, optimizers, tokenizer)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000001"]  # no partial folder, no temp left
    assert latest_checkpoint(tmp_path) == good
    assert load_checkpoint(tmp_path).step == 1


def test_a_crash_before_the_pointer_moves_keeps_latest_on_the_old_one(tmp_path, tokenizer, monkeypatch):
    model, optimizers = trained(1)
    save_checkpoint(tmp_path, 1, model, optimizers, tokenizer)
    monkeypatch.setattr(ckpt_mod, "write_text_atomic", lambda path, text: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(CheckpointError, match="killed"):
        save_checkpoint(tmp_path, 2, model, optimizers, tokenizer)
    assert load_checkpoint(tmp_path).step == 1  # latest never pointed at step_000002...
    assert not (tmp_path / "checkpoints" / "step_000002").exists()  # ...which is removed, as if never begun


def test_a_killed_save_leaves_only_a_temporary_folder_that_the_next_save_removes(tmp_path, tokenizer):
    model, optimizers = trained(1)
    save_checkpoint(tmp_path, 1, model, optimizers, tokenizer)
    stale = tmp_path / "checkpoints" / ".tmp-step_000002-abc"
    stale.mkdir()
    (stale / MODEL_FILE).write_bytes(b"half a file")
    assert load_checkpoint(tmp_path).step == 1
    save_checkpoint(tmp_path, 2, model, optimizers, tokenizer)
    assert not stale.exists() and load_checkpoint(tmp_path).step == 2


def test_saving_the_same_step_again_replaces_it(tmp_path, tokenizer):
    model, optimizers = trained(1)
    save_checkpoint(tmp_path, 1, model, optimizers, tokenizer, {"note": "first"})
    save_checkpoint(tmp_path, 1, model, optimizers, tokenizer, {"note": "second"})
    assert load_checkpoint(tmp_path).state["note"] == "second"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000001"]


# --- refusals --------------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, tokenizer):
    model, optimizers = trained(1)
    return save_checkpoint(tmp_path / "run", 1, model, optimizers, tokenizer)


def test_refuses_a_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "empty")


def test_refuses_a_truncated_file(saved):
    data = (saved / MODEL_FILE).read_bytes()
    (saved / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(saved)
    (saved / STATE_FILE).unlink()  # without the checksums, safetensors itself notices
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(saved, load_optimizer=False)


def test_refuses_a_flipped_byte(saved):
    data = bytearray((saved / OPTIM_FILE).read_bytes())
    data[-10] ^= 0xFF  # inside tensor data: safetensors alone could not tell
    (saved / OPTIM_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{OPTIM_FILE} does not match its checksum"):
        load_checkpoint(saved)


def test_refuses_a_checkpoint_of_another_shape(saved):
    ckpt = load_checkpoint(saved)
    wider, _ = fresh(GPTConfig(sequence_len=32, vocab_size=VOCAB_SIZE, n_layer=2, n_head=2, n_kv_head=1, n_embd=128))
    with pytest.raises(CheckpointError, match=r"another shape: .* is \(\d+, 64\) there, \(\d+, 128\) in this model"):
        load_model_state(wider, ckpt.model_state)
    deeper, deeper_opts = fresh(GPTConfig(sequence_len=32, vocab_size=VOCAB_SIZE, n_layer=3, n_head=2, n_kv_head=1,
                                          n_embd=64))
    with pytest.raises(CheckpointError, match="missing transformer.h.2"):
        load_model_state(deeper, ckpt.model_state)
    with pytest.raises(CheckpointError, match="another shape"):
        load_optimizer_states(deeper_opts, ckpt.optimizer_states)


def test_refuses_a_newer_format_version(saved):
    with safe_open(str(saved / MODEL_FILE), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["nanogpt_format_version"] = "99"
    save_file(tensors, str(saved / MODEL_FILE), metadata=meta)
    (saved / STATE_FILE).unlink()
    with pytest.raises(CheckpointError, match="format version 99, newer than this nanogpt reads"):
        load_checkpoint(saved, load_optimizer=False)


def test_refuses_pickles_without_unpickling(saved, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", never)
    monkeypatch.setattr(pickle, "loads", never)
    monkeypatch.setattr(torch, "load", never)
    weights = {k: v for k, v in load_checkpoint(saved).model_state.items()}
    pt = tmp_path / "model.pt"
    torch.save(weights, pt)
    with pytest.raises(CheckpointError, match="PyTorch pickle; nanogpt reads only safetensors"):
        load_checkpoint(pt)
    (saved / MODEL_FILE).write_bytes(pt.read_bytes())  # a pickle under the safetensors name
    (saved / STATE_FILE).unlink()
    with pytest.raises(CheckpointError, match="is a PyTorch pickle, not safetensors"):
        load_checkpoint(saved)
    folder = tmp_path / "nanochat_style"
    folder.mkdir()
    (folder / "model_000100.pt").write_bytes(pt.read_bytes())
    with pytest.raises(CheckpointError, match="model_000100.pt, a PyTorch pickle"):
        load_checkpoint(folder)


def test_refuses_a_tokenizer_that_does_not_belong(saved, tiny_corpus):  # noqa: F811
    Tokenizer.train([tiny_corpus.read_text()[:20_000]], 300).save(saved / "tokenizer")
    with pytest.raises(CheckpointError, match="not the tokenizer these weights were trained with"):
        load_model(saved, device="cpu")


def test_a_full_disk_is_a_one_line_error_naming_the_good_checkpoint(tmp_path, tokenizer, monkeypatch):
    import errno
    import os

    model, optimizers = trained(1)
    good = save_checkpoint(tmp_path, 1, model, optimizers, tokenizer)

    def full(tensors, path, metadata):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ckpt_mod, "_save_safetensors", full)
    with pytest.raises(CheckpointError, match=f"no space left on device while saving step_000002 .*{good}, is intact; "
                                              f"free some space and continue with: nanogpt train --resume {tmp_path}"):
        save_checkpoint(tmp_path, 2, model, optimizers, tokenizer)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000001"]


def test_a_safetensors_file_whose_header_length_starts_with_0x80_is_no_pickle(tmp_path):
    """A pickle starts with 0x80; so does a safetensors file whose header is 128 (mod 256) bytes long."""
    from safetensors.torch import save_file

    from nanogpt_core.io.checkpoint import _looks_like_pickle

    for pad in range(300):  # metadata of growing length until the header's low byte is 0x80
        path = tmp_path / "w.safetensors"
        save_file({"w": torch.zeros(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert not _looks_like_pickle(path)
    torch.save({"w": torch.zeros(2)}, tmp_path / "m.pt", _use_new_zipfile_serialization=False)
    assert _looks_like_pickle(tmp_path / "m.pt")
