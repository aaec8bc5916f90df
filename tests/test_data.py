"""Token streaming: documents packed behind <|bos|>, batches cut from the stream, resumable and shardable."""

from __future__ import annotations

import pytest
import torch

from nanogpt_core.data.loader import TokenLoader, tokenize_documents
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
    assert loader.state_dict() == {"position": 2 * B * T, "epoch": 0}


def test_every_token_is_a_target_once_per_pass_then_wraps():
    B, T = 2, 4
    tokens = torch.arange(30)  # 8 tokens per batch + 1 lookahead: 3 batches fit (need 25), a 4th would not
    loader = TokenLoader(tokens, B, T)
    targets = [loader.next_batch()[1] for _ in range(3)]
    assert torch.cat([t.flatten() for t in targets]).tolist() == list(range(1, 25))
    x, _ = loader.next_batch()
    assert x[0, 0].item() == 0 and loader.epoch == 1
    assert loader.state_dict() == {"position": B * T, "epoch": 1}


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
