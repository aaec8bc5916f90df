"""The errors a user can cause and fix. Each carries a one-line message that names the problem and the fix.

The CLI prints `str(error)` for these and exits non-zero without a traceback (the traceback stays behind `--debug`);
any other exception is a bug in the tool or in a component and is reported as such.
"""

from __future__ import annotations


class NanoGPTError(Exception):
    """Base class of every user-facing error."""

    exit_code = 2


class ConfigError(NanoGPTError):
    """A model or training configuration that cannot work."""


class UseSpecError(NanoGPTError):
    """A `--use` spec that names an unknown implementation or component, or is malformed."""


class RegistryError(NanoGPTError):
    """A plugin that registers something wrong: an unknown component, or a pair someone else already registered."""


class DataError(NanoGPTError):
    """Training data that is missing, empty, binary or too small."""


class CheckpointError(NanoGPTError):
    """A checkpoint that is missing, corrupt, of another shape or of an unsupported format."""


class ComponentImportError(NanoGPTError):
    """A learner's component file that does not import (a syntax error, a missing name): the rest still runs."""


class TrainingError(NanoGPTError):
    """A run that cannot go on, e.g. the loss became NaN or infinite."""


class ComponentError(NanoGPTError):
    """A component that runs but breaks its contract in a way that would otherwise train silently wrong: a weight
    kept as a plain tensor, no parameters where the contract lists some, an optimizer that leaves parameters out.

    Exit code 4, as for any other bug inside a component (`nanogpt_core.learn.diagnose.EXIT_COMPONENT_BUG`).
    `component` names the component to blame when the core detects the mistake (`nanogpt status` points there)."""

    exit_code = 4

    def __init__(self, message: str, component: str | None = None) -> None:
        super().__init__(message)
        self.component = component
