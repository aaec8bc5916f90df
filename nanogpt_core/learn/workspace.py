"""The learner's workspace (the folder of component files a learner edits) and the pristine skeletons it started from.

Where the workspace is: `$NANOGPT_STUDENT_DIR`, else the folder a `nanogpt.toml` in the current folder (or one above
it) names, else, in a source checkout, `impls/student/` (`nanogpt_core.model.workspace_location`, which the student
set's plugin asks too, so the files the tools read are the files the model runs). `nanogpt init [DIR]`
(`init_workspace`) makes a new one anywhere: the skeletons, a README on the loop and the `nanogpt.toml`.

The student files are meant to be edited, so the project keeps an untouched copy of each skeleton as package data
(`impls/pristine/<component>.py.txt`). From it:

- `reset_components(["attention"])` backs up the learner's file to `.backups/attention.py.<timestamp>` and restores
  the skeleton (`nanogpt reset student:attention`); `list_backups()` lists those backups (`nanogpt reset --list`)
  and `undo_reset("attention")` puts the newest one back (`nanogpt reset --undo student:attention`), backing up the
  file it replaces first, so nothing a learner wrote is ever lost;
- `is_pristine("attention")` tells `nanogpt status` that a component is not started, and `todo_methods(text)` which
  methods of a file still raise their skeleton's TODO;
- `record_hint` / `read_hint_log` keep, in `.hints.json` beside `.backups/`, how many hints of each method a
  learner has seen (`nanogpt hint`, `nanogpt status`);
- `write_pristine_dir(folder)` writes a fresh set of skeletons (tests load it with
  `nanogpt_core.model.component_files.load_set_from_dir`, so they never depend on the learner's own files).

Every path goes through `student_dir()` / `student_file()`; tests point `NANOGPT_STUDENT_DIR` at a temporary copy,
never the real folder. Files are written atomically (`nanogpt_core.files`).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.resources
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nanogpt_core.errors import WorkspaceError
from nanogpt_core.files import (
    TMP_PREFIX,
    atomic_write,
    display_path,
    fsync_dir,
    write_json_atomic,
    write_text_atomic,
)
from nanogpt_core.model.contracts import BY_NAME, COMPONENT_NAMES
from nanogpt_core.model.use_spec import known_component
from nanogpt_core.model.workspace_location import DEFAULT_WORKSPACE, MARKER_NAME, locate_student_set
from nanogpt_core.model.workspace_location import STUDENT_DIR_ENV as STUDENT_DIR_ENV  # tests set it, named from here

BACKUP_DIR = ".backups"
STAMP_FORMAT = "%Y%m%d-%H%M%S"
# `attention.py.20250101-120000`, and `-1`, `-2`, ... for more than one backup within a second
_BACKUP_RE = re.compile(r"^(?P<component>\w+)\.py\.(?P<stamp>\d{8}-\d{6})(?:-(?P<n>\d+))?$")
# what a skeleton's method raises until the learner writes it: `TODO: Implement attention.forward — ...`
TODO_RE = re.compile(r"TODO: Implement\s+([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
# ... and, at its end, the reference to read: `Reference: `nanogpt show reference:rotary.apply``
REFERENCE_TAIL_RE = re.compile(r"\s*Reference:.*$")


def student_dir() -> Path:
    """The folder the learner edits (see the module docstring); a WorkspaceError saying how to make one when there
    is none (installed from a wheel, outside any workspace)."""
    return locate_student_set().require()


def without_reference_tail(todo: str) -> str:
    """A skeleton's TODO text without its `Reference: ...` ending (panels and tables show the reference apart)."""
    return REFERENCE_TAIL_RE.sub("", todo)


def student_file(component: str, directory: Path | None = None) -> Path:
    return (directory or student_dir()) / f"{component}.py"


def student_text(component: str, directory: Path | None = None) -> str:
    """The learner's file as it is now (a one-line WorkspaceError when it is missing)."""
    path = student_file(component, directory)
    if not path.is_file():
        raise WorkspaceError(f"{path} is missing; restore the skeleton with `nanogpt reset student:{component}`.")
    return path.read_text(encoding="utf-8")


