"""Reading a pickled tiktoken Encoding (nanochat's `tokenizer.pkl`) without letting the pickle run anything.

A pickle is a little program: its GLOBAL opcodes name any importable callable (`os.system`, `builtins.eval`) and its
REDUCE opcode calls it. So a downloaded `tokenizer.pkl` is never given to `pickle.load`. What `pickle.dumps(enc)`
of a `tiktoken.Encoding` holds is small and fixed (see `pickletools.dis`):

    GLOBAL 'tiktoken.core Encoding'; NEWOBJ ()          an empty Encoding
    {'name': str, 'pat_str': str,                       the state tiktoken's __getstate__ returns
     'mergeable_ranks': {bytes: int}, 'special_tokens': {str: int}}
    BUILD                                               Encoding.__setstate__(state) -> __init__(**state)

Everything else in it is plain data (dicts, strings, bytes, ints), which unpickling builds without calling code.
So the unpickler below admits exactly one global, `tiktoken.core.Encoding`, and even that is swapped for an inert
stand-in that only records the state: tiktoken's real `__setstate__` is never run (given a *string* state it would
look the name up in tiktoken's registry, which can download files). The caller then checks the recorded state and
builds the encoding itself. Any other global is refused, naming it, before it is imported or called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from nanogpt_core.errors import CheckpointError

ENCODING_GLOBAL = ("tiktoken.core", "Encoding")
STATE_KEYS = ("name", "pat_str", "mergeable_ranks", "special_tokens")


class _RecordedEncoding:
    """Stands in for `tiktoken.core.Encoding` while unpickling: keeps the state, runs nothing."""

    def __init__(self) -> None:  # REDUCE with arguments fails here: an Encoding pickle never does that
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _EncodingOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ENCODING_GLOBAL:
            return _RecordedEncoding
        raise CheckpointError(
            f"{self.source} refers to {module}.{name}, which a tokenizer pickle never needs; refusing to load it "
            f"(a pickle can run code; only tiktoken.core.Encoding is admitted)."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.source} uses pickle persistent ids, which a tokenizer pickle never holds.")


def read_tiktoken_pickle(path: str | Path) -> dict[str, Any]:
    """The constructor arguments of the `tiktoken.Encoding` pickled in `path`, checked, without unpickling code.

    Returns {'name', 'pat_str', 'mergeable_ranks', 'special_tokens'} with the types tiktoken expects; raises
    CheckpointError for anything else (another global, another structure, a truncated file).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    return loads_tiktoken_state(data, str(path))


def loads_tiktoken_state(data: bytes, source: str = "the pickle") -> dict[str, Any]:
    """`read_tiktoken_pickle` on bytes already in memory; `source` names them in errors."""
    try:
        obj = _EncodingOnlyUnpickler(data, source).load()
    except CheckpointError:
        raise
    except RecursionError as exc:
        raise CheckpointError(f"{source} is nested too deeply to be a tokenizer pickle.") from exc
    except Exception as exc:  # UnpicklingError, EOFError, TypeError from a malformed NEWOBJ/REDUCE, ...
        raise CheckpointError(f"{source} is not a readable pickled tiktoken Encoding "
                              f"({type(exc).__name__}: {exc}).") from exc
    if not isinstance(obj, _RecordedEncoding):
        raise CheckpointError(f"{source} holds a pickled {type(obj).__name__}, not a tiktoken Encoding.")
    return _checked_state(obj.state, source)


def _checked_state(state: Any, source: str) -> dict[str, Any]:
    if isinstance(state, str):
        raise CheckpointError(f"{source} names tiktoken's registered encoding {state!r} instead of holding its ranks; "
                              "nanogpt never downloads tokenizers, so export the encoding's ranks instead.")
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} holds an Encoding with state of type {type(state).__name__}, not a dict.")
    missing = [k for k in STATE_KEYS if k not in state]
    unknown = sorted(str(k) for k in state if k not in STATE_KEYS)
    if missing or unknown:
        raise CheckpointError(f"{source} holds an Encoding state with missing keys {missing} / unknown keys "
                              f"{unknown}; expected exactly {list(STATE_KEYS)}.")
    name, pattern, ranks, specials = (state[k] for k in STATE_KEYS)
    if not isinstance(name, str) or not isinstance(pattern, str):
        raise CheckpointError(f"{source}: the Encoding's name and pat_str must be strings.")
    if not isinstance(ranks, dict) or not all(type(k) is bytes and type(v) is int for k, v in ranks.items()):
        raise CheckpointError(f"{source}: mergeable_ranks must map bytes to int.")
    if not isinstance(specials, dict) or not all(type(k) is str and type(v) is int for k, v in specials.items()):
        raise CheckpointError(f"{source}: special_tokens must map str to int.")
    ids = [*ranks.values(), *specials.values()]
    if len(set(ids)) != len(ids) or (ids and min(ids) < 0):
        raise CheckpointError(f"{source}: token ids must be distinct and non-negative.")
    return {"name": name, "pat_str": pattern, "mergeable_ranks": ranks, "special_tokens": specials}
