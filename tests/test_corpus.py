"""The built-in corpus and reading user data: sizes, determinism, splits and every kind of bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from nanogpt_core.data.corpus import default_corpus_documents, load_documents, split_documents
from nanogpt_core.data.sources import TEXT_DOCUMENT_CHARS, split_text_into_documents
from nanogpt_core.errors import ConfigError, DataError

_HASH_SNIPPET = (
    "import hashlib; from nanogpt_core.data.corpus import default_corpus_documents as d; "
    "print(hashlib.sha256('\\x00'.join(d()).encode()).hexdigest())"
)


def _sha(docs: list[str]) -> str:
    return hashlib.sha256("\x00".join(docs).encode()).hexdigest()


def test_default_corpus_is_large_english_text():
    docs = default_corpus_documents()
    assert sum(len(d.encode("utf-8")) for d in docs) >= 1_000_000
    assert len(docs) >= 100
    assert all(d and d == d.strip() for d in docs)
    joined = "\n".join(docs)
    assert " the " in joined and "\t" not in joined and "\n\n\n" not in joined


def test_default_corpus_is_deterministic_across_calls_and_processes():
    first, second = default_corpus_documents(), default_corpus_documents()
    assert first == second
    first.append("mutating the returned list must not change the cache")
    assert default_corpus_documents() == second
    # a fresh interpreter with a different hash seed imports modules in its own state: same bytes
    out = subprocess.run([sys.executable, "-c", _HASH_SNIPPET], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == _sha(second)


def test_none_means_default_corpus():
    assert load_documents(None) == default_corpus_documents()


def test_text_file_is_cut_at_blank_lines_into_large_documents(tmp_path):
    paragraphs = [f"Paragraph {i}. " + "word " * 200 for i in range(40)]  # ~1 kB each
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    docs = load_documents(path)
    assert len(docs) > 1
    assert all(len(d) >= TEXT_DOCUMENT_CHARS for d in docs)
    assert "\n\n".join(docs) == "\n\n".join(paragraphs)  # nothing lost, nothing reordered


def test_text_without_blank_lines_is_one_document():
    text = "line one\nline two\n" * 1000
    assert split_text_into_documents(text) == [text.strip("\n")]


def test_folder_reads_txt_and_md_sorted_and_ignores_others(tmp_path):
    (tmp_path / "b.md").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third", encoding="utf-8")
    (tmp_path / "notes.json").write_text("{}", encoding="utf-8")
    (tmp_path / "d.txt.part").write_bytes(b"\x00partial download")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert load_documents(tmp_path) == ["first", "second", "third"]


def test_parquet_shards_text_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["doc one", "doc two"], "id": [1, 2]}), tmp_path / "shard_00000.parquet",
                   row_group_size=1)
    pq.write_table(pa.table({"text": ["doc three", ""]}), tmp_path / "shard_00001.parquet")
    assert load_documents(tmp_path) == ["doc one", "doc two", "doc three"]
    assert load_documents(tmp_path / "shard_00001.parquet") == ["doc three"]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="no `text` column"):
        load_documents(tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n\n \n", "is empty"),
        (b"text then \x00\x01\x02 binary", "looks binary \\(NUL byte at offset 10\\)"),
        (b"caf\xe9 au lait", "not UTF-8 \\(invalid byte 0xe9 at offset 3\\)"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_documents(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_path_and_folder_without_documents(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_documents(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="no .txt, .md or .parquet files"):
        load_documents(tmp_path)
    (tmp_path / "blank.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no documents found"):
        load_documents(tmp_path)


def test_split_every_kth_document_to_validation():
    docs = [f"doc {i}" for i in range(100)]
    train, val = split_documents(docs, val_fraction=0.05)
    assert val == [f"doc {i}" for i in range(19, 100, 20)]
    assert train == [d for d in docs if d not in val]
    assert split_documents(docs) == (train, val)  # fixed, not random


def test_split_few_documents_keeps_both_sides_non_empty():
    assert split_documents(["a", "b"]) == (["a"], ["b"])
    assert split_documents(["a", "b", "c"], val_fraction=0.5) == (["a", "c"], ["b"])


def test_split_single_document_cuts_its_text_at_a_line():
    text = "".join(f"line {i}\n" for i in range(100))
    (train,), (val,) = split_documents([text], val_fraction=0.1)
    assert train + val == text
    assert train.endswith("\n") and val.startswith("line ")
    assert 0.05 < len(val) / len(text) < 0.15
    assert split_documents(["ab"]) == (["a"], ["b"])
    with pytest.raises(DataError):
        split_documents(["a"])
    with pytest.raises(DataError):
        split_documents([])
    with pytest.raises(ConfigError):
        split_documents(["a", "b"], val_fraction=1.0)


def test_default_corpus_split_is_representative():
    train, val = split_documents(default_corpus_documents())
    assert len(val) >= 10 and sum(map(len, val)) >= 20_000
    assert not set(train) & set(val)
