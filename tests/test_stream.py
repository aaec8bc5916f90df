"""Data at scale: files read unit by unit (`data.sources`), the streaming loader (`data.stream`), pre-tokenized
shards (`data.tokenized`) and the choice between memory and streaming (`data.training_data`).

Expected streams are built here from the documents themselves, one `tokenizer.encode` per document, in the unit
order the module docstrings promise (computed by hand, not by the loader's code), and compared token for token.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from nanogpt_core.data import sources, stream, tokenized, training_data
from nanogpt_core.data.loader import encode_documents, tokenize_documents
from nanogpt_core.data.shuffle import permutation
from nanogpt_core.data.sources import FileRange, ParquetShard, TextFile, held_out_split, split_text_into_documents
from nanogpt_core.data.stream import StreamingLoader
from nanogpt_core.data.tokenized import TokenizedFolder, tokenize_to_shards
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.data.training_data import open_training_data
from nanogpt_core.errors import ConfigError, DataError

WORDS = ("the loader reads every unit of the data once per epoch and packs the documents behind a bos token "
         "while the model trains on batches of rows").split()


def _documents(n: int, seed: int) -> list[str]:
    """n documents of 3..40 words (no blank lines inside), different each."""
    rng = np.random.default_rng(seed)
    return [f"doc {seed}-{i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))) for i in range(n)]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([" ".join(WORDS) * 20, "doc 0123456789: -"], 300)


def _expected(docs: list[str], tok: Tokenizer) -> list[int]:
    return [t for doc in docs for t in [tok.bos_id, *tok.encode(doc)]]


def _covered(loader, batches: int) -> list[int]:
    """The stretch of the rank's stream that `batches` batches cover: x[0, 0], then every target (y's rows are
    consecutive, so y flattened is the stream from the second token on)."""
    x, y = loader.next_batch()
    covered = [x[0, 0].item(), *y.flatten().tolist()]
    for _ in range(batches - 1):
        covered += loader.next_batch()[1].flatten().tolist()
    return covered


def _encode(tok):
    return lambda docs: encode_documents(docs, tok)


@pytest.fixture
def parquet_folder(tmp_path) -> tuple[Path, list[list[list[str]]]]:
    """3 parquet shards of 4, 3 and 2 row groups, 2-6 documents each; returns the folder and docs[file][group]."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(0)
    layout = []
    for f, groups in enumerate((4, 3, 2)):
        per_group = [_documents(int(rng.integers(2, 7)), seed=100 * f + g) for g in range(groups)]
        writer = pq.ParquetWriter(tmp_path / f"shard_{f:05d}.parquet", pa.schema([("text", pa.string())]))
        for docs in per_group:
            writer.write_table(pa.table({"text": docs}))
        writer.close()
        layout.append(per_group)
    return tmp_path, layout


