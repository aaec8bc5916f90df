"""Where training text comes from: the built-in corpus that ships with Python, or the user's files.

The built-in corpus exists so that `nanogpt train` works on a fresh machine with no network: every Python carries
English prose in `pydoc_data.topics` (the language reference behind `help()`) and in the docstrings of its standard
library. We gather them in a fixed order so the corpus is the same bytes on every run of one Python version.

User data (`--data PATH`) is one of:
- a text file (`.txt`, `.md`, or any other text): cut into documents at blank lines, each document a run of whole
  paragraphs of at least `TEXT_DOCUMENT_CHARS` characters, so a plain book still gives many documents (each gets
  its own `<|bos|>`) and a validation split that is spread over the text;
- a folder: every `.txt`/`.md`/`.parquet` file under it, in sorted path order;
- a parquet file or a folder of parquet shards with a `text` column (the FineWeb-edu layout; needs pyarrow).
"""

from __future__ import annotations

import ast
import functools
import gc
import importlib
import importlib.util
import inspect
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from nanogpt_core.data.sources import (
    PARQUET_SUFFIX,
    ParquetShard,
    data_files,
    decode_text,
    split_text_into_documents,
)
from nanogpt_core.errors import ConfigError, DataError

# Standard-library modules whose docstrings join the built-in corpus. A fixed, sorted list (not "everything
# importable") so the corpus does not change with what happens to be installed, and only modules that import without
# side effects (no `this`, `antigravity`, GUI toolkits or platform-only modules). Missing ones are skipped.
STDLIB_MODULES = (
    "abc", "argparse", "ast", "asyncio.base_events", "asyncio.events", "asyncio.futures", "asyncio.locks",
    "asyncio.queues", "asyncio.streams", "asyncio.subprocess", "asyncio.tasks", "base64", "bdb", "binascii",
    "bisect", "builtins", "bz2", "calendar", "cmd", "code", "codecs", "codeop", "collections", "collections.abc",
    "colorsys", "compileall", "concurrent.futures._base", "configparser", "contextlib", "contextvars", "copy",
    "copyreg", "csv", "ctypes", "dataclasses", "datetime", "decimal", "difflib", "dis", "doctest", "email.charset",
    "email.feedparser", "email.generator", "email.header", "email.headerregistry", "email.message", "email.parser",
    "email.policy", "email.utils", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "gc", "getopt", "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser",
    "http.client", "http.cookiejar", "http.cookies", "http.server", "imaplib", "importlib", "importlib.abc",
    "importlib.machinery", "importlib.metadata", "importlib.resources", "importlib.util", "inspect", "io",
    "ipaddress", "itertools", "json", "json.decoder", "json.encoder", "keyword", "linecache", "locale", "logging",
    "logging.config", "logging.handlers", "lzma", "mailbox", "marshal", "math", "mimetypes", "modulefinder",
    "multiprocessing.connection", "multiprocessing.pool", "multiprocessing.process", "multiprocessing.queues",
    "multiprocessing.synchronize", "netrc", "numbers", "operator", "optparse", "os", "os.path", "pathlib", "pdb",
    "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile", "pstats",
    "py_compile", "pyclbr", "pydoc", "queue", "quopri", "random", "re", "reprlib", "runpy", "sched", "secrets",
    "selectors", "shelve", "shlex", "shutil", "signal", "site", "smtplib", "socket", "socketserver", "sqlite3",
    "ssl", "stat", "statistics", "string", "stringprep", "struct", "subprocess", "symtable", "sys", "sysconfig",
    "tabnanny", "tarfile", "tempfile", "textwrap", "threading", "timeit", "token", "tokenize", "trace",
    "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest", "unittest.case", "unittest.loader",
    "unittest.mock", "unittest.result", "unittest.runner", "unittest.suite", "urllib.error", "urllib.parse",
    "urllib.request", "urllib.response", "urllib.robotparser", "uuid", "warnings", "wave", "weakref", "wsgiref",
    "wsgiref.handlers", "wsgiref.headers", "wsgiref.simple_server", "wsgiref.util", "wsgiref.validate",
    "xml.dom", "xml.dom.minidom", "xml.dom.pulldom", "xml.etree.ElementTree", "xml.sax", "xml.sax.handler",
    "xml.sax.saxutils", "xml.sax.xmlreader", "xmlrpc.client", "xmlrpc.server", "zipapp", "zipfile", "zipimport",
    "zlib", "zoneinfo",
)

