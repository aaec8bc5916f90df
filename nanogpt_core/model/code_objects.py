"""Which code belongs to an implementation: its code objects and the file it was written in.

Two parts of the core have to recognise a component's own code while it runs: the diagnosis of an error (which
frame of a traceback is the learner's) and the `--debug=inside` line trace (which frames to follow line by line).
Both ask here, so "this code is the attention's" means the same thing to both.
"""

from __future__ import annotations

import inspect
import os
import types
from typing import Any


def implementation_codes(obj: Any) -> list[types.CodeType]:
    """Every code object an implementation owns: its functions, methods, static/class methods and properties, and
    the functions nested in them. A class contributes its whole MRO except `object` and torch's own classes."""
    found: list[types.CodeType] = []

    def add_function(fn: Any) -> None:
        fn = inspect.unwrap(fn) if callable(fn) else fn
        if isinstance(fn, (staticmethod, classmethod)):
            fn = fn.__func__
        if isinstance(fn, property):
            for f in (fn.fget, fn.fset, fn.fdel):
                if f is not None:
                    add_function(f)
            return
        code = getattr(fn, "__code__", None)
        if isinstance(code, types.CodeType):
            stack = [code]
            while stack:
                c = stack.pop()
                found.append(c)
                stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))

    if isinstance(obj, type):
        for klass in obj.__mro__:
            if klass is object or klass.__module__.startswith("torch"):
                continue
            for value in vars(klass).values():
                add_function(value)
    else:
        add_function(obj)
        if not hasattr(obj, "__code__"):  # a namespace object: its attributes
            for value in vars(type(obj)).values():
                add_function(value)
    return found


def implementation_file(obj: Any) -> str | None:
    """The real path of the file an implementation (class or function) is defined in; None when it has none."""
    try:
        source = inspect.getsourcefile(inspect.unwrap(obj) if callable(obj) else obj)
    except (TypeError, OSError):
        return None
    return os.path.realpath(source) if source else None
