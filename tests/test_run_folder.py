"""`files.RunFolder`: one writer per run folder (an flock the kernel drops with the process), a folder that cannot be
a run folder refused in one line, and a run that stops before its first step leaving the folder as it found it.
The same, end to end with real processes, is in test_reliability_processes.py."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from nanogpt_core.errors import ConfigError
from nanogpt_core.files import LOCK_FILE, RunFolder, os_error_of, write_failure


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path):
    run = tmp_path / "run"
    with RunFolder(run):
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        # flock belongs to an open file: a second RunFolder is a second writer even in the same process
        with pytest.raises(ConfigError, match=rf"{run} is in use by another run \(pid {os.getpid()} on .*\); wait "
                                              rf"for it to finish or stop it, or choose another --out"):
            with RunFolder(run):
                pass
        assert run.is_dir()  # the refused writer removed nothing
    assert not (run / LOCK_FILE).exists()  # released and removed at the end
    with RunFolder(run):  # and free again
        pass


def test_a_stale_lock_file_never_blocks(tmp_path):
    """A writer killed with SIGKILL leaves its lock file behind, but not its lock: the kernel dropped that."""
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "since": "then", "command": "x"}))
    with RunFolder(run):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_fresh_default_name_taken_by_another_run_moves_on(tmp_path):
    (tmp_path / "20250101-120000").mkdir()
    with RunFolder(tmp_path / "20250101-120000", fresh=True) as folder:
        assert folder.path == tmp_path / "20250101-120000-2"
        folder.keep()


def test_a_run_that_stops_before_its_first_step_leaves_no_folder(tmp_path):
    run = tmp_path / "runs" / "20250101-120000"
    with pytest.raises(RuntimeError):
        with RunFolder(run, fresh=True):
            (run / "tokenizer").mkdir()
            (run / "config.json").write_text("{}")
            raise RuntimeError("a TODO in a student component")
    assert not (tmp_path / "runs").exists()  # the folder and the runs/ it had to create


def test_a_kept_run_stays_when_it_fails_later(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunFolder(run) as folder:
            (run / "metrics.jsonl").write_text("{}\n")
            folder.keep()
            raise RuntimeError("diverged at step 500")
    assert (run / "metrics.jsonl").is_file()


def test_an_existing_folder_gets_back_what_it_held(tmp_path):
    run = tmp_path / "run"
    (run / "tokenizer").mkdir(parents=True)
    (run / "tokenizer" / "tokenizer.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 0, "type": "train"}\n')
    (run / "notes.txt").write_text("mine")
    before = digest(run)
    with pytest.raises(RuntimeError):
        with RunFolder(run, writes=("metrics.jsonl", "loss.png", "config.json")) as folder:
            aside = folder.set_aside(["metrics.jsonl", "config.json"])
            assert aside is not None and (aside / "metrics.jsonl").is_file() and not (run / "metrics.jsonl").exists()
            (run / "metrics.jsonl").write_text("new\n")
            (run / "loss.png").write_bytes(b"png")
            (run / "editor.swp").write_text("someone else's")  # `--out .`: others write in this folder too
            raise RuntimeError("stopped before step 0")
    assert (run / "editor.swp").read_text() == "someone else's"
    (run / "editor.swp").unlink()
    assert digest(run) == before and sorted(os.listdir(run)) == ["metrics.jsonl", "notes.txt", "tokenizer"]


@pytest.mark.parametrize("case", ["a-file", "under-a-file"])
def test_an_out_that_cannot_be_a_folder_is_one_line(tmp_path, case):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    out = file if case == "a-file" else file / "run"
    expected = "is a file" if case == "a-file" else f"is under {file}, which is a file"
    with pytest.raises(ConfigError, match=f"--out {out} {expected}; a run needs a folder: choose another --out"):
        with RunFolder(out):
            pass
    assert file.read_text() == "keep me"


def test_os_errors_are_found_whoever_raised_them():
    from safetensors import SafetensorError

    # safetensors' own words for a full disk (seen on a 1 MB tmpfs), and the debug form of Rust's io::Error
    for text in ("Error while serializing: I/O error: No space left on device (os error 28)",
                 'IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'):
        error = os_error_of(SafetensorError(text))
        assert error is not None and error.errno == errno.ENOSPC
        assert write_failure(error) == ("no space left on device", "free some space")
    assert os_error_of(RuntimeError("wrapped")) is None
    try:
        try:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        except OSError as exc:
            raise RuntimeError("while saving") from exc
    except RuntimeError as exc:
        assert os_error_of(exc).errno == errno.EFBIG
    assert write_failure(OSError(errno.EFBIG, os.strerror(errno.EFBIG)))[1].startswith("raise the file-size limit")
