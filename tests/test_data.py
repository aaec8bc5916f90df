"""The in-memory loader: documents packed behind <|bos|>, batches cut from the stream, shuffled per epoch by a seeded
permutation, resumable and shardable. (The streaming loader for large data: tests/test_stream.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanogpt_core.data.loader import TokenLoader, document_starts, tokenize_documents
from nanogpt_core.data.shuffle import permutation
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import DataError


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(["hello world, the tokenizer for the loader tests. " * 30], 280)


def test_tokenize_documents_packs_bos_prefixed_documents(tok):
    docs = ["first document", "second one 🙂", "third"]
    stream = tokenize_documents(docs, tok)
    assert stream.dtype == torch.int64 and stream.dim() == 1
    expected = [i for doc in docs for i in [tok.bos_id, *tok.encode(doc)]]
    assert stream.tolist() == expected
    assert (stream == tok.bos_id).sum().item() == len(docs)
    with pytest.raises(DataError):
        tokenize_documents([], tok)


def test_batches_are_consecutive_rows_offset_by_one():
    B, T = 3, 5
    loader = TokenLoader(torch.arange(100), B, T)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64
    for r in range(B):  # row r is tokens[r*T : r*T + T + 1]
        assert x[r].tolist() == list(range(r * T, r * T + T))
        assert y[r].tolist() == list(range(r * T + 1, r * T + T + 1))
    x2, _ = loader.next_batch()  # the next batch starts where this one's targets end
    assert x2[0, 0].item() == y[-1, -1].item() == B * T
    assert loader.state_dict() == {"position": 2 * B * T, "epoch": 0, "shuffle_seed": None}


def test_every_token_is_a_target_once_per_pass_then_wraps():
    B, T = 2, 4
    tokens = torch.arange(30)  # 8 tokens per batch + 1 lookahead: 3 batches fit (need 25), a 4th would not
    loader = TokenLoader(tokens, B, T)
    targets = [loader.next_batch()[1] for _ in range(3)]
    assert torch.cat([t.flatten() for t in targets]).tolist() == list(range(1, 25))
    x, _ = loader.next_batch()
    assert x[0, 0].item() == 0 and loader.epoch == 1
    assert loader.state_dict() == {"position": B * T, "epoch": 1, "shuffle_seed": None}


def test_resume_from_state_continues_exactly():
    tokens = torch.randint(0, 1000, (500,))
    a = TokenLoader(tokens, 2, 7)
    for _ in range(20):  # 35 batches fit in one pass: stop mid-pass
        a.next_batch()
    state = a.state_dict()
    b = TokenLoader(tokens, 2, 7)
    b.load_state_dict(dict(state))
    for _ in range(40):  # crosses the end of the stream
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.state_dict() == b.state_dict() and a.epoch == 1


def test_two_ranks_see_the_tokens_of_one_rank_with_double_batch():
    tokens = torch.randint(0, 1000, (301,))
    B, T = 2, 6
    single = TokenLoader(tokens, 2 * B, T)
    ranks = [TokenLoader(tokens, B, T, rank=r, world_size=2) for r in range(2)]
    for _ in range(15):  # 301 tokens hold 12 global batches of 24: this wraps
        xs, ys = single.next_batch()
        parts = [loader.next_batch() for loader in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), xs)
        assert torch.equal(torch.cat([p[1] for p in parts]), ys)
        assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()


def test_too_short_stream_says_what_is_needed():
    with pytest.raises(DataError, match=r"has 20 tokens but one batch needs 33 \(2 rank\(s\) x batch 2 x seq len 8"):
        TokenLoader(torch.arange(20), 2, 8, rank=1, world_size=2)
    TokenLoader(torch.arange(33), 2, 8, rank=1, world_size=2)  # exactly enough


def test_bad_state_is_rejected():
    loader = TokenLoader(torch.arange(50), 2, 4)
    with pytest.raises(DataError, match="past the end"):
        loader.load_state_dict({"position": 51, "epoch": 0})
    with pytest.raises(DataError, match="non-negative integers"):
        loader.load_state_dict({"position": -1, "epoch": 0})


# --- shuffling documents per epoch ----------------------------------------------------------------------------------

BOS = 999


def _packed(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, list[list[int]]]:
    """A stream of documents of the given lengths, each bos then distinct ids (so every token says where it is)."""
    g = torch.Generator().manual_seed(seed)
    docs = [[BOS, *torch.randint(0, BOS, (n - 1,), generator=g).tolist()] for n in lengths]
    return torch.tensor([t for d in docs for t in d]), docs


def _targets_of_epoch(loader: TokenLoader, batches: int) -> list[int]:
    """The first input and every target of `batches` consecutive batches: the stretch of stream they cover."""
    x, y = loader.next_batch()
    covered = [x[0, 0].item(), *y.flatten().tolist()]
    for _ in range(batches - 1):
        covered += loader.next_batch()[1].flatten().tolist()
    return covered


def test_document_starts_are_the_bos_positions_and_the_stream_start():
    assert document_starts(torch.tensor([BOS, 1, 2, BOS, 3]), BOS).tolist() == [0, 3]
    assert document_starts(torch.tensor([7, BOS, 1]), BOS).tolist() == [0, 1]  # text before the first bos: a doc
    assert document_starts(torch.tensor([7, 8]), BOS).tolist() == [0]


def test_each_epoch_reads_the_documents_in_that_epochs_seeded_order():
    lengths = [5, 9, 3, 12, 7, 4, 8, 6, 10, 2]
    tokens, docs = _packed(lengths)
    B, T = 2, 6  # 12 tokens a batch: 5 batches (61 tokens) of the 66-token stream per epoch
    loader = TokenLoader(tokens, B, T, shuffle_seed=11, bos_id=BOS)
    for epoch in range(3):
        order = permutation(len(docs), 11, epoch)  # the order, computed apart from the loader
        expected = [t for i in order for t in docs[i]]
        assert _targets_of_epoch(loader, 5) == expected[:61], f"epoch {epoch}"
    orders = [permutation(len(docs), 11, e).tolist() for e in range(3)]
    assert len({tuple(o) for o in orders}) == 3 and sorted(orders[0]) == list(range(len(docs)))
    # the same seed is the same order on another loader; no seed is the stored order every epoch
    again = TokenLoader(tokens, B, T, shuffle_seed=11, bos_id=BOS)
    assert _targets_of_epoch(again, 5) == [t for i in orders[0] for t in docs[i]][:61]
    stored = TokenLoader(tokens, B, T)
    assert _targets_of_epoch(stored, 5) == _targets_of_epoch(stored, 5)[:61] == tokens[:61].tolist()


def test_shuffled_resume_continues_exactly_across_epochs():
    tokens, _ = _packed([int(n) for n in np.random.default_rng(0).integers(2, 40, size=60)])  # 1,233 tokens
    a = TokenLoader(tokens, 2, 7, shuffle_seed=3, bos_id=BOS)
    for _ in range(100):  # 88 batches of 14 fit in an epoch: stop inside the second
        a.next_batch()
    state = a.state_dict()
    assert state == {"position": 12 * 14, "epoch": 1, "shuffle_seed": 3}
    b = TokenLoader(tokens, 2, 7, bos_id=BOS)  # built without a seed: the state's seed wins
    b.load_state_dict(dict(state))
    for _ in range(200):  # two more epoch boundaries
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.state_dict() == b.state_dict() and a.epoch >= 2


def test_two_ranks_shuffled_see_the_tokens_of_one_rank_with_double_batch():
    tokens, _ = _packed([int(n) for n in np.random.default_rng(1).integers(2, 30, size=25)])
    single = TokenLoader(tokens, 4, 6, shuffle_seed=5, bos_id=BOS)
    ranks = [TokenLoader(tokens, 2, 6, rank=r, world_size=2, shuffle_seed=5, bos_id=BOS) for r in range(2)]
    for _ in range(40):  # several epochs
        xs, ys = single.next_batch()
        parts = [loader.next_batch() for loader in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), xs)
        assert torch.equal(torch.cat([p[1] for p in parts]), ys)


def test_a_shuffled_state_needs_to_know_where_documents_start():
    with pytest.raises(Exception, match="needs bos_id"):
        TokenLoader(torch.arange(50), 2, 4, shuffle_seed=1)
    loader = TokenLoader(torch.arange(50), 2, 4)
    with pytest.raises(DataError, match="does not know where documents start"):
        loader.load_state_dict({"position": 0, "epoch": 0, "shuffle_seed": 4})
    loader.load_state_dict({"position": 8, "epoch": 2})  # a checkpoint from before shuffling: stored order
    assert loader.state_dict() == {"position": 8, "epoch": 2, "shuffle_seed": None}


def test_the_permutation_is_pinned_so_a_checkpoint_resumes_on_another_machine():
    """A checkpoint stores the seed and the epoch, not the order: the order must be the same function everywhere.
    These values are numpy's PCG64 + SeedSequence; if an upgrade changed them, resuming an old run would read other
    documents, so this fails first."""
    assert permutation(10, 42, 0).tolist() == [5, 6, 0, 7, 3, 2, 4, 9, 1, 8]
    assert permutation(10, 42, 1).tolist() == [0, 8, 7, 4, 3, 1, 2, 9, 6, 5]
    assert permutation(10, -1, 0).tolist() == permutation(10, 2**64 - 1, 0).tolist()  # negative seeds wrap
    assert sorted(permutation(1000, 7, 3, 2, 1).tolist()) == list(range(1000))
