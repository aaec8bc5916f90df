"""The errors a user can cause and fix. Each carries a one-line message that names the problem and the fix.

The CLI prints `str(error)` for these and exits non-zero without a traceback (the traceback stays behind `--debug`);
any other exception is a bug in the tool or in a component and is reported as such.
"""

from __future__ import annotations

import importlib
from types import ModuleType


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


class WorkspaceError(NanoGPTError):
    """The learner's workspace lacks what a command needs: no backup to undo, a method the file does not define."""


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

class MissingExtraError(NanoGPTError):
    """An optional feature whose package is not installed; the message is the pip command that installs it."""


def require_extra(module: str, extra: str, feature: str) -> ModuleType:
    """`import module`, or a MissingExtraError naming the extra that provides it (`pip install 'nanogpt[hf]'`).

    Optional features (Hugging Face export, experiment trackers, parquet) import their package only when used, so
    the core install stays small and `nanogpt --help` stays fast. A package that is installed but fails to import
    (a broken dependency of its own) is named with its error, not mistaken for a missing one.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        package = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != package:
            raise MissingExtraError(f"{feature} needs {package}, which failed to import ({exc}); reinstall it with: "
                                    f"pip install --force-reinstall 'nanogpt[{extra}]'") from exc
        raise MissingExtraError(f"{feature} needs {package}, which is not installed: pip install 'nanogpt[{extra}]' "
                                f"(in a checkout: pip install -e '.[{extra}]')") from exc
