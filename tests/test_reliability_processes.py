"""Real life that needs real processes: SIGTERM (what SLURM, Kubernetes and `kill` send before SIGKILL), also under
torchrun; two runs started on one folder, the first then killed with SIGKILL; a filesystem that really fills up
(a few-MB tmpfs in a mount namespace of our own, or, where the machine allows no mount, a file-size limit, which
makes writes fail with EFBIG as a full disk fails them with ENOSPC); a process memory limit; a read-only folder (as
a user without root's rights: root writes into a folder whatever its mode says)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_learner_support import _one_thread  # noqa: F401
from test_reliability_cli import MODEL as CLI_MODEL
from test_reliability_cli import TEXT

from nanogpt_cli.main import cli
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.files import LOCK_FILE
from nanogpt_core.io.checkpoint import load_checkpoint
from nanogpt_core.train.run_log import read_metrics

MODEL = [*CLI_MODEL, "--seed=3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("processes")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    Tokenizer.train([TEXT], 300).save(root / "tokenizer")
    return {"corpus": root / "text.txt", "tokenizer": root / "tokenizer"}


def train_cmd(data, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nanogpt_cli", "train", "--data", str(data["corpus"]), "--tokenizer",
            str(data["tokenizer"]), *MODEL, "--out", str(out), *extra]


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kwargs)


def wait_for(proc: subprocess.Popen, prefix: str, timeout: float = 120) -> list[str]:
    """Read stdout until a line starts with `prefix` (plain lines: stdout is not a terminal)."""
    lines, deadline = [], time.time() + timeout
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix) or time.time() > deadline:
            return lines
    raise AssertionError("".join(lines) + proc.stderr.read())


def train_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run) if r["type"] == "train"]


# --- SIGTERM ------------------------------------------------------------------------------------------------------


def test_sigterm_saves_at_the_step_boundary_and_exits_143(data, tmp_path):
    """Was: exit 143 with nothing saved and no message, so a job killed by its time limit lost everything."""
    run = tmp_path / "run"
    proc = start(train_cmd(data, run, "--num-iterations=100000"))
    lines = wait_for(proc, "step 00002/")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    out = "".join(lines) + out
    assert proc.returncode == 143, out + err
    step = load_checkpoint(run).step
    assert f"Stopped by SIGTERM at step {step}: checkpoint saved to {run / 'checkpoints' / f'step_{step:06d}'}" in out
    assert f"Continue with: nanogpt train --resume {run}" in out
    assert err.strip() == "Terminated." and step >= 2
    assert train_steps(run) == list(range(step))
    assert not (run / LOCK_FILE).exists()


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_once_for_all_ranks(data, tmp_path):
    """torchrun forwards SIGTERM to every worker (one after the other) and waits --shutdown_timeout (30 s) before
    SIGKILL: every rank stops at the same step boundary, rank 0 saves, and each worker exits 143."""
    run = tmp_path / "run"
    env = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanogpt_cli",
           *train_cmd(data, run, "--num-iterations=100000", "--total-batch-size=128")[3:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = wait_for(proc, "step 00003/", timeout=180)
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    step = load_checkpoint(run).step  # loads with every checksum
    assert f"Stopped by SIGTERM at step {step}: checkpoint saved" in out, out[-3000:]
    assert "Continue with: torchrun --nproc_per_node=2 -m nanogpt_cli train --resume" in out
    assert out.count("Terminated.") == 1  # rank 0 alone reports
    assert train_steps(run) == list(range(step))
    resume = [sys.executable, "-m", "nanogpt_cli", "train", "--resume", str(run), f"--num-iterations={step + 2}"]
    resumed = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr  # one process continues a two-process run
    assert train_steps(run) == list(range(step + 2))


# --- two writers, and a stale lock --------------------------------------------------------------------------------


def test_a_second_run_on_a_busy_folder_is_refused_and_a_killed_ones_lock_never_blocks(data, tmp_path):
    """Was: no lock; the second run deleted the first's temporary checkpoint mid-save, metrics got duplicate steps."""
    run = tmp_path / "run"
    first = start(train_cmd(data, run, "--num-iterations=100000"))
    wait_for(first, "step 00002/")
    second = subprocess.run(train_cmd(data, run, "--num-iterations=3"), capture_output=True, text=True, env=ENV,
                            timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {run} is in use by another run (pid {first.pid} on ")
    assert f": python -m nanogpt_cli train --data {data['corpus']}" in lines[0]
    assert lines[0].endswith(f"--out {run} --num-iterations=100000); wait for it to finish or stop it, or choose "
                             f"another --out.")
    assert first.poll() is None  # the first run trains on, undisturbed

    first.send_signal(signal.SIGKILL)  # killed without a chance to clean up: its lock file stays behind
    first.communicate(timeout=60)
    assert (run / LOCK_FILE).is_file() and json.loads((run / LOCK_FILE).read_text())["pid"] == first.pid
    third = CliRunner().invoke(cli, train_cmd(data, run, "--num-iterations=3")[3:])  # here: no third interpreter
    assert third.exit_code == 0, third.output  # the kernel dropped the dead process's lock
    assert "held the files of an earlier run that saved no checkpoint; moved them to" in third.stdout
    assert train_steps(run) == [0, 1, 2]  # each step once: the killed run's metrics were set aside


# --- a real full disk ---------------------------------------------------------------------------------------------


FULL_DISK = textwrap.dedent("""
    # Runs inside the small filesystem (argv[1]); prints what it saw as JSON. argv[2]: tmpfs (fill the disk) or
    # fsize (a file-size limit below the size of model.safetensors).
    import errno, json, os, resource, signal, sys
    from pathlib import Path
    from click.testing import CliRunner
    from nanogpt_cli.main import cli
    from nanogpt_core.io.checkpoint import load_checkpoint
    from nanogpt_core.train.run_log import read_metrics

    root, mode, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    run = root / "run"
    invoke = lambda *a: CliRunner().invoke(cli, list(a))
    seen = {"first": invoke("train", *args, "--out", str(run), "--num-iterations=2").exit_code}
    filler = root / "filler"
    if mode == "tmpfs":
        with open(filler, "wb", buffering=0) as f:  # fill every block, then give back 128 KB: room for the logs
            try:
                while True:
                    f.write(b"\\0" * 65536)
                    f.flush()
            except OSError as exc:
                seen["filled"] = exc.errno == errno.ENOSPC
        os.truncate(filler, max(0, filler.stat().st_size - 131072))
    else:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (131072, hard))
    full = invoke("train", "--resume", str(run), "--num-iterations=4")
    seen["full"] = {"exit": full.exit_code, "stderr": full.stderr, "exception": repr(full.exception)}
    seen["left"] = sorted(p.name for p in (run / "checkpoints").iterdir())
    seen["loads"] = load_checkpoint(run).step
    if mode == "tmpfs":
        filler.unlink()
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    seen["resumed"] = invoke("train", "--resume", str(run), "--num-iterations=4").exit_code
    seen["final"] = load_checkpoint(run).step
    seen["steps"] = [r["step"] for r in read_metrics(run) if r["type"] == "train"]
    print(json.dumps(seen))
""")


def _tmpfs_available(where: Path) -> bool:
    """Whether this machine lets us mount a tmpfs in a mount namespace of our own (root, or user namespaces on)."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', str(where)],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_a_disk_that_really_fills_up_keeps_the_last_checkpoint(data, tmp_path):
    """Was: `SafetensorError ... No space left on device` (exit 1): the one-line message with the resume command
    only fired for a plain OSError. A 4 MB tmpfs where the machine lets us mount one; a file-size limit otherwise
    (the same path through safetensors, with EFBIG for ENOSPC)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mode = "tmpfs" if _tmpfs_available(disk) else "fsize"
    (tmp_path / "full_disk.py").write_text(FULL_DISK)
    args = [str(disk), mode, "--data", str(data["corpus"]), "--tokenizer", str(data["tokenizer"]), *MODEL,
            "--save-every=2"]
    python = [sys.executable, str(tmp_path / "full_disk.py"), *args]
    # 4 MB: a checkpoint of the tiny model is ~1 MB (weights, optimizer state, tokenizer), the logs a few KB
    cmd = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=4m tmpfs "$0" && exec "$@"', str(disk), *python] \
        if mode == "tmpfs" else python
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    run = disk / "run"
    assert seen["first"] == 0 and seen.get("filled", True)
    full = seen["full"]
    assert full["exit"] == 2, full
    lines = full["stderr"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in full["stderr"], full
    problem = "no space left on device" if mode == "tmpfs" else "file too large"
    fix = "free some space" if mode == "tmpfs" else "raise the file-size limit (ulimit -f) or free some space"
    assert lines[0] == (f"Error: {problem} while saving step_000004 to {run / 'checkpoints'}; the last good "
                        f"checkpoint, {run / 'checkpoints' / 'step_000002'}, is intact; {fix} and continue with: "
                        f"nanogpt train --resume {run}"), lines[0]
    assert seen["left"] == ["latest", "step_000002"]  # no partial folder, no temporary
    assert seen["loads"] == 2  # the intact checkpoint loads, every checksum verified
    assert seen["resumed"] == 0 and seen["final"] == 4 and seen["steps"] == [0, 1, 2, 3]


# --- a memory limit, a read-only folder ---------------------------------------------------------------------------


def test_a_model_beyond_the_processs_memory_limit_is_refused_with_the_figure(tmp_path):
    """Was: under a memory limit, a panel blaming the *reference* attention (whose __init__ could not allocate)."""
    script = textwrap.dedent("""
        import resource, sys
        import torch  # what torch maps at import stays within the limit
        from nanogpt_cli.main import cli
        used = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize:"))) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (used + 2 * 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        cli(sys.argv[1:])
    """)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", script, "train", "--depth=16", "--device=cpu", "--out", str(out)],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: training this model (depth 16, width 1024"), proc.stderr
    assert "is free (this process's memory limit (ulimit -v)); use a smaller model, e.g. --depth" in lines[0]
    assert not out.exists()


def _read_only(folder: Path, command: list[str]) -> list[str] | None:
    """`command`, run where `folder` cannot be written: a read-only bind mount in a mount namespace of our own (root
    writes into any folder whatever its mode), or plain mode bits for anyone else; None where neither is possible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    if not shutil.which("unshare"):
        return None
    remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", remount, str(folder), *command]


@pytest.mark.parametrize("where", ["the-folder", "inside-it"])
def test_a_read_only_out_is_one_line(tmp_path, where):
    """Was: exit 1 with OSError text and no fix."""
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    out = folder if where == "the-folder" else folder / "new-run"
    command = _read_only(folder, [sys.executable, "-m", "nanogpt_cli", "train", "--device=cpu", "--out", str(out)])
    if command is None:
        pytest.skip("running as root without mount namespaces: no folder is read-only to us")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120)
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    problem = "read-only file system" if os.geteuid() == 0 else "permission denied"
    fix = "make the folder writable" + (" (it is on a read-only file system)" if os.geteuid() == 0 else "")
    doing = "write in" if where == "the-folder" else "create"
    assert lines[0] == f"Error: cannot {doing} the run folder {out} ({problem}); {fix}, or choose another --out."
    assert sorted(os.listdir(folder)) == ["notes.txt"]