def todo_methods(text: str) -> list[tuple[str, str]]:
    """(component, method) of every skeleton TODO still in `text`, in the order the file has them."""
    return list(dict.fromkeys((m.group(1), m.group(2)) for m in TODO_RE.finditer(text)))


def pristine_text(component: str) -> str:
    """The skeleton exactly as shipped."""
    _check_component(component)
    resource = importlib.resources.files("nanogpt_impls").joinpath("pristine", f"{component}.py.txt")
    return resource.read_text(encoding="utf-8")


def is_pristine(component: str, directory: Path | None = None) -> bool:
    """True when the learner's file is byte-for-byte the skeleton (not started)."""
    path = student_file(component, directory)
    return path.is_file() and path.read_text(encoding="utf-8") == pristine_text(component)


def _check_component(component: str) -> None:
    known_component(component)


# --- reset --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetResult:
    component: str
    restored: Path
    backup: Path | None  # None when there was nothing to keep (missing file, or already the skeleton)


@dataclass(frozen=True)
class Backup:
    """One saved version of a learner's file: `.backups/<component>.py.<YYYYmmdd-HHMMSS>[-n]`."""

    component: str
    path: Path
    stamp: str
    n: int = 0  # the n-th extra backup within the same second

    @property
    def saved_at(self) -> dt.datetime:
        return dt.datetime.strptime(self.stamp, STAMP_FORMAT)

    def lines(self) -> int:
        return len(self.path.read_text(encoding="utf-8", errors="replace").splitlines())


@dataclass(frozen=True)
class UndoResult:
    component: str
    restored: Path
    source: Backup | None  # the backup put back; None when there is no older one that differs from the file
    kept: Path | None  # where the replaced file was backed up (None: it was the skeleton, or already backed up)


def _backup(path: Path, component: str, directory: Path, stamp: str) -> Path:
    """Copy the learner's file into `.backups/` under a name no other backup has."""
    backup_dir = directory / BACKUP_DIR
    backup_dir.mkdir(exist_ok=True)
    ignore = backup_dir / ".gitignore"  # backups are the learner's, not the project's
    if not ignore.exists():
        write_text_atomic(ignore, "*\n")
    backup = backup_dir / f"{component}.py.{stamp}"
    n = 1
    while backup.exists():  # two resets within a second keep both backups
        backup = backup_dir / f"{component}.py.{stamp}-{n}"
        n += 1
    data = path.read_bytes()
    return atomic_write(backup, lambda tmp: tmp.write_bytes(data))


def _stamp(now: float | None) -> str:
    return time.strftime(STAMP_FORMAT, time.localtime(now))


def reset_components(components: list[str] | None = None, directory: Path | None = None,
                     now: float | None = None) -> list[ResetResult]:
    """Restore skeletons (all when `components` is None), backing up each learner file that differs first."""
    directory = directory or student_dir()
    stamp = _stamp(now)
    results = []
    for component in components or list(COMPONENT_NAMES):
        _check_component(component)
        path = student_file(component, directory)
        skeleton = pristine_text(component)
        backup = None
        if path.is_file() and path.read_text(encoding="utf-8") != skeleton:
            backup = _backup(path, component, directory, stamp)
        write_text_atomic(path, skeleton)
        results.append(ResetResult(component, path, backup))
    return results


def list_backups(component: str | None = None, directory: Path | None = None) -> list[Backup]:
    """The backups of one component (or of all), newest first."""
    if component is not None:
        _check_component(component)
    folder = (directory or student_dir()) / BACKUP_DIR
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        m = _BACKUP_RE.match(path.name)
        if m and path.is_file() and (component is None or m.group("component") == component):
            found.append(Backup(m.group("component"), path, m.group("stamp"), int(m.group("n") or 0)))
    return sorted(found, key=lambda b: (b.stamp, b.n), reverse=True)


