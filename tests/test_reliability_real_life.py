"""Real life at the command line, beyond the first table of docs/reliability.md: resuming past the end, runs that
stop before their first step, a folder another run is writing, a disk that fills up while the logs are written,
flags that are NaN or out of range, models too big for the machine, tampered checkpoint and tokenizer files,
`sys.exit` inside a component, and the commands nanogpt prints. Each ends with the documented exit code and one line
naming the problem and the fix (no traceback), and leaves every file that existed before intact and loadable.

The cases that need a real process (SIGTERM, two processes, a real full filesystem, a memory limit) are in
test_reliability_processes.py."""

from __future__ import annotations

import base64
import errno
import hashlib
import importlib
import json
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_learner_support import REFERENCE_PARTS, _one_thread, make_set, registered  # noqa: F401
from test_reliability_cli import MODEL, TEXT, assert_one_line_error, digest, invoke

import nanogpt_impls.reference as ref
from nanogpt_core.data.tokenizer import RANKS_FILE, Tokenizer
from nanogpt_core.files import RunFolder
from nanogpt_core.io.checkpoint import MODEL_FILE, STATE_FILE, latest_checkpoint, load_checkpoint
from nanogpt_core.train.run_log import METRICS_FILE, RunLog, read_metrics


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A corpus, its tokenizer, and a finished 5-step run with checkpoints at steps 3 and 5."""
    root = tmp_path_factory.mktemp("real_life")
    corpus = root / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    Tokenizer.train([TEXT], 300).save(root / "tokenizer")
    run = root / "run"
    result = invoke(*train_args(corpus, root / "tokenizer", run, "--num-iterations=5", "--save-every=3"))
    assert result.exit_code == 0, result.output
    return {"root": root, "corpus": corpus, "tokenizer": root / "tokenizer", "run": run}


def train_args(corpus: Path, tokenizer: Path | None, out: Path, *extra: str) -> list[str]:
    tok = ["--tokenizer", str(tokenizer)] if tokenizer else []
    return ["train", "--data", str(corpus), *tok, *MODEL, "--seed=3", "--out", str(out), *extra]


def copy_run(files, tmp_path: Path, name: str = "run") -> Path:
    run = tmp_path / name
    shutil.copytree(files["run"], run)
    return run


def steps_logged(run: Path, kind: str = "train") -> list[int]:
    return [r["step"] for r in read_metrics(run) if r["type"] == kind]


# --- resuming -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resume_from, flags, fragment", [
    ("run", ["--num-iterations=3"], "the checkpoint is at step 5 and --num-iterations is 3, so no step is left"),
    ("step_000003", ["--num-iterations=2"], "the checkpoint is at step 3 and --num-iterations is 2"),
    ("run", [], "the checkpoint is at step 5 and --num-iterations is 5 (the run is finished)"),
], ids=["fewer-than-done", "from-3-with-2", "finished"])
def test_resuming_with_no_step_left_is_refused(files, tmp_path, resume_from, flags, fragment):
    """Was: 'step 02821/00003 lrm -2817', training forever on a negative learning rate; or a ZeroDivisionError."""
    run = copy_run(files, tmp_path)
    target = run if resume_from == "run" else run / "checkpoints" / resume_from
    before = digest(run)
    line = assert_one_line_error(invoke("train", "--resume", str(target), *flags), 2, fragment,
                                 "train further with a larger --num-iterations, e.g. nanogpt train --resume")
    assert digest(run) == before
    # the command in the message works as printed
    command = shlex.split(line.split("e.g. ", 1)[1].split(", or sample", 1)[0])
    assert invoke(*command[1:]).exit_code == 0
    assert load_checkpoint(run).step == int(command[-1])


def test_a_resumed_run_logs_every_step_once(files, tmp_path):
    """A run killed after step 5 whose last checkpoint is step 4: metrics.jsonl holds steps 4 and 5 already. A
    resume that fails at once leaves the file as it was; the one that runs writes each step exactly once."""
    run = tmp_path / "run"
    assert invoke(*train_args(files["corpus"], files["tokenizer"], run, "--num-iterations=6", "--save-every=2",
                              "--eval-every=2")).exit_code == 0
    (run / "checkpoints" / "latest").write_text("step_000004\n")  # as if killed before the save at step 6
    metrics = (run / METRICS_FILE).read_bytes()

    with registered(make_set("todo-mlp", dict(REFERENCE_PARTS, mlp=_TodoMLP)), "test-todo-mlp"):
        failed = invoke("train", "--resume", str(run), "--use", "todo-mlp:mlp", "--num-iterations=8")
    assert failed.exit_code == 3, failed.output
    assert (run / METRICS_FILE).read_bytes() == metrics  # nothing cut before the run had something to write

    assert invoke("train", "--resume", str(run), "--num-iterations=8", "--eval-every=3").exit_code == 0
    assert steps_logged(run) == list(range(8))
    # the evaluation at the checkpoint's step (before its save) stays; the others are the resumed run's own
    assert steps_logged(run, "eval") == [0, 2, 4, 6, 8]


class _TodoMLP(ref.MLP):
    def forward(self, x):
        raise NotImplementedError("TODO: Implement MLP.forward (Reference: impls/reference/mlp.py)")


def _earlier_run_without_a_checkpoint(folder: Path) -> dict[str, str]:
    """What a run killed by a timeout before its first save leaves: logs, a plot, its config, no checkpoints."""
    folder.mkdir(parents=True)
    (folder / METRICS_FILE).write_text("".join(json.dumps({"type": "train", "step": s, "loss": 5.0}) + "\n"
                                               for s in range(223)))
    (folder / "config.json").write_text("{}\n")
    (folder / "loss.png").write_bytes(b"\x89PNG old plot")
    (folder / "samples.txt").write_text("=== step 100 ===\n")
    return digest(folder)


def test_a_run_in_a_folder_without_a_checkpoint_starts_clean_and_keeps_the_old_files(files, tmp_path):
    """Was: the new run appended to the old metrics.jsonl (223 steps twice) and the plot drew a line back to 0."""
    run = tmp_path / "run"
    old = _earlier_run_without_a_checkpoint(run)
    result = invoke(*train_args(files["corpus"], files["tokenizer"], run, "--num-iterations=3"))
    assert result.exit_code == 0, result.output
    assert "held the files of an earlier run that saved no checkpoint; moved them to" in result.stdout
    assert steps_logged(run) == [0, 1, 2]
    [aside] = [p for p in run.iterdir() if p.name.startswith("earlier-run-")]
    assert digest(aside) == old  # nothing of the earlier run is lost


def test_a_run_that_fails_before_its_first_step_puts_the_old_files_back(files, tmp_path):
    run = tmp_path / "run"
    old = _earlier_run_without_a_checkpoint(run)
    with registered(make_set("todo-mlp", dict(REFERENCE_PARTS, mlp=_TodoMLP)), "test-todo-mlp"):
        result = invoke(*train_args(files["corpus"], files["tokenizer"], run, "--num-iterations=3", "--use",
                                    "todo-mlp:mlp"))
    assert result.exit_code == 3, result.output
    assert digest(run) == old


def test_a_run_that_stops_at_a_todo_leaves_no_run_folder(files, tmp_path, monkeypatch):
    """Was: a runs/<timestamp>/ folder per attempt (20 after one afternoon of learning)."""
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = invoke("train", "--data", str(files["corpus"]), "--tokenizer", str(files["tokenizer"]), *MODEL,
                        "--num-iterations=3", "--use", "student:mlp")
        assert result.exit_code == 3, result.output
    assert not (tmp_path / "runs").exists()


# --- one writer per folder, and disks that fill up -----------------------------------------------------------------


def test_a_folder_another_run_is_writing_is_refused_naming_it(files, tmp_path):
    run = copy_run(files, tmp_path)
    before = digest(run)
    with RunFolder(run):  # another process would hold the same lock; see test_reliability_processes.py
        result = invoke("train", "--resume", str(run), "--num-iterations=8")
        assert_one_line_error(result, 2, f"{run} is in use by another run (pid {os.getpid()} on ",
                              "wait for it to finish or stop it, or choose another --out")
    assert digest(run) == before


def test_a_disk_that_fills_up_while_the_logs_are_written_is_one_line(files, tmp_path, monkeypatch):
    real = RunLog.metrics

    def full_at_step_3(self, record):
        if record["type"] == "train" and record["step"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, record)

    monkeypatch.setattr(RunLog, "metrics", full_at_step_3)
    run = tmp_path / "run"
    result = invoke(*train_args(files["corpus"], files["tokenizer"], run, "--num-iterations=5", "--save-every=2"))
    assert_one_line_error(result, 2, f"no space left on device while writing the run's files in {run}; the last "
                                     f"good checkpoint, {run / 'checkpoints' / 'step_000002'}, is intact; free some "
                                     f"space and continue with: nanogpt train --resume {run}")
    monkeypatch.setattr(RunLog, "metrics", real)
    assert invoke("train", "--resume", str(run)).exit_code == 0
    assert steps_logged(run) == list(range(5))


# --- flags and configurations: checked before any work --------------------------------------------------------------


BAD_FLAGS = {
    "matrix-lr-nan": ("--matrix-lr=nan", "--matrix-lr must be a finite number >= 0, got nan; try --matrix-lr 0.02 "
                                         "(the default)"),
    "negative-embedding-lr": ("--embedding-lr=-0.1", "--embedding-lr must be a finite number >= 0, got -0.1"),
    "weight-decay-inf": ("--weight-decay=inf", "--weight-decay must be a finite number >= 0, got inf"),
    "grad-clip-nan": ("--grad-clip=nan", "--grad-clip must be a finite number >= 0, got nan"),
    "warmup-ratio-2": ("--warmup-ratio=2", "--warmup-ratio is a fraction and must be between 0 and 1, got 2.0"),
    "warmdown-ratio-negative": ("--warmdown-ratio=-1", "--warmdown-ratio is a fraction and must be between 0 and 1, "
                                                       "got -1.0"),
    "final-lr-frac-nan": ("--final-lr-frac=nan", "--final-lr-frac is a fraction and must be between 0 and 1, got nan"),
    "eval-tokens-0": ("--eval-tokens=0", "--eval-tokens must be an integer >= 1, got 0"),
    "save-every-negative": ("--save-every=-5", "--save-every must be a number of steps, or -1 for only at the end; "
                                               "got -5"),
    "seed-too-big": ("--seed=100000000000000000000", "--seed must be an integer from 0 to 2**64 - 1"),
    "n-head-3": ("--n-head=3", "n_embd (128) must be divisible by n_head (3)"),
}


@pytest.mark.parametrize("row", list(BAD_FLAGS))
def test_a_bad_flag_is_refused_before_any_work(files, tmp_path, row):
    """No tokenizer given, so any work would start by training one: the error comes first, with no folder made."""
    flag, fragment = BAD_FLAGS[row]
    out = tmp_path / "run"
    result = invoke("train", "--data", str(files["corpus"]), "--num-iterations=2", "--vocab-size=300", flag,
                    "--out", str(out))
    assert_one_line_error(result, 2, fragment)
    assert result.stdout == "" and not out.exists()


def test_a_model_too_big_for_the_machine_is_refused_with_what_fits(files, tmp_path):
    result = invoke("train", "--data", str(files["corpus"]), "--depth=1000", "--out", str(tmp_path / "run"))
    line = assert_one_line_error(result, 2, "training this model (depth 1000, width 64000", "is free (")
    depth = int(line.rsplit("--depth ", 1)[1].rstrip("."))
    assert 1 <= depth < 1000  # the largest depth that fits here, with the same batch


@pytest.mark.parametrize("flags, fragment", [
    (["--temperature", "nan"], "--temperature must be >= 0 (0 is greedy), got nan"),
    (["--seed", "100000000000000000000"], "--seed must be an integer from 0 to 2**64 - 1"),
    (["--top-k", "100000"], "--top-k 100000 is more than the model's 293 tokens; use --top-k 293 or less"),
], ids=["temperature-nan", "seed-too-big", "top-k-beyond-the-vocabulary"])
def test_sample_flags_are_refused_without_blaming_generate(files, flags, fragment):
    result = invoke("sample", str(files["run"]), "--max-tokens", "3", *flags)
    assert_one_line_error(result, 2, fragment)
    assert result.stdout == ""


def test_a_seed_that_is_not_an_integer_is_a_usage_error(files):
    result = invoke("sample", str(files["run"]), "--seed", "1e20")
    assert result.exit_code == 2 and "'1e20' is not a valid integer" in result.output
    assert "Traceback" not in result.output and "generate" not in result.output


@pytest.mark.parametrize("case", ["a-file", "under-a-file"])
def test_an_out_that_cannot_be_a_run_folder_is_one_line(files, tmp_path, case):
    """Was: exit 1 with FileExistsError / NotADirectoryError text and no fix. (A read-only folder:
    test_reliability_processes.py, as a user without root's rights.)"""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    out = notes if case == "a-file" else notes / "run"
    result = invoke(*train_args(files["corpus"], files["tokenizer"], out, "--num-iterations=1"))
    assert_one_line_error(result, 2, "is a file" if case == "a-file" else "which is a file", "choose another --out")
    assert notes.read_text() == "keep me"


# --- tampered checkpoints and tokenizers --------------------------------------------------------------------------


def _rewrite_model(folder: Path, config=None, weights=None) -> None:
    """Rewrite model.safetensors with edited metadata or weights, and its checksum too: a deliberate edit."""
    path = folder / MODEL_FILE
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if config:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    tensors.update(weights(tensors) if weights else {})
    save_file(tensors, str(path), metadata=meta)
    state = json.loads((folder / STATE_FILE).read_text())
    state["files"][MODEL_FILE] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / STATE_FILE).write_text(json.dumps(state))


