"""Files written so that a crash never leaves half of one, and the other file mechanics every part shares.

Every file a run or a download leaves behind (checkpoints, the tokenizer, plots, results, manifests) is written the
same way: into a temporary file next to the target, flushed to disk (fsync), then renamed over the target. A rename
within one folder is atomic, so a reader (or a resumed run) sees the old file or the new one, never a torn one.
The temporary name is unique per writer, so two processes writing the same target never share a half-written file.

A run folder has one writer at a time (`RunFolder`: an flock the kernel releases when the process dies, however it
dies), and a run that stops before it has anything worth keeping leaves the folder as it found it. An OS error while
writing, whichever library raised it, is recognised by `os_error_of` and explained by `write_failure`.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanogpt_core.errors import ConfigError

try:
    import fcntl  # POSIX: flock
except ImportError:  # Windows: no lock (one writer per folder is then the user's to keep)
    fcntl = None

RUNS_DIR = "runs"  # where a run (or an experiment) goes when no --out is given
TMP_PREFIX = ".tmp-"  # temporaries start with this, so a folder listing can tell them from finished files
LOCK_FILE = ".nanogpt.lock"  # in a run folder while a process writes it: who that is
_CHUNK = 1 << 20


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to produce the file's content at a temporary path, then move it over `path` durably.

    `write` may use any library that writes to a path (safetensors, matplotlib, torch.save). On any failure the
    temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: Any, *, indent: int = 2) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=True) + "\n")


def save_figure(fig, path: str | Path) -> Path:
    """A matplotlib figure as PNG, written atomically (a reader never sees half a picture), then closed.

    Laid out tightly, unless the figure chose its own layout (`layout="constrained"`, which places suptitles and
    colorbars shared by a grid of panels where tight_layout would overlap them)."""
    import matplotlib.pyplot as plt  # late: matplotlib costs a second to import, and most commands draw nothing

    if fig.get_layout_engine() is None:
        fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def fsync_file(path: str | Path) -> None:
    """Make a file's bytes durable (they may otherwise sit in the page cache when the machine loses power)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename durable. Windows cannot open folders; there the rename is as durable as it gets."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    """The file's SHA-256 as hex, read in 1 MiB chunks (a multi-GB shard never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def display_path(path: str | Path) -> str:
    """A path as the user can type it from where they are: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def timestamped_folder(root: str | Path = RUNS_DIR, prefix: str = "") -> Path:
    """`root/<prefix><YYYYmmdd-HHMMSS>` (with -2, -3, ... when that exists): a new folder's name, not created."""
    stamp = prefix + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path(root) / stamp, 1
    while path.exists():
        n += 1
        path = Path(root) / f"{stamp}-{n}"
    return path


# --- OS errors, whoever raises them -----------------------------------------------------------------------------

# Rust libraries (safetensors) report an OS error inside their own exception type, in the words of Rust's
# io::Error: `I/O error: No space left on device (os error 28)`, or its debug form `Os { code: 28, ... }`.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")
# What to do about the OS errors a write meets in practice; anything else gets the strerror and "fix the cause".
WRITE_FIXES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (or raise your disk quota)",
    errno.EFBIG: "raise the file-size limit (ulimit -f) or free some space",
    errno.EROFS: "make the folder writable (it is on a read-only file system)",
    errno.EACCES: "make the folder writable",
    errno.EPERM: "make the folder writable",
    errno.EIO: "check the disk (it reported an I/O error)",
}