def undo_reset(component: str, directory: Path | None = None, now: float | None = None) -> UndoResult:
    """Put back the newest backup that differs from the learner's file, backing that file up first (unless it is
    the skeleton or already among the backups). Called again, it steps further back through the backups;
    `source` is None once the file is the oldest backup."""
    directory = directory or student_dir()
    backups = list_backups(component, directory)
    path = student_file(component, directory)
    if not backups:
        raise WorkspaceError(f"there is no backup of {component} in {display_path(directory / BACKUP_DIR)} to restore; "
                             f"`nanogpt reset student:{component}` makes one before it restores the skeleton.")
    current = path.read_bytes() if path.is_file() else None
    contents = {b.path: b.path.read_bytes() for b in backups}
    # the file may be a backup put back by an earlier undo: then step to an older one, never forward again
    same = [i for i, b in enumerate(backups) if contents[b.path] == current]
    older = backups[same[0] + 1:] if same else backups
    source = next((b for b in older if contents[b.path] != current), None)
    if source is None:
        return UndoResult(component, path, None, None)
    kept = None
    saved = current is not None and current != pristine_text(component).encode("utf-8")
    if saved and current not in contents.values():
        kept = _backup(path, component, directory, _stamp(now))
    data = contents[source.path]
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return UndoResult(component, path, source, kept)


# --- hints taken ----------------------------------------------------------------------------------------------------

HINT_LOG = ".hints.json"  # beside .backups/: {"attention.forward": 2, ...}, the highest hint level shown per method


def hint_log_path(directory: Path | None = None) -> Path:
    return (directory or student_dir()) / HINT_LOG


def read_hint_log(directory: Path | None = None) -> dict[str, int]:
    """{"component.method": highest level taken}; empty when no hint was taken yet."""
    path = hint_log_path(directory)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise WorkspaceError(f"{path} is not a hint log ({type(exc).__name__}: {exc}); delete it to count hints "
                             f"from zero again.") from None


def hints_taken(component: str, directory: Path | None = None) -> int:
    """How many hint levels the learner has seen for `component`, over its methods (for `nanogpt status`)."""
    prefix = f"{component}."
    return sum(level for key, level in read_hint_log(directory).items() if key.startswith(prefix))


def record_hint(component: str, method: str, level: int, directory: Path | None = None) -> int:
    """Remember that hints up to `level` were shown for component.method; returns the highest level taken."""
    taken = read_hint_log(directory)
    key = f"{component}.{method}"
    taken[key] = max(level, taken.get(key, 0))
    write_json_atomic(hint_log_path(directory), taken)
    return taken[key]


# --- fresh workspaces ------------------------------------------------------------------------------------------


def write_pristine_dir(directory: Path) -> Path:
    """Write every skeleton to `directory/<component>.py` (a fresh workspace for tests and `status`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for component in COMPONENT_NAMES:
        write_text_atomic(directory / f"{component}.py", pristine_text(component))
    return directory


# --- a new workspace: `nanogpt init` -------------------------------------------------------------------------------


def _version() -> str:
    try:
        return importlib.metadata.version("nanogpt")
    except importlib.metadata.PackageNotFoundError:  # imported from a folder that was never installed
        return "unknown"


def marker_text() -> str:
    """The `nanogpt.toml` that makes a folder a workspace (read by `workspace_location.read_marker`)."""
    return (f"# A nanogpt workspace: every `nanogpt` command run in this folder, or in a folder below it, uses the\n"
            f"# component files named here as the `student` set (`nanogpt status`, `nanogpt train --use "
            f"student:rotary`).\n"
            f"[workspace]\n"
            f"# the folder of your component files (norm.py, rotary.py, ...), relative to this file\n"
            f"student = \".\"\n"
            f"# the nanogpt whose skeletons this folder started from (`nanogpt reset` restores those of the one "
            f"installed)\n"
            f"created-with = \"nanogpt {_version()}\"\n")


def readme_text() -> str:
    """The workspace's README: what the files are and the loop, in a screenful."""
    files = "\n".join(f"- `{c}.py` — {BY_NAME[c].summary}" for c in COMPONENT_NAMES)
    return f"""# My GPT: a nanogpt workspace

This folder is your implementation set `student`: one file per component, each method raising
`NotImplementedError("TODO: ...")` until you write it. `{MARKER_NAME}` makes every `nanogpt` command run here (or in
a folder below) use these files; everything you have not written yet comes from the reference implementation.

{files}

## The loop: run, read the message, implement, run again

```bash
nanogpt status                         # where you stand, and the command to run next
nanogpt train --use student:gpt        # stops at your first TODO: a panel with your file and line, the contract
nanogpt show reference:gpt.__init__    # the reference method the panel names, to read beside yours
nanogpt hint                           # or a hint, one level at a time (the idea, the torch API, the shapes)
nanogpt check student:gpt              # the contract checks, each with its numbers
nanogpt compare --use student:gpt      # equal to the reference? if not, the cause, first
nanogpt diff student:gpt               # what you wrote, against the skeleton (or --against reference)
nanogpt reset student:gpt              # back to the skeleton; your file is kept in .backups/
```

Write each method in your own words, delete its `raise NotImplementedError`, and run the same command again. When
every component matches the reference, `nanogpt train --use student` trains your whole GPT. The tutorial, with
every command and what it prints, is `docs/tutorial.md` in nanogpt's repository.
"""