def _edit_state(change):
    def edit(folder: Path) -> None:
        state = json.loads((folder / STATE_FILE).read_text())
        (folder / STATE_FILE).write_text(json.dumps(change(state)))
    return edit


def _nan_weight(tensors):
    weight = tensors["transformer.h.0.mlp.c_fc.weight"].clone()
    weight[0, 0] = float("nan")
    return {"transformer.h.0.mlp.c_fc.weight": weight}


TAMPERED = {  # row -> (edit of the latest checkpoint, what `sample` says (None: it samples), what resuming says)
    "state-is-a-list": (_edit_state(lambda s: []), "state.json holds a JSON list where nanogpt writes an object",
                        "state.json holds a JSON list where nanogpt writes an object"),
    "format-version-not-a-number": (_edit_state(lambda s: {**s, "format_version": "one"}),
                                    "has format version 'one', not a whole number; the file is damaged",
                                    "has format version 'one', not a whole number; the file is damaged"),
    "format-version-a-float": (_edit_state(lambda s: {**s, "format_version": 1.5}),
                               "has format version 1.5, not a whole number", "has format version 1.5"),
    "no-rng": (_edit_state(lambda s: {k: v for k, v in s.items() if k != "rng"}),
               None, "state.json is damaged: its 'rng' entry is missing (dict expected)"),
    "rng-garbled": (_edit_state(lambda s: {**s, "rng": {**s["rng"], "torch_cpu": "bm90IGEgc3RhdGU="}}),
                    None, "the random-number state in state.json is damaged (RuntimeError"),
    "loader-a-string": (_edit_state(lambda s: {**s, "train_loader": "start"}),
                        None, "its 'train_loader' entry is a str (dict expected)"),
    "n-layer-100000": (lambda f: _rewrite_model(f, config={"n_layer": 100000}),
                       "is damaged: its metadata says n_layer 100000, but its weights hold 1 layer(s)",
                       "is damaged: its metadata says n_layer 100000, but its weights hold 1 layer(s)"),
    "vocab-edited": (lambda f: _rewrite_model(f, config={"vocab_size": 50304}),
                     "its metadata says vocab_size 50304 and n_embd 64, but transformer.wte.weight is (293, 64)",
                     "its metadata says vocab_size 50304 and n_embd 64, but transformer.wte.weight is (293, 64)"),
    "context-of-a-billion": (lambda f: _rewrite_model(f, config={"sequence_len": 10**9}),
                             "needs at least", "needs at least"),
    "nan-weights": (lambda f: _rewrite_model(f, weights=_nan_weight),
                    "holds NaN or Inf in transformer.h.0.mlp.c_fc.weight; nothing can be sampled or trained from it",
                    "holds NaN or Inf in transformer.h.0.mlp.c_fc.weight"),
}


