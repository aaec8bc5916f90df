"""Your implementation set. Fill in one component at a time; `nanogpt train --use student:<component>` runs it.

Every method starts as `raise NotImplementedError("TODO: ...")`; the message says what to write and which reference
method to read (`nanogpt show reference:<component>.<method>`). `nanogpt status` shows how far you are, `nanogpt check
student:<component>` tests a piece, and `nanogpt reset student:<component>` restores a pristine skeleton (your file is
backed up first).

The files are those of your workspace (`nanogpt_core/model/workspace_location.py` says how it is found): a folder
made by `nanogpt init`, or, in a source checkout, this folder. Installed from a wheel, the skeletons here are never
loaded: the files you edit are never inside site-packages.

Each file is imported on its own: if one of them does not import (a syntax error while you work on it), only that
component fails, with a one-line message naming the file, and every other command keeps working.
"""

from pathlib import Path

from nanogpt_core.model.component_files import load_component_files
from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.registry import STUDENT_SET
from nanogpt_core.model.workspace_location import locate_student_set

# Each workspace's files are imported once per process, as a package's modules would be, however often the
# registry asks again (it does whenever a plugin is registered).
_loaded: dict[Path, dict[str, object]] = {}


@hookimpl
def register_components(register):
    folder = locate_student_set().directory
    if folder is None:  # no workspace here: `known_set` says how to make one when the set is asked for
        return
    if folder not in _loaded:
        _loaded[folder] = load_component_files(folder, STUDENT_SET)
    for component, implementation in _loaded[folder].items():  # norm, rotary, attention, mlp, block, gpt, ...
        register(STUDENT_SET, component, implementation)
