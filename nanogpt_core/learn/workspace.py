"""The learner's workspace (`impls/student/`, the folder a learner edits) and the pristine skeletons it started from.

The student files are meant to be edited, so the project keeps an untouched copy of each skeleton as package data
(`impls/pristine/<component>.py.txt`). From it:

- `reset_components(["attention"])` backs up the learner's file to `.backups/attention.py.<timestamp>` and restores
  the skeleton (`nanogpt reset student:attention`);
- `is_pristine("attention")` tells `nanogpt status` that a component is not started;
- `write_pristine_dir(folder)` writes a fresh set of skeletons (tests load it with
  `nanogpt_core.model.component_files.load_set_from_dir`, so they never depend on the learner's own files).

`NANOGPT_STUDENT_DIR` points the workspace elsewhere (tests use a temporary copy, never the real folder).
"""

from __future__ import annotations

import importlib.resources
import os
import time
from dataclasses import dataclass
from pathlib import Path

from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.use_spec import known_component

STUDENT_DIR_ENV = "NANOGPT_STUDENT_DIR"
BACKUP_DIR = ".backups"


def student_dir() -> Path:
    """The folder the learner edits: `$NANOGPT_STUDENT_DIR`, or the installed `nanogpt_impls/student`."""
    override = os.environ.get(STUDENT_DIR_ENV)
    if override:
        return Path(override)
    return Path(str(importlib.resources.files("nanogpt_impls.student")))


def student_file(component: str, directory: Path | None = None) -> Path:
    return (directory or student_dir()) / f"{component}.py"


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


def reset_components(components: list[str] | None = None, directory: Path | None = None,
                     now: float | None = None) -> list[ResetResult]:
    """Restore skeletons (all when `components` is None), backing up each learner file that differs first."""
    directory = directory or student_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    results = []
    for component in components or list(COMPONENT_NAMES):
        _check_component(component)
        path = student_file(component, directory)
        skeleton = pristine_text(component)
        backup = None
        if path.is_file() and path.read_text(encoding="utf-8") != skeleton:
            backup_dir = directory / BACKUP_DIR
            backup_dir.mkdir(exist_ok=True)
            ignore = backup_dir / ".gitignore"  # backups are the learner's, not the project's
            if not ignore.exists():
                ignore.write_text("*\n", encoding="utf-8")
            backup = backup_dir / f"{component}.py.{stamp}"
            n = 1
            while backup.exists():  # two resets within a second keep both backups
                backup = backup_dir / f"{component}.py.{stamp}-{n}"
                n += 1
            backup.write_bytes(path.read_bytes())
        path.write_text(skeleton, encoding="utf-8")
        results.append(ResetResult(component, path, backup))
    return results


# --- fresh workspaces ------------------------------------------------------------------------------------------


def write_pristine_dir(directory: Path) -> Path:
    """Write every skeleton to `directory/<component>.py` (a fresh workspace for tests and `status`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for component in COMPONENT_NAMES:
        (directory / f"{component}.py").write_text(pristine_text(component), encoding="utf-8")
    return directory