@pytest.mark.parametrize("command", ["sample", "resume"])
@pytest.mark.parametrize("row", sorted(TAMPERED))
def test_a_tampered_checkpoint_is_one_line_and_left_as_it_is(files, tmp_path, row, command):
    edit, for_sample, for_resume = TAMPERED[row]
    run = copy_run(files, tmp_path)
    edit(latest_checkpoint(run))
    before = digest(run)
    if command == "sample":
        result = invoke("sample", str(run), "--max-tokens", "3")
        if for_sample is None:  # sampling does not read what was damaged
            assert result.exit_code == 0, result.output
            return
        assert_one_line_error(result, 2, for_sample)
    else:
        assert_one_line_error(invoke("train", "--resume", str(run), "--num-iterations=8"), 2, for_resume)
    assert digest(run) == before


def _tamper_ranks(edit):
    def tamper(folder: Path) -> None:
        lines = (folder / RANKS_FILE).read_text().splitlines()
        (folder / RANKS_FILE).write_text("\n".join(edit(lines)) + "\n")
    return tamper


STRANGER = base64.b64encode(b"\xff\xfe\xfd").decode()  # a byte string no tokenizer here has
TOKENIZER_TAMPERING = {  # row -> (edit of tokenizer.tiktoken (284 ranks), what follows "is damaged: ")
    # a rank used twice: tiktoken's constructor panics ("Encoder and decoder must be of equal length")
    "duplicate-rank": (_tamper_ranks(lambda ls: [ls[0], ls[1].split()[0] + " 0", *ls[2:]]),
                       "ranks must be 0..283, each once (found 0 out of place)"),
    # the byte 'a' replaced by another token of its rank: tiktoken panics when encoding ("no entry found for key")
    "missing-byte": (_tamper_ranks(lambda ls: [*ls[:97], f"{STRANGER} 97", *ls[98:]]),
                     "the single byte 0x61 has no rank (byte-level BPE needs all 256)"),
    "rank-too-big": (_tamper_ranks(lambda ls: [*ls[:-1], ls[-1].split()[0] + " 10000000000"]),
                     "ranks must be 0..283, each once (found 10000000000 out of place)"),
    "rank-1e10": (_tamper_ranks(lambda ls: [*ls[:-1], ls[-1].split()[0] + " 1e10"]),
                  "line 284 is not 'base64-token rank'"),
    "not-ascii": (_tamper_ranks(lambda ls: [*ls[:5], "\u00e9t\u00e9 !!", *ls[5:]]),
                  "UnicodeDecodeError: 'ascii' codec can't decode byte"),
}