# --- reading files in units ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["paragraphs", "crlf", "lines", "one-line"])
def test_text_blocks_tile_the_file_and_stay_bounded(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(sources, "TEXT_UNIT_BYTES", 700)
    monkeypatch.setattr(sources, "SEPARATOR_SEARCH_BYTES", 300)
    rng = np.random.default_rng(1)
    # paragraphs (and lines) shorter than the 300 bytes searched for a separator: each block ends at one
    paragraphs = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 40)))) for _ in range(120)]
    text, joiner = {
        "paragraphs": ("\n\n".join(paragraphs), "\n\n"),
        "crlf": ("\r\n\r\n".join(paragraphs), "\n\n"),
        "lines": ("\n".join(paragraphs), "\n"),  # no blank line: blocks end at line ends
        "one-line": ("é ".join(paragraphs), ""),  # no line end at all: blocks end at a character boundary
    }[kind]
    path = tmp_path / "book.txt"
    path.write_bytes(text.encode("utf-8"))
    reader = TextFile(path)
    assert reader.num_units() == -(-path.stat().st_size // 700) > 10
    units = [reader.read_unit(i) for i in range(reader.num_units())]
    docs = [doc for unit in units for doc in unit]
    whole = text.replace("\r\n", "\n")
    assert joiner.join(docs) == (whole if kind == "one-line" else whole.strip("\n"))  # nothing lost, nothing moved
    assert max(len(doc.encode("utf-8")) for doc in docs) <= 700 + 300 + 2
    if kind == "paragraphs":  # a block's documents are cut as the whole text is
        assert "\n\n".join(docs) == "\n\n".join(split_text_into_documents(whole))


def test_a_bad_byte_in_a_later_block_names_the_file_and_its_offset(tmp_path, monkeypatch, tok):
    monkeypatch.setattr(sources, "TEXT_UNIT_BYTES", 500)
    good = "\n\n".join(_documents(40, 2)).encode()
    path = tmp_path / "data.txt"
    path.write_bytes(good + b"\n\ncaf\xe9 " + good)
    loader = StreamingLoader([FileRange(TextFile(path))], _encode(tok), 2, 8)
    with pytest.raises(DataError, match=rf"not UTF-8 \(invalid byte 0xe9 at offset {len(good) + 5}\)") as info:
        for _ in range(10_000):
            loader.next_batch()
    assert str(path) in str(info.value)


def test_parquet_row_groups_are_the_units(parquet_folder):
    folder, layout = parquet_folder
    shard = ParquetShard(folder / "shard_00000.parquet")
    assert shard.num_units() == 4
    assert [shard.read_unit(g) for g in range(4)] == layout[0]
    (folder / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable parquet file"):
        ParquetShard(folder / "broken.parquet").num_units()


def test_held_out_part_is_the_last_file_or_a_single_files_last_unit(parquet_folder, tmp_path, monkeypatch):
    folder, _ = parquet_folder
    files = sorted(folder.glob("*.parquet"))
    train, val = held_out_split(files)
    assert [p.reader.path for p in train] == files[:2] and [p.reader.path for p in val] == [files[2]]
    train, val = held_out_split(files[:1])
    assert train[0].unit_indices() == range(3) and val[0].unit_indices() == range(3, 4)
    one = tmp_path / "small.txt"
    one.write_text("short text", encoding="utf-8")
    with pytest.raises(DataError, match="single piece .* pass several files"):
        held_out_split([one])


# --- the streaming loader -----------------------------------------------------------------------------------------


def _units_of_rank(layout, rank: int, world: int, seed: int | None = None, epoch: int = 0) -> list[list[str]]:
    """By hand: the documents of every unit rank `rank` reads in `epoch`, in order (see data.stream's docstring)."""
    files = list(range(len(layout))) if seed is None else permutation(len(layout), seed, epoch).tolist()
    out, counter = [], 0
    for f in files:
        groups = list(range(len(layout[f]))) if seed is None else permutation(len(layout[f]), seed, epoch, f).tolist()
        for g in groups:
            if counter % world == rank:
                docs = layout[f][g]
                if seed is not None:
                    docs = [docs[i] for i in permutation(len(docs), seed, epoch, f, g)]
                out.append(docs)
            counter += 1
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("seed", [None, 5])
def test_each_rank_reads_its_own_units_in_each_epochs_order(parquet_folder, tok, world, seed):
    folder, layout = parquet_folder
    part = [FileRange(ParquetShard(p)) for p in sorted(folder.glob("*.parquet"))]
    everything = sorted(doc for f in layout for g in f for doc in g)
    read_by_ranks = []
    for rank in range(world):
        epochs = [_expected([d for unit in _units_of_rank(layout, rank, world, seed, e) for d in unit], tok)
                  for e in range(3)]
        expected = [t for e in epochs for t in e]
        loader = StreamingLoader(part, _encode(tok), 2, 5, rank=rank, world_size=world, shuffle_seed=seed)
        batches = (len(expected) - 1) // 10
        assert _covered(loader, batches) == expected[:batches * 10 + 1]
        loader.close()
        read_by_ranks += [d for unit in _units_of_rank(layout, rank, world, seed) for d in unit]
    assert sorted(read_by_ranks) == everything  # together the ranks read every document once an epoch
    if seed is not None:  # and the order really changes from epoch to epoch
        assert _units_of_rank(layout, 0, world, seed, 0) != _units_of_rank(layout, 0, world, seed, 1)


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stop=st.integers(0, 40), world=st.sampled_from([1, 2]), seed=st.sampled_from([None, 9]),
       batch=st.sampled_from([(1, 3), (2, 7), (3, 16)]))
def test_a_resumed_loader_reads_exactly_what_the_uninterrupted_one_reads(parquet_folder, tok, monkeypatch, stop,
                                                                         world, seed, batch):
    monkeypatch.setattr(stream, "CHUNK_DOCUMENTS", 2)  # positions inside chunks, units and documents
    folder, _ = parquet_folder
    part = [FileRange(ParquetShard(p)) for p in sorted(folder.glob("*.parquet"))]
    for rank in range(world):
        a = StreamingLoader(part, _encode(tok), *batch, rank=rank, world_size=world, shuffle_seed=seed)
        for _ in range(stop):
            a.next_batch()
        state = a.state_dict()
        b = StreamingLoader(part, _encode(tok), *batch, rank=rank, world_size=world)
        b.load_state_dict(dict(state))
        assert b.state_dict() == state
        for _ in range(25):  # the data holds ~750 tokens a rank: this crosses epochs
            xa, ya = a.next_batch()
            xb, yb = b.next_batch()
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert a.state_dict() == b.state_dict()
        a.close()
        b.close()


class _CountingReader:
    """A file of `units` units of 3 short documents (token lists), counting what is read."""

    def __init__(self, units: int):
        self.units = units
        self.read = 0
        self.path = Path(f"fake-{units}")

    def num_units(self) -> int:
        return self.units

    def read_unit(self, index: int) -> list[np.ndarray]:
        self.read += 1
        return [np.array([0, index % 7 + 1, 5, 6], dtype=np.int32)] * 3


def test_the_first_batch_reads_a_few_units_whatever_the_datas_size():
    from nanogpt_core.data.tokenized import pack_token_documents

    counts = {}
    for units in (100, 100_000):
        reader = _CountingReader(units)
        loader = StreamingLoader([FileRange(reader)], pack_token_documents, 2, 8)
        loader.next_batch()
        time.sleep(0.3)  # let the tokenizer thread run ahead as far as it may
        counts[units] = reader.read
        loader.close()
    # each unit is one chunk of 12 tokens; the thread stops PREFETCH_CHUNKS ahead of the 17 tokens a batch needs
    assert counts[100] == counts[100_000] <= stream.PREFETCH_CHUNKS + 3


def test_a_loader_dropped_without_close_stops_its_thread():
    import gc

    from nanogpt_core.data.tokenized import pack_token_documents

    loader = StreamingLoader([FileRange(_CountingReader(1000))], pack_token_documents, 2, 8)
    loader.next_batch()
    thread = loader._thread
    assert thread.is_alive()
    del loader
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_rank_without_units_and_a_state_of_another_run_are_refused(parquet_folder, tok):
    folder, _ = parquet_folder
    one_file = [FileRange(ParquetShard(folder / "shard_00002.parquet"))]  # 2 row groups
    loader = StreamingLoader(one_file, _encode(tok), 1, 4, rank=2, world_size=3)
    with pytest.raises(DataError, match="rank 2 of 3 found no data in a whole pass .* fewer pieces"):
        loader.next_batch()
    state = StreamingLoader(one_file, _encode(tok), 1, 4).state_dict()
    with pytest.raises(ConfigError, match="rank 0 of 1, this process is rank 1 of 2.* resume with 1 process"):
        StreamingLoader(one_file, _encode(tok), 1, 4, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(DataError, match="read the data in memory, this run streams it"):
        StreamingLoader(one_file, _encode(tok), 1, 4).load_state_dict({"position": 0, "epoch": 0})
    moved = StreamingLoader(one_file, _encode(tok), 1, 4)
    moved.load_state_dict({**state, "doc": 50})  # a document the unit does not have: the files changed
    with pytest.raises(DataError, match="files changed since the checkpoint"):
        moved.next_batch()


# --- pre-tokenized shards --------------------------------------------------------------------------------------


def test_tokenized_shards_hold_exactly_the_tokens_of_the_documents(tmp_path, tok, monkeypatch):
    train_docs, val_docs = _documents(60, 3), _documents(7, 4)
    monkeypatch.setattr(tokenized, "ENCODE_DOCUMENTS", 8)  # a shard closes between batches of documents
    folder = tokenize_to_shards(train_docs, val_docs, tok, tmp_path / "out", source="test", shard_tokens=400)
    assert len(folder.train) > 2 and folder.dtype == np.uint16
    assert folder.read_all("train").tolist() == _expected(train_docs, tok)
    assert folder.read_all("val").tolist() == _expected(val_docs, tok)
    # streamed through np.memmap in blocks that start at a bos: the same stream
    monkeypatch.setattr(tokenized, "TOKEN_UNIT_TOKENS", 64)
    again = TokenizedFolder.open(tmp_path / "out")
    loader = StreamingLoader(again.part("train"), tokenized.pack_token_documents, 2, 6)
    expected = _expected(train_docs, tok)
    batches = (len(expected) - 1) // 12
    assert _covered(loader, batches) == expected[:batches * 12 + 1]
    loader.close()
    with pytest.raises(ConfigError, match="already holds tokenized data"):
        tokenize_to_shards(train_docs, val_docs, tok, tmp_path / "out", source="test")
    other = Tokenizer.train(["something else entirely " * 50], 280)
    with pytest.raises(DataError, match=r"was tokenized with tokenizer \w+, this run uses"):
        again.check_tokenizer(other)
    (tmp_path / "out" / "train_00001.bin").write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match="train_00001.bin is 2 bytes, expected"):
        TokenizedFolder.open(tmp_path / "out")


# --- memory or stream -------------------------------------------------------------------------------------------


def test_the_mode_follows_the_size_unless_forced(parquet_folder, monkeypatch):
    folder, _ = parquet_folder
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    monkeypatch.setattr(training_data, "AUTO_STREAM_BYTES", size)
    assert open_training_data(folder).mode == "memory"
    monkeypatch.setattr(training_data, "AUTO_STREAM_BYTES", size - 1)
    assert open_training_data(folder).mode == "stream"
    assert open_training_data(folder, stream=False).mode == "memory"
    assert open_training_data(None).mode == "memory"
    with pytest.raises(ConfigError, match="built-in corpus is read in memory"):
        open_training_data(None, stream=True)
    with pytest.raises(DataError, match="does not exist"):
        open_training_data(folder / "nope")


def test_streamed_validation_reads_only_what_the_evaluations_use(parquet_folder, tok, monkeypatch):
    folder, layout = parquet_folder
    data = open_training_data(folder, stream=True)
    held_out = _expected([d for g in layout[2] for d in g], tok)
    assert data.val_tokens(tok, 30).tolist() == held_out[:30]
    assert data.val_tokens(tok).tolist() == held_out
    assert "held out: shard_00002.parquet" in data.describe()
    monkeypatch.setattr(training_data, "TOKENIZER_TRAIN_CHARS", 100)  # a tokenizer learns from the first text only
    texts = list(data.tokenizer_texts())
    assert texts == layout[0][0][:len(texts)] and sum(map(len, texts[:-1])) < 100 <= sum(map(len, texts))
    memory = open_training_data(folder, stream=False)  # every 20th document held out, all of them tokenized
    train_docs = [d for f in layout for g in f for d in g]
    assert memory.val_tokens(tok, 30).tolist() == _expected(train_docs[19::20], tok)


def test_in_memory_data_is_what_nanogpt_always_read(tmp_path, tok):
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(_documents(300, 5)), encoding="utf-8")
    data = open_training_data(path)
    assert data.mode == "memory"
    loader = data.train_loader(tok, 2, 8)
    from nanogpt_core.data.corpus import load_documents, split_documents

    train_docs, _ = split_documents(load_documents(path))
    assert torch.equal(loader.tokens, tokenize_documents(train_docs, tok))
    assert data.describe().startswith(f"{path}: ") and "(in memory)" in data.describe()


