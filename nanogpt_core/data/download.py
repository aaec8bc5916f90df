"""`nanogpt data download`: fetch a public dataset once, resumably, and prove it arrived intact.

Each file is streamed into `<name>.part`; an interrupted download continues from where it stopped with an HTTP Range
request, and only a complete file whose SHA-256 checks out is renamed to its final name (so a final name always
means a good file). Datasets with a published checksum are checked against it; for the others (FineWeb-edu shards)
the checksum of the first download is recorded in the dataset's `manifest.json` and checked on every later run.

Files land in `<data dir>/<dataset>/`, the data dir being `--dir`, else $NANOGPT_DATA_DIR, else
~/.cache/nanogpt/data. An archive (the CORE eval bundle, a zip) is unpacked next to itself once it checks out:
into a temporary folder first, every member's path checked to stay inside it (no absolute paths, no `..`, no
links), then moved into place, so a half-unpacked or hostile archive never leaves files behind.
$NANOGPT_DOWNLOAD_BASE_URL (or `base_url=`) replaces the hosts: files are then fetched from
`<base url>/<dataset>/<file>`, for a mirror, or for the tests' local server.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nanogpt_core.errors import ConfigError, DataError
from nanogpt_core.files import TMP_PREFIX, fsync_dir, sha256_file, write_json_atomic

ENV_DATA_DIR = "NANOGPT_DATA_DIR"
ENV_BASE_URL = "NANOGPT_DOWNLOAD_BASE_URL"
DEFAULT_DATA_DIR = "~/.cache/nanogpt/data"
MANIFEST = "manifest.json"
CHUNK_BYTES = 1 << 20
MAX_UNPACKED_BYTES = 16 << 30  # an archive that claims more than this is refused (a zip bomb, not a dataset)


@dataclass(frozen=True)
class Dataset:
    """A downloadable dataset: where its files live and what they must hash to (None where nobody publishes it)."""

    name: str
    description: str
    base_url: str
    file_pattern: str  # a file name, or a pattern with {i} for sharded datasets
    max_shards: int = 1
    default_shards: int = 1
    known: dict[str, tuple[int | None, str]] = field(default_factory=dict)  # file name -> (size or None, sha256)
    unpack: bool = False  # a zip archive, unpacked into the dataset's folder after it checks out
    next_step: str = "Train on it with: nanogpt train --data {target}"  # what the CLI suggests once it is here

    def file_names(self, shards: int | None = None) -> list[str]:
        if self.max_shards == 1:
            if shards not in (None, 1):
                raise ConfigError(f"{self.name} is a single file; leave out --shards")
            return [self.file_pattern]
        shards = self.default_shards if shards is None else shards
        if not 1 <= shards <= self.max_shards:
            raise ConfigError(f"--shards must be between 1 and {self.max_shards} for {self.name} (got {shards})")
        return [self.file_pattern.format(i=i) for i in range(shards)]


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="tinyshakespeare",
            description="Shakespeare's plays, 1.1 MB of plain text (karpathy/char-rnn)",
            base_url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare",
            file_pattern="input.txt",
            known={"input.txt": (1_115_394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")},
        ),
        Dataset(
            name="fineweb-edu",
            description="FineWeb-edu as nanochat pretrains on it: parquet shards of ~100 MB with a `text` column",
            base_url="https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main",
            file_pattern="shard_{i:05d}.parquet",
            max_shards=1823,  # shard_00000 .. shard_01822
        ),
        Dataset(
            name="core-eval",
            description="nanochat's CORE eval bundle (DCLM's 22 tasks: core.yaml, eval_meta_data.csv, eval_data/)",
            base_url="https://karpathy-public.s3.us-west-2.amazonaws.com",
            file_pattern="eval_bundle.zip",
            # nobody publishes it; this is the digest several independent projects record for this URL
            known={"eval_bundle.zip": (None, "90a7c19e28ee7a52b4f6e1f87658deb9fde7f63deba2379045bdb1fe9ea5d200")},
            unpack=True,
            next_step="Evaluate a checkpoint with: nanogpt eval RUN --core",
        ),
    )
}


def data_dir(directory: str | Path | None = None) -> Path:
    """Where datasets are kept: `directory`, else $NANOGPT_DATA_DIR, else ~/.cache/nanogpt/data."""
    return Path(directory or os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR).expanduser()


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def download_dataset(
    name: str,
    shards: int | None = None,
    directory: str | Path | None = None,
    base_url: str | None = None,
    progress: bool | None = None,
    retries: int = 3,
    retry_wait: float = 2.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download dataset `name` (its first `shards` shards) and return the folder holding it.

    Files already present and intact are not fetched again. `progress` shows a progress bar (default: when stderr is
    a terminal); `log` receives one line per file.
    """
    dataset = get_dataset(name)
    files = dataset.file_names(shards)
    base = (base_url or os.environ.get(ENV_BASE_URL) or "").rstrip("/")
    target = data_dir(directory) / dataset.name
    target.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(target)
    say = log or (lambda line: print(line, file=sys.stderr))
    show = sys.stderr.isatty() if progress is None else progress
    with _progress(show) as bar:
        for file_name in files:
            url = f"{base}/{dataset.name}/{file_name}" if base else f"{dataset.base_url}/{file_name}"
            size, sha = dataset.known.get(file_name, (None, None))
            previous = manifest.get(file_name, {})
            recorded = previous.get("sha256")
            digest, fetched = fetch_file(url, target / file_name, expected_sha256=sha or recorded,
                                         expected_size=size, bar=bar, retries=retries, retry_wait=retry_wait)
            entry = {"url": url, "size": (target / file_name).stat().st_size, "sha256": digest}
            how = "published checksum" if sha else ("recorded checksum" if recorded else "checksum recorded")
            say(f"{'downloaded' if fetched else 'already here'}: {target / file_name} "
                f"({entry['size']:,} bytes, sha256 {digest[:12]}…, {how})")
            unpacked = None if fetched or recorded != digest else previous.get("unpacked")
            manifest[file_name] = {**entry, "unpacked": unpacked} if unpacked else entry
            _write_manifest(target, manifest)
            if dataset.unpack and (not unpacked or not all((target / name).exists() for name in unpacked)):
                manifest[file_name]["unpacked"] = unpacked = unpack_zip(target / file_name, target)
                _write_manifest(target, manifest)
                say(f"unpacked: {', '.join(str(target / name) for name in unpacked)}")
    return target