@pytest.mark.parametrize("command", ["sample", "resume", "train-tokenizer"])
@pytest.mark.parametrize("row", sorted(TOKENIZER_TAMPERING))
def test_a_tampered_tokenizer_is_one_line(files, tmp_path, row, command):
    """Was: tiktoken's PanicException (a BaseException, past every `except Exception`) and ~200 lines of trace."""
    tamper, fragment = TOKENIZER_TAMPERING[row]
    if command == "train-tokenizer":
        folder = tmp_path / "tokenizer"
        shutil.copytree(files["tokenizer"], folder)
        tamper(folder)
        before = digest(folder)
        out = tmp_path / "run"
        result = invoke(*train_args(files["corpus"], folder, out, "--num-iterations=1"))
        assert not out.exists()
    else:
        run = copy_run(files, tmp_path)
        folder = latest_checkpoint(run) / "tokenizer"
        tamper(folder)
        before = digest(run)
        args = ["sample", str(run), "--max-tokens", "3"] if command == "sample" else \
            ["train", "--resume", str(run), "--num-iterations=8"]
        result = invoke(*args)
    assert_one_line_error(result, 2, f"{folder / RANKS_FILE} is damaged: {fragment}",
                          "restore it from a copy (every checkpoint folder of a run holds one")
    assert digest(folder if command == "train-tokenizer" else run) == before


