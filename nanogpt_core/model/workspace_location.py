"""Where the `student` set lives: the folder of component files a learner edits, found the same way by every command.

Looked for in this order:

1. `$NANOGPT_STUDENT_DIR`: a folder named outright (tests, scripts, a second workspace);
2. a workspace file, `nanogpt.toml`, in the current folder or the nearest folder above it (`nanogpt init` writes
   one): its `[workspace] student` names the folder of component files, relative to the file (`"."`: beside it);
3. in a source checkout (the repository installed with `make install`), the checkout's own `impls/student/`.

Installed from a wheel (`pip install nanogpt`) there is no third place: the skeletons inside site-packages are not for
editing (an upgrade overwrites them), so outside a workspace there is no `student` set, and the one message that says
so also says how to make one (`nanogpt init`).

This lives in the model layer, beside the registry, because the student set's own plugin (`impls/student`) asks it
where its files are, and implementations import only the model. The learner's tools (reset, hints, status) ask the
same function through `nanogpt_core.learn.workspace.student_dir`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from nanogpt_core.errors import WorkspaceError
from nanogpt_core.files import display_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency on 3.10 only)
    import tomli as tomllib

STUDENT_DIR_ENV = "NANOGPT_STUDENT_DIR"
MARKER_NAME = "nanogpt.toml"
DEFAULT_WORKSPACE = "my-gpt"  # what `nanogpt init` creates when given no folder


@dataclass(frozen=True)
class StudentLocation:
    """The student set's folder, and how it was found; `directory` is None when there is none (see `problem`)."""

    directory: Path | None
    found_by: str  # "NANOGPT_STUDENT_DIR", "my-gpt/nanogpt.toml", "the source checkout", or "" when none
    marker: Path | None = None
    problem: str = ""  # one line naming what is missing and the fix, when `directory` is None

    def require(self) -> Path:
        """The folder, or the WorkspaceError that says why there is none and how to make one."""
        if self.directory is None:
            raise WorkspaceError(self.problem)
        return self.directory


def find_marker(start: Path | None = None) -> Path | None:
    """The nearest `nanogpt.toml` in `start` (the current folder) or a folder above it."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / MARKER_NAME
        if candidate.is_file():
            return candidate
    return None


def read_marker(marker: Path) -> Path:
    """The folder of component files a workspace file names (absolute); a WorkspaceError when it names none."""
    where = display_path(marker)
    try:
        data = tomllib.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise WorkspaceError(f"{where} is not a readable nanogpt workspace file ({type(exc).__name__}: {exc}); fix "
                             f"it, or delete it and run `nanogpt init` in a new folder.") from None
    table = data.get("workspace")
    student = table.get("student") if isinstance(table, dict) else None
    if not isinstance(student, str) or not student.strip():
        raise WorkspaceError(f"{where} has no `student = \"...\"` in a [workspace] table; add `[workspace]` and "
                             f"`student = \".\"` (the folder of your component files, relative to the file).")
    folder = (marker.parent / student).resolve()
    if not folder.is_dir():
        raise WorkspaceError(f"{where} names student = {student!r}, and {display_path(folder)} is not a folder; "
                             f"point it at the folder of your component files.")
    return folder


def checkout_student_dir() -> Path | None:
    """`impls/student` of the source checkout nanogpt runs from; None when installed from a wheel.

    In a checkout the package `nanogpt_impls` is the folder `impls/` beside the project's pyproject.toml (setuptools
    maps the name onto it, in an editable install too); a wheel puts `nanogpt_impls/` into site-packages."""
    spec = importlib.util.find_spec("nanogpt_impls")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        package = Path(location).resolve()
        if package.name == "impls" and (package.parent / "pyproject.toml").is_file() \
                and (package / "student").is_dir():
            return package / "student"
    return None


def locate_student_set(start: Path | None = None) -> StudentLocation:
    """Where the student set's files are, from `start` (the current folder): see the module docstring."""
    override = os.environ.get(STUDENT_DIR_ENV)
    if override:
        folder = Path(override).expanduser().resolve()
        if not folder.is_dir():
            return StudentLocation(None, "", problem=f"{STUDENT_DIR_ENV}={override} is not a folder; create a "
                                   f"workspace there with `nanogpt init {override}`, or unset {STUDENT_DIR_ENV}.")
        return StudentLocation(folder, STUDENT_DIR_ENV)
    marker = find_marker(start)
    if marker is not None:
        try:
            return StudentLocation(read_marker(marker), display_path(marker), marker)
        except WorkspaceError as exc:
            return StudentLocation(None, "", marker, str(exc))
    checkout = checkout_student_dir()
    if checkout is not None:
        return StudentLocation(checkout, "the source checkout")
    here = Path(start or Path.cwd()).resolve()
    return StudentLocation(None, "", problem=(
        f"the student set is the files of a workspace, and there is none here (no {MARKER_NAME} in {here} or a "
        f"folder above it): create one with `nanogpt init` and `cd {DEFAULT_WORKSPACE}`, or set {STUDENT_DIR_ENV} "
        f"to the folder of your component files."))