def os_error_of(exc: BaseException) -> OSError | None:
    """The OS error behind `exc`: itself, its cause (`raise ... from err`), or one a Rust library wrapped in its own
    exception type (safetensors' SafetensorError) that only its message tells; None for any other error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return exc
        m = _RUST_OS_ERROR.search(str(exc))
        if m:
            code = int(m.group(1) or m.group(2))
            return OSError(code, os.strerror(code))
        exc = exc.__cause__
    return None


def write_failure(error: OSError) -> tuple[str, str]:
    """(what went wrong, what to do about it) for an OS error met while writing, in words for one line."""
    text = (error.strerror or str(error)).rstrip(".")
    return text[:1].lower() + text[1:], WRITE_FIXES.get(error.errno, "fix the cause")


# --- run folders ---------------------------------------------------------------------------------------------


class RunFolder:
    """A run folder this process alone writes, from `__enter__` to `__exit__`.

    - `path` is checked first: a file, a path under a file, or a folder that cannot be created or written is one
      ConfigError naming the fix, before anything is written;
    - an exclusive `flock` on `path/.nanogpt.lock` keeps a second writer out; it is refused with the pid, host,
      start time and command of the one inside. The kernel drops the lock when the process ends, even by SIGKILL,
      so a lock file left behind never blocks anyone;
    - `fresh=True` (a default `runs/<timestamp>` name) takes the next free name instead of sharing one;
    - a run that fails before `keep()` (its first step, or its first checkpoint) leaves the folder as it found it:
      the folder is removed if the run made it; in a folder that was there, what the run added among the names it
      `writes` is removed (never anything else: `--out .` may be a folder others write in too), and what
      `set_aside` moved goes back.
    """

    def __init__(self, path: str | Path, *, fresh: bool = False, writes: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.fresh = fresh
        self.writes = set(writes)
        self._fd: int | None = None
        self._made: list[Path] = []  # folders this run created, deepest first
        self._before: set[str] = set()
        self._moved: list[tuple[Path, Path]] = []
        self._kept = False

    def __enter__(self) -> RunFolder:
        self._make()
        try:
            self._lock()
        except BaseException:
            self._remove_made()
            raise
        self._before = set(os.listdir(self.path)) - {LOCK_FILE}
        return self

    def keep(self) -> None:
        """The run has something worth keeping (a step taken, a checkpoint): never undo it from now on."""
        self._kept = True

    def set_aside(self, names: list[str], prefix: str = "earlier-run-") -> Path | None:
        """Move `names` (files of an earlier run) into a new `prefix<timestamp>/` subfolder, so this run starts
        clean without losing them; undone if this run stops before `keep()`. Returns that subfolder."""
        present = [name for name in names if (self.path / name).exists()]
        if not present:
            return None
        aside = timestamped_folder(self.path, prefix)
        aside.mkdir()
        for name in present:
            os.replace(self.path / name, aside / name)
            self._moved.append((self.path / name, aside / name))
        return aside

    def __exit__(self, exc_type, exc, tb) -> None:
        undo = exc_type is not None and not self._kept
        try:
            if undo:
                self._undo()
        finally:
            if undo:
                self._remove_made()  # while still holding the lock, so no other run is in there yet
            self._unlock()

    # --- the parts ---------------------------------------------------------------------------------------------

    def _make(self) -> None:
        """Create the folder (and missing parents), or say in one line why it cannot be a run folder."""
        for parent in [self.path, *self.path.parents]:
            if parent.exists() and not parent.is_dir():
                where = "is a file" if parent == self.path else f"is under {parent}, which is a file"
                raise ConfigError(f"--out {self.path} {where}; a run needs a folder: choose another --out.")
            if parent.exists():
                break
        base, n = self.path, 1
        try:
            for folder in reversed([p for p in self.path.parents if not p.exists()]):
                folder.mkdir(exist_ok=True)
                self._made.insert(0, folder)
            while True:
                try:
                    self.path.mkdir()
                    self._made.insert(0, self.path)
                    break
                except FileExistsError:
                    if not self.fresh:
                        break  # an existing folder: the run continues or reuses it
                    n += 1  # another run took this timestamp a moment ago: take the next name
                    self.path = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            self._remove_made()
            problem, fix = write_failure(exc)
            raise ConfigError(f"cannot create the run folder {self.path} ({problem}); {fix}, or choose another "
                              f"--out.") from exc

    def _lock(self) -> None:
        if fcntl is None:
            return
        lock = self.path / LOCK_FILE
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                problem, fix = write_failure(exc)
                raise ConfigError(f"cannot write in the run folder {self.path} ({problem}); {fix}, or choose "
                                  f"another --out.") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(f"{self.path} is in use by another run ({_lock_holder(lock)}); wait for it to "
                                  f"finish or stop it, or choose another --out.") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed this lock file as we opened it: lock the new one
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": dt.datetime.now().isoformat(timespec="seconds"), "command": _command_line()}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
        self._fd = fd

    def _unlock(self) -> None:
        if self._fd is None:
            return
        Path(self.path / LOCK_FILE).unlink(missing_ok=True)  # while still holding it, so no one locks a dead file
        os.close(self._fd)
        self._fd = None

    def _undo(self) -> None:
        """Remove what this run added, put back what it set aside."""
        moved_to = {aside.parent.name for _, aside in self._moved}
        for name in (set(os.listdir(self.path)) & self.writes) - self._before:
            _remove(self.path / name)
        for original, aside in reversed(self._moved):
            os.replace(aside, original)
        for name in moved_to:
            _remove(self.path / name)

    def _remove_made(self) -> None:
        """Remove the folders this run created: the run folder with all in it, then parents left empty."""
        for folder in self._made:  # deepest first; a parent someone else put something in stays
            try:
                if folder == self.path:
                    shutil.rmtree(folder)
                else:
                    folder.rmdir()
            except OSError:
                break
        self._made = []


def _command_line() -> str:
    """This process's command as its user typed it: `nanogpt train ...`, or `python -m nanogpt_cli train ...`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    program = f"python -m {spec.name.removesuffix('.__main__')}" if spec is not None else Path(sys.argv[0]).name
    return f"{program} {shlex.join(sys.argv[1:])}".strip()


def _lock_holder(lock: Path) -> str:
    """`pid 123 on host, since 2025-01-01T12:00:00: nanogpt train ...` from a lock file (being written: retried)."""
    for _ in range(20):
        try:
            holder = json.loads(lock.read_text(encoding="utf-8"))
            return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}: {holder['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "a process that has not said who it is"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