def test_a_tokenizer_panic_is_caught_whatever_the_check_misses(files, monkeypatch):
    """The last line of defence: whatever tiktoken raises, PanicException included, is the one-line error."""
    import tiktoken

    try:  # a real PanicException, from a rank used twice
        tiktoken.Encoding(name="x", pat_str=r"\w+", mergeable_ranks={b"a": 0, b"b": 0}, special_tokens={})
    except BaseException as exc:  # noqa: B036
        panic = exc
    assert not isinstance(panic, Exception)  # why `except Exception` did not catch it

    def panics(*args, **kwargs):
        raise panic

    monkeypatch.setattr(tiktoken, "Encoding", panics)
    result = invoke("sample", str(files["run"]), "--max-tokens", "3")
    assert_one_line_error(result, 2, "tokenizer.json is damaged: PanicException: Encoder and decoder must be of "
                                     "equal length")


# --- sys.exit inside components and plugins ---------------------------------------------------------------------


class _ExitingMLP(ref.MLP):
    def forward(self, x):
        sys.exit(0)


def test_a_component_that_calls_sys_exit_is_that_components_failure(files, tmp_path):
    """Was: exit 0, no message and no checkpoint, as if the run had succeeded."""
    run = copy_run(files, tmp_path)
    before = digest(run)
    with registered(make_set("exit-mlp", dict(REFERENCE_PARTS, mlp=_ExitingMLP)), "test-exit-mlp"):
        result = invoke("train", "--resume", str(run), "--use", "exit-mlp:mlp", "--num-iterations=8")
    assert result.exit_code == 4, result.output
    assert "Error in mlp.forward (exit-mlp)" in result.stderr and "SystemExit: 0" in result.stderr
    assert "must never end the program: sys.exit()" in result.stderr
    assert digest(run) == before


