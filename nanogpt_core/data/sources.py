"""Reading data files a piece at a time, so nothing ever holds a whole dataset.

Every file is a sequence of *units*, each read on its own, in any order, for as long as the file is unchanged:

- a parquet shard's units are its row groups (FineWeb-edu: ~1,000 documents each), its documents the rows of the
  `text` column;
- a text file's units are blocks of about `TEXT_UNIT_BYTES`, each moved forward to the next blank line (`_boundary`),
  so a paragraph is never cut, and cut into documents as a whole file is (`corpus.split_text_into_documents`);
- a pre-tokenized `.bin` shard (`data.tokenized`) has blocks of tokens moved forward to the next <|bos|>.

A *part* of the data (the training part, the held-out part) is a list of files, each with the range of its units
that belongs to the part. The streaming loader (`data.stream`) walks a part unit by unit, and a rank reads only
its own units, which is what makes memory and the time to the first batch independent of the dataset's size.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nanogpt_core.errors import DataError, require_extra

TEXT_SUFFIXES = (".txt", ".md")
TEXT_DOCUMENT_CHARS = 4096  # a text file is cut at blank lines into documents of at least this many characters
PARQUET_SUFFIX = ".parquet"
TEXT_UNIT_BYTES = 4 << 20  # ~1,000 documents of the default 4 KB: small enough to hold, large enough to shuffle in
SEPARATOR_SEARCH_BYTES = 1 << 20  # how far past a block's nominal start a blank line is looked for

_SEPARATOR = re.compile(rb"\r?\n[ \t\r]*\n")  # a blank line, in the file's own bytes (\r\n line ends included)
_BLANK_LINES = re.compile(r"\n[ \t]*\n")  # the same in decoded text, whose line ends are \n


class Reader(Protocol):
    """One data file seen as units (see the module docstring)."""

    path: Path

    def num_units(self) -> int: ...

    def read_unit(self, index: int) -> list:
        """The documents of unit `index`: strings (text, parquet) or token arrays starting with <|bos|> (.bin)."""
        ...


@dataclass(frozen=True)
class FileRange:
    """The units `units` of one file (None: all of them) as part of a training or held-out part."""

    reader: Reader
    units: range | None = None

    def unit_indices(self) -> range:
        return self.units if self.units is not None else range(self.reader.num_units())


def data_files(path: Path) -> list[Path]:
    """The data files of a folder: every .txt, .md and .parquet file under it (hidden ones skipped), in sorted path
    order; a DataError naming the folder when there is none."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (*TEXT_SUFFIXES, PARQUET_SUFFIX)
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise DataError(f"no .txt, .md or .parquet files under {path}; put your text files in that folder")
    return files


def reader_for(path: Path) -> Reader:
    return ParquetShard(path) if path.suffix == PARQUET_SUFFIX else TextFile(path)


