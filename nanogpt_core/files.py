"""Files written so that a crash never leaves half of one, and the other file mechanics every part shares.

Every file a run or a download leaves behind (checkpoints, the tokenizer, plots, results, manifests) is written the
same way: into a temporary file next to the target, flushed to disk (fsync), then renamed over the target. A rename
within one folder is atomic, so a reader (or a resumed run) sees the old file or the new one, never a torn one.
The temporary name is unique per writer, so two processes writing the same target never share a half-written file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUNS_DIR = "runs"  # where a run (or an experiment) goes when no --out is given
TMP_PREFIX = ".tmp-"  # temporaries start with this, so a folder listing can tell them from finished files
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
