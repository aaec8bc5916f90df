"""Your implementation set. Fill in one component at a time; `nanogpt train --use student:<component>` runs it.

Every method starts as `raise NotImplementedError("TODO: ...")`; the message says what to write and where the
reference lives. `nanogpt status` shows how far you are, `nanogpt check student:<component>` tests a piece, and
`nanogpt reset student:<component>` restores a pristine skeleton (your file is backed up first).

Each file is imported on its own: if one of them does not import (a syntax error while you work on it), only that
component fails, with a one-line message naming the file, and every other command keeps working.
"""

from nanogpt_core.model.component_files import import_component
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.registry import STUDENT_SET


@hookimpl
def register_components(register):
    for component in COMPONENT_NAMES:  # norm, rotary, attention, mlp, block, gpt, init, optimizer, generate
        register(STUDENT_SET, component, import_component(f"{__name__}.{component}", component))