def test_a_component_file_that_calls_sys_exit_at_import_fails_alone(files, tmp_path):
    from nanogpt_core.model.component_files import load_set_from_dir

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "mlp.py").write_text("import sys\nsys.exit('needs CUDA')\n")
    with registered(load_set_from_dir("exit-at-import", mine, ["mlp"]), "test-exit-at-import"):
        result = invoke(*train_args(files["corpus"], files["tokenizer"], tmp_path / "run", "--num-iterations=1",
                                    "--use", "exit-at-import:mlp"))
    assert_one_line_error(result, 2, f"{mine / 'mlp.py'} does not import (SystemExit: needs CUDA, line 2)")
    assert not (tmp_path / "run").exists()


# --- commands nanogpt prints can be pasted ------------------------------------------------------------------------


def test_printed_commands_are_shell_quoted(files, tmp_path, monkeypatch):
    """Was: `nanogpt sample my run/ünï --prompt "The"`, which a shell splits at the space."""
    loop = importlib.import_module("nanogpt_core.train.loop")  # `nanogpt_core.train` is also the function

    run = tmp_path / "my run" / "ünï $HOME"
    real_take_step = loop._take_step

    def interrupted_at_step_2(run_, step, *args):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_take_step(run_, step, *args)

    monkeypatch.setattr(loop, "_take_step", interrupted_at_step_2)
    result = invoke(*train_args(files["corpus"], files["tokenizer"], run, "--num-iterations=4"))
    assert result.exit_code == 130, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith("Continue with: ")]
    assert shlex.split(line.removeprefix("Continue with: ")) == ["nanogpt", "train", "--resume", str(run)]
    monkeypatch.setattr(loop, "_take_step", real_take_step)

    result = invoke(*shlex.split(line.removeprefix("Continue with: "))[1:])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith("Sample it:")]
    command = shlex.split(line.removeprefix("Sample it:"))
    assert command[:3] == ["nanogpt", "sample", str(run)]
    assert invoke(*command[1:], "--max-tokens", "2").exit_code == 0


# --- out of memory, where the estimate could not see it coming ---------------------------------------------------

OOM = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 53687091200 bytes. Error code 12"


def test_out_of_memory_in_reference_code_is_one_line_not_a_panel(files, tmp_path, monkeypatch):
    """Was: a panel blaming the reference attention, whose allocation happened to be the one that failed."""
    def no_memory_left(*args, **kwargs):
        raise RuntimeError(OOM)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_memory_left)
    result = invoke(*train_args(files["corpus"], files["tokenizer"], tmp_path / "run", "--num-iterations=2"))
    assert_one_line_error(result, 2, f"out of memory (RuntimeError: {OOM}); the model or the batch is too large for "
                                     "this device: use a smaller --depth or --device-batch-size, or another --device")
    assert not (tmp_path / "run").exists()


class _GreedyMLP(ref.MLP):
    """Allocates what it should not (say, a (B, T, T, C) tensor): the memory error is this component's."""

    def forward(self, x):
        raise RuntimeError(OOM)


def test_out_of_memory_in_a_swapped_in_component_is_that_components_panel(files, tmp_path):
    with registered(make_set("greedy-mlp", dict(REFERENCE_PARTS, mlp=_GreedyMLP)), "test-greedy-mlp"):
        result = invoke(*train_args(files["corpus"], files["tokenizer"], tmp_path / "run", "--num-iterations=2",
                                    "--use", "greedy-mlp:mlp"))
    assert result.exit_code == 4, result.output
    assert "Error in mlp.forward (greedy-mlp)" in result.stderr and "can't allocate memory" in result.stderr
