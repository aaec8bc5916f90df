"""Shared pieces of the training, checkpoint and sampling tests: a small slice of the built-in corpus, a tokenizer
trained on it once per session, and settings for a model small enough that a step takes milliseconds.

Test modules import the fixtures from here (`from tiny_training import tiny_corpus, tiny_tokenizer  # noqa: F401`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nanogpt_core.train.settings import TrainSettings

CORPUS_CHARS = 160_000  # ~40 documents of >= 4 KB: 2 validation documents, the rest training text
VOCAB_SIZE = 384
SHARDS = 8


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The first ~160 KB of the built-in corpus as one text file (the loader cuts it into documents)."""
    from nanogpt_core.data.corpus import default_corpus_documents

    text, size = [], 0
    for doc in default_corpus_documents():
        text.append(doc)
        size += len(doc)
        if size >= CORPUS_CHARS:
            break
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(text), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_shards(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus as a folder of 8 text files (whole documents each), for streamed runs (`stream=True`): the
    last file is held out, and each file is one unit, so 2 ranks read 4 and 3 of the other 7."""
    docs = tiny_corpus.read_text(encoding="utf-8").split("\n\n")
    folder = tmp_path_factory.mktemp("shards")
    per_file = -(-len(docs) // SHARDS)
    for i in range(SHARDS):
        (folder / f"part_{i:02d}.txt").write_text("\n\n".join(docs[i * per_file:(i + 1) * per_file]),
                                                  encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus, tmp_path_factory) -> Path:
    """A 384-token BPE trained once on the tiny corpus; its folder, for --tokenizer."""
    from nanogpt_core.data.tokenizer import Tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    Tokenizer.train([tiny_corpus.read_text(encoding="utf-8")], VOCAB_SIZE).save(folder)
    return folder


def tiny_settings(corpus: Path, tokenizer: Path | None, out: Path, **overrides) -> TrainSettings:
    """One layer, 64 wide, 64-token context, 256 tokens a step (2 micro-batches of 2 x 64): ~10 ms a step."""
    base = dict(depth=1, n_embd=64, n_head=1, n_kv_head=1, max_seq_len=64, device_batch_size=2,
                total_batch_size=256, num_iterations=8, eval_every=-1, eval_tokens=512, sample_every=-1,
                data=str(corpus), tokenizer=str(tokenizer) if tokenizer else None, out=str(out), device="cpu", seed=7)
    base.update(overrides)
    return TrainSettings(**base)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