GITIGNORE = "__pycache__/\n.backups/\n.hints.json\n"


@dataclass(frozen=True)
class InitResult:
    directory: Path
    written: list[Path]  # the files made, in the order a listing shows them


def workspace_files() -> dict[str, str]:
    """{file name: text} of a new workspace: the skeletons, the README, `.gitignore` and the marker."""
    files = {f"{component}.py": pristine_text(component) for component in COMPONENT_NAMES}
    files.update({"README.md": readme_text(), ".gitignore": GITIGNORE, MARKER_NAME: marker_text()})
    return files


def _ordinary_permissions(folder: Path | None, files: list[Path]) -> None:
    """The permissions an editor would give them (the umask's), not the private ones of a temporary file."""
    umask = os.umask(0)
    os.umask(umask)
    if folder is not None:
        os.chmod(folder, 0o777 & ~umask)
    for path in files:
        os.chmod(path, 0o666 & ~umask)


def init_workspace(directory: Path | str = DEFAULT_WORKSPACE) -> InitResult:
    """Make `directory` a new workspace; refuse (a WorkspaceError, nothing written) if that would overwrite a file.

    A folder that does not exist yet is built beside it under a temporary name and renamed into place, so a failure
    half-way never leaves half a workspace; into an existing folder (empty, or holding other files) each file is
    written atomically, the marker last, so the folder is a workspace only once all of it is there."""
    directory = Path(directory)
    files = workspace_files()
    if directory.exists() and not directory.is_dir():
        raise WorkspaceError(f"{display_path(directory)} is a file, not a folder; choose another name for the "
                             f"workspace (`nanogpt init my-gpt`).")
    if (directory / MARKER_NAME).exists():
        raise WorkspaceError(f"{display_path(directory)} is already a nanogpt workspace ({MARKER_NAME} is there); "
                             f"work in it (`cd {display_path(directory)}` and `nanogpt status`), or run `nanogpt "
                             f"init` with another folder.")
    taken = [name for name in files if name != ".gitignore" and (directory / name).exists()]
    if taken:
        raise WorkspaceError(f"{display_path(directory)} already has {', '.join(taken)}; `nanogpt init` never "
                             f"overwrites a file: choose a new or empty folder (`nanogpt init my-gpt`).")
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{directory.name}.", dir=directory.parent))
        try:
            for name, text in files.items():
                write_text_atomic(staging / name, text)
            _ordinary_permissions(staging, [staging / name for name in files])
            os.rename(staging, directory)  # a non-empty folder of that name made meanwhile: refused, nothing lost
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(directory.parent)
        written = [directory / name for name in files]
    else:
        written = []
        for name, text in files.items():  # the marker is last in `files`
            if name == ".gitignore" and (directory / name).exists():
                continue  # the learner's own .gitignore stays as it is
            written.append(write_text_atomic(directory / name, text))
        _ordinary_permissions(None, written)
    return InitResult(directory, written)