def unpack_zip(archive: Path, target: Path) -> list[str]:
    """Unpack the zip `archive` into the folder `target`; return the top-level names it put there.

    Everything is extracted into a temporary folder inside `target` first, after every member is checked (a path
    that is absolute, climbs out with `..`, or is a link is refused, as is an archive that claims more than
    MAX_UNPACKED_BYTES); the top-level entries then replace any older copies. A failure leaves `target` as it was.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in members:
                _check_member(member, archive)
            claimed = sum(m.file_size for m in members)
            if claimed > MAX_UNPACKED_BYTES:
                raise DataError(f"{archive} claims {claimed:,} bytes unpacked (more than {MAX_UNPACKED_BYTES:,}); "
                                f"it is not the dataset, delete it and download again")
            staging = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}unpack-", dir=target))
            try:
                zf.extractall(staging)
                tops = sorted({m.filename.split("/")[0] for m in members if m.filename.strip("/")})
                for name in tops:
                    _replace(staging / name, target / name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"{archive} is not a readable zip ({exc}); delete it and download again") from None
    fsync_dir(target)
    return tops


def _check_member(member: zipfile.ZipInfo, archive: Path) -> None:
    """Refuse a member that would land outside the folder it is unpacked into, or that is a link."""
    name = member.filename
    parts = name.replace("\\", "/").split("/")
    escapes = name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts
    is_link = stat.S_ISLNK(member.external_attr >> 16)
    if escapes or is_link:
        raise DataError(f"{archive} holds {name!r}, which would be {'a link' if is_link else 'written outside'} "
                        f"the folder it is unpacked into; refusing it: delete the archive and download again")


def _replace(source: Path, dest: Path) -> None:
    """Move `source` over `dest`, the old `dest` (a file or a folder) out of the way first and then removed."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f"{TMP_PREFIX}old-{dest.name}-{os.getpid()}")
        os.replace(dest, old)
    os.replace(source, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def fetch_file(
    url: str,
    dest: Path,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    bar=None,
    retries: int = 3,
    retry_wait: float = 2.0,
) -> tuple[str, bool]:
    """Make `dest` a verified copy of `url`; return (its sha256, whether anything was downloaded).

    An existing `dest` that fails its checksum is removed and fetched again; a fresh download that fails it is a
    DataError (the file is removed, so the next run starts clean).
    """
    dest = Path(dest)
    if dest.exists():
        digest = sha256_file(dest)
        if expected_sha256 is None or digest == expected_sha256:
            return digest, False
        dest.unlink()  # corrupt or changed since it was recorded: fetch it again
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _fetch_into(url, part, bar)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise DataError(f"could not download {url}: HTTP {exc.code} {exc.reason}; check the dataset name "
                                f"and ${ENV_BASE_URL}") from None
            reason = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
        if attempt == retries:
            raise DataError(f"could not download {url} ({reason}) after {retries} attempts; run the same command "
                            f"again to resume from the {part.stat().st_size if part.exists() else 0:,} bytes kept "
                            f"in {part}")
        time.sleep(retry_wait * 2 ** (attempt - 1))
    digest = sha256_file(part)
    size = part.stat().st_size
    problem = None
    if expected_size is not None and size != expected_size:
        problem = f"size {size:,} bytes, expected {expected_size:,}"
    elif expected_sha256 is not None and digest != expected_sha256:
        problem = f"sha256 {digest}, expected {expected_sha256}"
    if problem:
        part.unlink()
        raise DataError(f"checksum mismatch for {url}: {problem}; the file was removed, run the command again "
                        f"(if it keeps failing, the source changed: to accept the new file, delete its entry in "
                        f"{dest.parent / MANIFEST})")
    os.replace(part, dest)
    return digest, True


class _IncompleteDownload(OSError):
    """The connection ended before the announced number of bytes arrived (kept in the .part file for a resume)."""


def _fetch_into(url: str, part: Path, bar) -> None:
    """Append the rest of `url` to `part`, asking only for the bytes it does not have yet."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "nanogpt-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after what we have: the .part is complete (the checksum will tell)
            return
        raise
    with response:
        length = response.headers.get("Content-Length")
        if have and response.status == 206 and _range_start(response.headers.get("Content-Range")) == have:
            mode, total = "ab", (have + int(length) if length else None)
        else:  # the server sent the whole file: start over
            mode, have, total = "wb", 0, (int(length) if length else None)
        task = bar.add_task(part.name.removesuffix(".part"), total=total, completed=have) if bar else None
        written = have
        with open(part, mode) as out:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
                if bar:
                    bar.update(task, completed=written)
    if total is not None and written < total:
        raise _IncompleteDownload(f"connection closed after {written:,} of {total:,} bytes")


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("files", {})
    except (ValueError, AttributeError):
        raise DataError(f"{path} is corrupt; delete it (the files will be checked again)") from None


def _write_manifest(directory: Path, files: dict) -> None:
    write_json_atomic(directory / MANIFEST, {"dataset": directory.name, "files": files})


class _progress:
    """A rich download bar on a terminal, nothing otherwise."""

    def __init__(self, show: bool):
        self.show = show
        self.bar = None

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self.bar.start()
        return self.bar

    def __exit__(self, *exc_info):
        if self.bar is not None:
            self.bar.stop()