# --- the command line ----------------------------------------------------------------------------------------------

TINY_FLAGS = ["--depth=1", "--n-embd=64", "--n-head=1", "--max-seq-len=32", "--device-batch-size=2",
              "--total-batch-size=64", "--eval-tokens=64", "--device=cpu", "--num-iterations=3", "--eval-every=1"]


def _one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tokenize_once_and_train_on_it_reads_the_very_same_tokens(tmp_path):
    from click.testing import CliRunner

    from nanogpt_cli.main import cli
    from nanogpt_core.train.run_log import read_metrics

    src = tmp_path / "book.txt"
    src.write_text("\n\n".join(_documents(400, 6)), encoding="utf-8")
    out = tmp_path / "tokens"
    result = CliRunner().invoke(cli, ["data", "tokenize", str(src), str(out), "--vocab-size=300"])
    assert result.exit_code == 0, result.output
    assert f"Train on it with: nanogpt train --data {out}" in result.stdout
    runs = {}
    for name, flags in (("text", ["--data", str(src), "--tokenizer", str(out / "tokenizer")]),
                        ("tokens", ["--data", str(out)])):  # its own tokenizer, found in the folder
        result = CliRunner().invoke(cli, ["train", *flags, *TINY_FLAGS, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        runs[name] = [(r["type"], r.get("loss", r.get("val_bpb"))) for r in read_metrics(tmp_path / name)]
    assert runs["tokens"] == runs["text"] and len(runs["text"]) == 7  # 3 steps, 4 evaluations: bit for bit
    before = _files(out)
    _one_line_error(CliRunner().invoke(cli, ["data", "tokenize", str(src), str(out)]), "already holds tokenized data")
    assert _files(out) == before  # nothing overwritten
    other = tmp_path / "other-tokenizer"
    Tokenizer.train(["some other text entirely " * 40], 280).save(other)
    _one_line_error(CliRunner().invoke(cli, ["train", "--data", str(out), "--tokenizer", str(other), *TINY_FLAGS,
                                             "--out", str(tmp_path / "wrong")]), "was tokenized with tokenizer")


def test_a_bad_byte_met_while_streaming_is_one_line(tmp_path, tok):
    from click.testing import CliRunner

    from nanogpt_cli.main import cli

    folder = tmp_path / "data"
    folder.mkdir()
    good = "\n\n".join(_documents(200, 7)).encode()
    (folder / "a.txt").write_bytes(good[:3000] + b"\xff" + good[3000:])  # read by the tokenizer thread at step 0
    (folder / "b.txt").write_bytes(good)
    tok.save(tmp_path / "tok")
    result = CliRunner().invoke(cli, ["train", "--data", str(folder), "--stream", "--tokenizer", str(tmp_path / "tok"),
                                      *TINY_FLAGS, "--out", str(tmp_path / "run")])
    _one_line_error(result, f"{folder / 'a.txt'} is not UTF-8 (invalid byte 0xff at offset 3000)")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_every_command_in_docs_data_exists_with_its_flags():
    import re
    import shlex

    import click

    from nanogpt_cli.main import cli

    doc = (Path(__file__).parent.parent / "docs" / "data.md").read_text(encoding="utf-8")
    lines = [line.split("#")[0] for block in re.findall(r"```bash\n(.*?)```", doc, flags=re.S)
             for line in block.splitlines() if line.startswith("nanogpt ")]
    assert len(lines) >= 8
    for line in lines:
        words = shlex.split(line)[1:]
        command = cli
        while isinstance(command, click.Group):
            command = command.commands[words.pop(0)]
        known = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
        flags = {w.split("=")[0] for w in words if w.startswith("--")}
        assert flags <= known, f"{line}: {flags - known} are not flags of the command"