def _clean(text: str) -> str:
    """Dedent, drop trailing spaces, turn tabs and odd line ends into plain ones, and keep at most one blank line."""
    text = inspect.cleandoc(text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _module_document(module_name: str) -> str | None:
    """The module docstring, then the docstrings of the public classes, methods and functions it defines, by name.

    A module written in Python is read from its source with `ast`, so nothing is imported and nothing the process did
    (a test framework replacing `warnings.showwarning`, a monkeypatch) can change the text. A compiled module
    (`math`, `sys`, ...) is imported and read live, skipping re-exports and taking the original of a replaceable
    hook (`sys.__excepthook__`, not whatever `sys.excepthook` is now). Signatures are left out: their default values
    can print memory addresses.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = importlib.util.find_spec(module_name)
    except Exception:  # a module this Python or platform lacks: the corpus is defined per Python version
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin.endswith(".py"):
        parts = _source_docs(module_name, Path(spec.origin).read_text(encoding="utf-8"))
    else:
        parts = []
    if len(parts) <= 1:  # compiled, or a thin Python wrapper around a compiled module (`decimal`, `struct`)
        parts = _live_docs(module_name)
    return "\n\n".join(parts) if parts else None


def _source_docs(module_name: str, source: str) -> list[str]:
    tree = ast.parse(source)
    parts = []
    if doc := ast.get_docstring(tree):
        parts.append(f"Module {module_name}\n\n{_clean(doc)}")
    defs = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    # the last definition of a name wins, as it does at import (e.g. a pure-Python fallback redefined)
    top = {node.name: node for node in tree.body if isinstance(node, defs) and not node.name.startswith("_")}
    for name, node in sorted(top.items()):
        if doc := ast.get_docstring(node):
            parts.append(f"{module_name}.{name}\n\n{_clean(doc)}")
        if isinstance(node, ast.ClassDef):
            methods = {m.name: m for m in node.body if isinstance(m, defs[1:]) and not m.name.startswith("_")}
            for method_name, method in sorted(methods.items()):
                if doc := ast.get_docstring(method):
                    parts.append(f"{module_name}.{name}.{method_name}\n\n{_clean(doc)}")
    return parts


def _live_docs(module_name: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return []
    parts = []
    if isinstance(module.__doc__, str) and module.__doc__.strip():
        parts.append(f"Module {module_name}\n\n{_clean(module.__doc__)}")
    for name in sorted(vars(module)):
        obj = getattr(module, f"__{name}__", None) or getattr(module, name)
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if getattr(obj, "__module__", None) != module_name:
            continue
        parts.extend(_object_docs(f"{module_name}.{name}", obj))
    return parts


def _object_docs(qualname: str, obj: object) -> Iterator[str]:
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    if doc and doc.strip():
        yield f"{qualname}\n\n{_clean(doc)}"
    if inspect.isclass(obj):
        for name, member in sorted(vars(obj).items()):
            if name.startswith("_") or not inspect.isroutine(member):
                continue
            member_doc = getattr(member, "__doc__", None)
            if isinstance(member_doc, str) and member_doc.strip():
                yield f"{qualname}.{name}\n\n{_clean(member_doc)}"


@functools.lru_cache(maxsize=1)
def _default_corpus() -> tuple[str, ...]:
    from pydoc_data.topics import topics

    docs = [_clean(topics[key]) for key in sorted(topics)]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # parsing ~5 MB of source makes millions of short-lived AST nodes; collecting them costs ~30%
    try:
        docs += [doc for name in STDLIB_MODULES if (doc := _module_document(name))]
    finally:
        if gc_was_enabled:
            gc.enable()
    return tuple(doc for doc in docs if doc)


def default_corpus_documents() -> list[str]:
    """The built-in corpus: Python's help topics and standard-library docstrings, one document per topic/module.

    Deterministic for one Python version, cached for the life of the process.
    """
    return list(_default_corpus())


def load_documents(path: str | Path | None) -> list[str]:
    """Documents from `path` (see the module docstring for the layouts); None gives the built-in corpus."""
    if path is None:
        return default_corpus_documents()
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist; pass a text file, a folder of .txt/.md files or parquet shards")
    if path.is_dir():
        docs = [doc for f in data_files(path) for doc in _load_file(f, allow_empty=True)]
    else:
        docs = _load_file(path, allow_empty=False)
    if not docs:
        raise DataError(f"no documents found in {path}: every file is empty; add some text")
    return docs


def _load_file(path: Path, allow_empty: bool) -> list[str]:
    if path.suffix == PARQUET_SUFFIX:
        return _load_parquet(path)
    text = _read_text(path)
    if not text.strip():
        if allow_empty:
            return []
        raise DataError(f"{path} is empty; put some text in it")
    return split_text_into_documents(text)


def _read_text(path: Path) -> str:
    return decode_text(path.read_bytes(), path)


def _load_parquet(path: Path) -> list[str]:
    shard = ParquetShard(path)
    return [doc for group in range(shard.num_units()) for doc in shard.read_unit(group)]


def split_documents(docs: list[str], val_fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """A fixed train/validation split: every k-th document (k = round(1/val_fraction)) goes to validation.

    Spreading the validation documents over the corpus keeps them representative of it (the tail of the built-in
    corpus, say, is all docstrings). With fewer than k documents the last one is the validation set; a single
    document is cut at a line break near the (1 - val_fraction) point of its text.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (got {val_fraction})")
    if not docs:
        raise DataError("no documents to split; pass some text with --data")
    if len(docs) == 1:
        return _split_text(docs[0], val_fraction)
    k = max(2, round(1.0 / val_fraction))
    val = docs[k - 1::k] or [docs[-1]]
    train = [doc for i, doc in enumerate(docs) if (i + 1) % k != 0] if len(docs) >= k else docs[:-1]
    return train, val


def _split_text(text: str, val_fraction: float) -> tuple[list[str], list[str]]:
    if len(text) < 2:
        raise DataError("the data is a single document of fewer than 2 characters; it cannot be split "
                        "into training and validation text; add more text")
    cut = min(max(1, round(len(text) * (1.0 - val_fraction))), len(text) - 1)
    newline = text.find("\n", cut)  # cut at a line start so validation text begins like training text does
    if 0 < newline < len(text) - 1:
        cut = newline + 1
    return [text[:cut]], [text[cut:]]