def decode_text(data: bytes, path: Path, offset: int = 0) -> str:
    """UTF-8 text of `data` (bytes `offset`.. of `path`) with \\n line ends and no byte-order mark; a DataError
    naming the file and the byte for binary or non-UTF-8 content."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path} looks binary (NUL byte at offset {offset + nul}); pass a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 (invalid byte 0x{data[exc.start]:02x} at offset {offset + exc.start}); "
                        "convert it, e.g. `iconv -f latin1 -t utf-8`") from None
    if offset == 0:
        text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n")


class TextFile:
    """A text file in blocks of about TEXT_UNIT_BYTES that begin and end at blank lines.

    Block k nominally covers bytes [kU, (k+1)U). It begins after the first separator at or after kU and ends before
    the first separator at or after (k+1)U, so consecutive blocks tile the file and a block's documents are cut
    exactly as `split_text_into_documents` cuts any text. Where no blank line lies within SEPARATOR_SEARCH_BYTES of
    a nominal start, a line end is used, and failing that the next character boundary: a block never grows without
    bound, whatever the file.
    """

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size

    def num_units(self) -> int:
        return math.ceil(self.size / TEXT_UNIT_BYTES)

    def read_unit(self, index: int) -> list[str]:
        with open(self.path, "rb") as f:
            begin = 0 if index == 0 else _boundary(f, index * TEXT_UNIT_BYTES)[1]
            end = self.size if index >= self.num_units() - 1 else _boundary(f, (index + 1) * TEXT_UNIT_BYTES)[0]
            if begin >= end:
                return []
            f.seek(begin)
            data = f.read(end - begin)
        text = decode_text(data, self.path, begin)
        return split_text_into_documents(text) if text.strip() else []


def split_text_into_documents(text: str, min_chars: int = TEXT_DOCUMENT_CHARS) -> list[str]:
    """Cut `text` at blank lines into documents of whole paragraphs, each at least `min_chars` long.

    A short remainder joins the last document, so no document is tiny; a text without blank lines stays one document.
    """
    docs: list[str] = []
    start = 0
    for match in _BLANK_LINES.finditer(text):
        if match.start() - start >= min_chars:
            docs.append(text[start:match.start()])
            start = match.end()
    tail = text[start:]
    if docs and len(tail.strip()) < min_chars:
        docs[-1] = docs[-1] + "\n\n" + tail
    else:
        docs.append(tail)
    return [doc.strip("\n") for doc in docs if doc.strip()]


def _boundary(f, position: int) -> tuple[int, int]:
    """(start, end) of the first separator at or after byte `position`: a blank line, else a line end, else a
    character boundary (start == end), all within SEPARATOR_SEARCH_BYTES; (size, size) at the end of the file."""
    f.seek(position)
    window = f.read(SEPARATOR_SEARCH_BYTES)
    if not window:
        return position, position
    if match := _SEPARATOR.search(window):
        return position + match.start(), position + match.end()
    newline = window.find(b"\n")
    if newline >= 0:
        return position + newline, position + newline + 1
    skip = 0
    while skip < len(window) and window[skip] & 0xC0 == 0x80:  # UTF-8 continuation bytes: inside a character
        skip += 1
    return position + skip, position + skip


class ParquetShard:
    """A parquet file with a `text` column (the FineWeb-edu layout), read one row group at a time with pyarrow.

    One shard may be read by several loaders' background threads at once (a run's training loader and a fresh one,
    or two ranks' in a test); a pyarrow ParquetFile is not safe to read from two threads at a time (it aborted the
    process), so every use of the file holds the shard's lock."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._lock = threading.Lock()

    def _open(self):
        if self._file is None:
            pq = require_extra("pyarrow.parquet", "parquet", "reading parquet")
            try:
                parquet = pq.ParquetFile(self.path)
            except Exception as exc:
                raise DataError(f"{self.path} is not a readable parquet file ({exc}); re-download it") from None
            if "text" not in parquet.schema_arrow.names:
                raise DataError(f"{self.path} has no `text` column (columns: {', '.join(parquet.schema_arrow.names)})")
            self._file = parquet
        return self._file

    def num_units(self) -> int:
        with self._lock:
            return self._open().num_row_groups

    def read_unit(self, index: int) -> list[str]:
        try:
            with self._lock:
                column = self._open().read_row_group(index, columns=["text"]).column("text")
        except DataError:
            raise
        except Exception as exc:  # a truncated or corrupt row group (pyarrow raises OSError, ArrowInvalid, ...)
            raise DataError(f"{self.path}: row group {index} cannot be read ({exc}); re-download the file") from None
        return [text for text in column.to_pylist() if text and text.strip()]


def whole_files(paths: list[Path]) -> list[FileRange]:
    return [FileRange(reader_for(p)) for p in paths]


def held_out_split(paths: list[Path], reader: Callable[[Path], Reader] = reader_for
                   ) -> tuple[list[FileRange], list[FileRange]]:
    """The fixed train/held-out split of data read in units: the last file is held out (nanochat holds out its last
    parquet shard), or, for a single file, its last unit. The same for every run on the same files."""
    if len(paths) >= 2:
        return [FileRange(reader(p)) for p in paths[:-1]], [FileRange(reader(paths[-1]))]
    only = reader(paths[0])
    n = only.num_units()
    if n < 2:
        raise DataError(f"{paths[0]} is a single piece ({n} row group or block), which cannot be split into "
                        f"training and held-out data; pass several files (the last one is held out) or write the "
                        f"parquet file with smaller row groups")
    return [FileRange(only, range(n - 1))], [FileRange(only, range(n - 1, n))]


def units_in_order(part: list[FileRange]) -> Iterator[list]:
    """The documents of every unit of a part, unit by unit, in stored order: what validation reads."""
    for piece in part:
        for unit in piece.unit_indices():
            yield piece.reader.read_unit(unit)


def documents_in_order(part: list[FileRange]) -> Iterator[str]:
    """Every document of a part, in stored order: what a tokenizer learns from, what `data tokenize` writes."""
    for docs in units_in_order(part):
        yield from docs
