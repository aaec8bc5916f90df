"""Bad input at the command line, row by row: a malformed `--use`, an impossible model or batch, unusable training
text, and every kind of bad checkpoint. Each must end with exit code 2 and one line `Error: <problem>; <fix>` on
stderr (no traceback), and must leave the files already on disk exactly as they were."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_learner_support import _one_thread  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.errors import ConfigError
from nanogpt_core.io.checkpoint import MODEL_FILE, STATE_FILE, latest_checkpoint, load_checkpoint
from nanogpt_core.train.settings import grad_accum_steps

TEXT = "\n\n".join(" ".join(["the cat sat on the mat and the dog ran far away"] * 20) for _ in range(40))
MODEL = ["--depth=1", "--n-head=2", "--n-kv-head=1", "--max-seq-len=32", "--device-batch-size=2",
         "--total-batch-size=64", "--eval-tokens=64", "--device=cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A small corpus, a tokenizer for it, a good 2-step run, and one file of each kind of bad training text."""
    from nanogpt_core.data.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("reliability_cli")
    corpus = root / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    Tokenizer.train([TEXT], 300).save(root / "tokenizer")
    run = root / "run"
    result = invoke("train", "--data", str(corpus), "--tokenizer", str(root / "tokenizer"), *MODEL,
                    "--num-iterations=2", "--out", str(run))
    assert result.exit_code == 0, result.output
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.dat").write_bytes(bytes(range(256)) * 8)
    (root / "latin1.txt").write_bytes("café au lait, crème brûlée\n".encode("latin-1") * 50)
    (root / "tiny.txt").write_text("hello world\n\nsecond document\n", encoding="utf-8")
    return {"root": root, "corpus": corpus, "tokenizer": root / "tokenizer", "run": run}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its hash: 'nothing on disk was lost or changed' as one comparable value."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result, exit_code: int, *fragments: str) -> str:
    """Exit code, exactly one line on stderr starting with 'Error: ', every fragment in it, no traceback."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- --use ----------------------------------------------------------------------------------------------------------


USE_ROWS = [  # the spec, and what the one line must say
    ("nosuchset:attention", ["unknown implementation set 'nosuchset'; available: reference, student"]),
    ("student:attn", ["unknown component 'attn'; components are: norm, rotary, attention"]),
    ("", ["--use is empty; write e.g. 'student:attention,student:mlp' or 'student'"]),
    ("student:", ["--use item 'student:' is incomplete; write 'set:component'"]),
    (":mlp", ["--use item ':mlp' is incomplete; write 'set:component'"]),
    ("student:mlp,student:mlp", ["--use names component 'mlp' twice", "name each component once"]),
]


@pytest.mark.parametrize("spec, fragments", USE_ROWS, ids=["unknown-set", "unknown-component", "empty", "no-component",
                                                            "no-set", "twice"])
def test_bad_use_spec_when_resuming_leaves_the_run_untouched(files, spec, fragments):
    before = digest(files["run"])
    result = invoke("train", "--resume", str(files["run"]), "--use", spec, "--num-iterations=4")
    assert_one_line_error(result, 2, *fragments)
    assert digest(files["run"]) == before


@pytest.mark.parametrize("spec, fragments", USE_ROWS[:2] + USE_ROWS[3:4], ids=["unknown-set", "unknown-component",
                                                                                "no-component"])
def test_bad_use_spec_when_sampling(files, spec, fragments):
    result = invoke("sample", str(files["run"]), "--use", spec, "--max-tokens", "3")
    assert_one_line_error(result, 2, *fragments)
    assert result.stdout == ""


# --- model and batch configuration ----------------------------------------------------------------------------------


CONFIG_ROWS = [
    (["--n-embd=60", "--n-head=8", "--n-kv-head=8"], ["n_embd (60) must be divisible by n_head (8)"]),
    (["--n-head=4", "--n-kv-head=3"], ["n_head (4) must be a multiple of n_kv_head (3)"]),
    (["--n-embd=38", "--n-head=2"], ["head_dim = n_embd // n_head = 19 is odd", "choose n_embd and n_head with an "
                                                                                 "even head_dim"]),
    (["--depth=0"], ["depth must be a positive integer, got 0; try --depth 4"]),
    (["--device-batch-size=0"], ["--device-batch-size must be an integer >= 1, got 0; try --device-batch-size 4"]),
    (["--device-batch-size=-2"], ["--device-batch-size must be an integer >= 1, got -2"]),
    (["--max-seq-len=0"], ["--max-seq-len must be an integer >= 1, got 0; try --max-seq-len 256"]),
    (["--total-batch-size=0"], ["--total-batch-size 0 must be a multiple of", "use --total-batch-size 64"]),
    (["--total-batch-size=-64"], ["--total-batch-size -64 must be a multiple of", "use --total-batch-size 64"]),
    (["--total-batch-size=96"], ["--total-batch-size 96 must be a multiple of device_batch_size x max_seq_len x "
                                 "world_size = 2 x 32 x 1 = 64; use --total-batch-size 64 (or 128)"]),
    (["--num-iterations=-1"], ["--num-iterations must be an integer >= 0, got -1"]),
]


@pytest.mark.parametrize("flags, fragments", CONFIG_ROWS, ids=[
    "n_embd-not-divisible-by-n_head", "n_head-not-divisible-by-n_kv_head", "odd-head-dim", "depth-0",
    "zero-device-batch", "negative-device-batch", "zero-seq-len", "zero-total-batch", "negative-total-batch",
    "total-batch-not-a-multiple", "negative-iterations"])
def test_an_impossible_configuration_is_refused_before_training(files, tmp_path, flags, fragments):
    out = tmp_path / "run"
    result = invoke("train", "--data", str(files["corpus"]), "--tokenizer", str(files["tokenizer"]), *MODEL,
                    "--num-iterations=1", *flags, "--out", str(out))
    assert_one_line_error(result, 2, *fragments)
    assert not out.exists()  # refused before any work: no run folder, no tokenizer, nothing to clean up


def test_total_batch_size_must_be_a_multiple_of_the_world_size_too():
    """The rank count is part of the multiple (a CLI run has one rank, so this row is checked on the function)."""
    assert grad_accum_steps(4 * 32 * 2, 2, 32, world_size=2) == 2
    with pytest.raises(ConfigError, match=r"= 2 x 32 x 2 = 128; use --total-batch-size 128 \(or 256\)"):
        grad_accum_steps(192, 2, 32, world_size=2)


def test_a_vocabulary_smaller_than_the_minimum_is_refused(files, tmp_path):
    result = invoke("train", "--data", str(files["corpus"]), *MODEL, "--vocab-size=100", "--num-iterations=1",
                    "--out", str(tmp_path / "run"))
    assert_one_line_error(result, 2, "--vocab-size must be at least 265", "got 100")


def test_a_vocabulary_smaller_than_the_tokenizers_is_refused(files, tmp_path):
    result = invoke("train", "--data", str(files["corpus"]), "--tokenizer", str(files["tokenizer"]), *MODEL,
                    "--vocab-size=280", "--num-iterations=1", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, 2, "-token tokenizer but --vocab-size is 280", "drop --vocab-size")


# --- training text --------------------------------------------------------------------------------------------------


DATA_ROWS = [
    ("missing.txt", ["missing.txt does not exist; pass a text file, a folder of .txt/.md files or parquet shards"]),
    ("empty.txt", ["empty.txt is empty; put some text in it"]),
    ("binary.dat", ["binary.dat looks binary (NUL byte at offset 0); pass a UTF-8 text file"]),
    ("latin1.txt", ["latin1.txt is not UTF-8 (invalid byte 0xe9 at offset 3); convert it"]),
    ("tiny.txt", ["the token stream has", "but one batch needs 65", "use more data or a smaller batch size"]),
]


@pytest.mark.parametrize("name, fragments", DATA_ROWS, ids=["missing", "empty", "binary", "not-utf8",
                                                            "smaller-than-a-batch"])
def test_unusable_training_text_is_one_line(files, tmp_path, name, fragments):
    data = files["root"] / name
    before = data.read_bytes() if data.exists() else None
    result = invoke("train", "--data", str(data), "--tokenizer", str(files["tokenizer"]), *MODEL,
                    "--num-iterations=1", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, 2, *fragments)
    assert (data.read_bytes() if data.exists() else None) == before
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- checkpoints ----------------------------------------------------------------------------------------------------


def _truncate(folder: Path) -> None:
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[: len(data) // 2])


def _truncate_without_checksums(folder: Path) -> None:
    _truncate(folder)
    (folder / STATE_FILE).unlink()  # safetensors itself must notice


def _flip_a_byte(folder: Path) -> None:
    data = bytearray((folder / MODEL_FILE).read_bytes())
    data[-5] ^= 0xFF
    (folder / MODEL_FILE).write_bytes(bytes(data))


def _newer_format(folder: Path) -> None:
    state = json.loads((folder / STATE_FILE).read_text())
    state["format_version"] = 99
    (folder / STATE_FILE).write_text(json.dumps(state))


def _pickle_under_the_safetensors_name(folder: Path) -> None:
    torch.save({"w": torch.zeros(2)}, folder / MODEL_FILE)
    (folder / STATE_FILE).unlink()


CHECKPOINT_ROWS = {  # row -> (damage, what sample and train --resume say: both read the whole checkpoint first)
    "truncated": (_truncate, ["model.safetensors does not match its checksum in state.json; the file is corrupt"]),
    "truncated-no-checksums": (_truncate_without_checksums, ["is not a readable safetensors file",
                                                             "it is truncated or corrupt"]),
    "corrupted": (_flip_a_byte, ["model.safetensors does not match its checksum"]),
    "newer-format": (_newer_format, ["checkpoint format version 99, newer than this nanogpt reads (1); upgrade "
                                     "nanogpt"]),
    "pickle-as-safetensors": (_pickle_under_the_safetensors_name, ["is a PyTorch pickle, not safetensors; nanogpt "
                                                                   "never unpickles"]),
}


@pytest.fixture
def never_unpickle(monkeypatch):
    """Any attempt to unpickle fails the test: a refused pickle must not even be opened as one."""
    def never(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, never)


@pytest.mark.parametrize("command", ["sample", "resume"])
@pytest.mark.parametrize("row", sorted(CHECKPOINT_ROWS))
def test_a_bad_checkpoint_is_refused_and_left_as_it_is(files, tmp_path, never_unpickle, row, command):
    damage, fragments = CHECKPOINT_ROWS[row]
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    damage(latest_checkpoint(run))
    before = digest(run)
    if command == "sample":
        result = invoke("sample", str(run), "--max-tokens", "3")
    else:
        result = invoke("train", "--resume", str(run), "--num-iterations=4")
    assert_one_line_error(result, 2, *fragments)
    assert digest(run) == before  # the tool neither repaired nor deleted anything


def test_a_pt_file_or_a_folder_of_pickles_is_refused_unopened(files, tmp_path, never_unpickle):
    weights = load_checkpoint(files["run"]).model_state
    torch.save(weights, tmp_path / "model.pt")
    for target in (tmp_path / "model.pt", tmp_path):
        for args in (["sample", str(target)], ["train", "--resume", str(target)]):
            result = invoke(*args)
            assert_one_line_error(result, 2, "PyTorch pickle", "never unpickles")
    assert (tmp_path / "model.pt").is_file()


def test_a_checkpoint_of_another_shape_is_refused(files):
    before = digest(files["run"])
    result = invoke("train", "--resume", str(files["run"]), "--n-embd=128", "--num-iterations=4")
    assert_one_line_error(result, 2, "--n-embd 128 differs from the checkpoint's", "a resumed run keeps the model's "
                          "shape and data (drop the flag, or start a new run)")
    assert digest(files["run"]) == before


def test_a_missing_checkpoint_folder_is_one_line(tmp_path):
    for args in (["sample", str(tmp_path / "nope")], ["train", "--resume", str(tmp_path / "nope")]):
        assert_one_line_error(invoke(*args), 2, "no checkpoint at", "the path does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("sample", str(tmp_path / "empty")), 2, "no checkpoint in", "expected "
                          "model.safetensors or a run folder")
