"""The BPE tokenizer: exact round trips, stable ids for special tokens, byte lengths and plain-text saving."""

from __future__ import annotations

import json

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt_core.data.tokenizer import (
    BOS,
    CONFIG_FILE,
    MIN_VOCAB_SIZE,
    RANKS_FILE,
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    TOKEN_BYTES_FILE,
    Tokenizer,
)
from nanogpt_core.errors import CheckpointError, ConfigError

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Numbers like 12345 and 2024 split into pairs of digits; café, naïve, 東京, emoji 🙂.\n" * 10,
    "def function(argument):\n    return argument + 1\n" * 10,
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(TRAIN_TEXT, 300)


# any Unicode text except lone surrogates (which are not encodable as UTF-8 at all)
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(text=unicode_text)
def test_round_trip_on_arbitrary_unicode(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.bos_id for i in ids)  # ordinary text never yields a special id
    # the tokens' bytes are exactly the text's UTF-8 bytes, which is what bits per byte relies on
    assert sum(tok.token_bytes()[i].item() for i in ids) == len(text.encode("utf-8"))


def test_training_reaches_vocab_size_and_merges_frequent_words(tok):
    assert tok.vocab_size == 300
    assert len(tok.mergeable_ranks) == 300 - len(SPECIAL_TOKENS)
    assert tok.pattern == SPLIT_PATTERN
    assert len(tok.encode(" quick brown fox")) < len(" quick brown fox")  # learned merges
    # numbers are split into runs of at most two digits before merging, so no token spans more than two digits
    digits = Tokenizer.train(["12345678 " * 50], 300)
    assert [digits.decode([i]) for i in digits.encode("12345678")] == ["12", "34", "56", "78"]
    assert digits.vocab_size < 300  # nothing left to merge: the vocabulary stops short, and says so in vocab_size


def test_training_is_deterministic(tok):
    assert Tokenizer.train(TRAIN_TEXT, 300).fingerprint == tok.fingerprint
    assert Tokenizer.train(TRAIN_TEXT, 301).fingerprint != tok.fingerprint


def test_special_tokens_follow_the_ranks(tok):
    n = len(tok.mergeable_ranks)
    assert tok.special_tokens == {name: n + i for i, name in enumerate(SPECIAL_TOKENS)}
    assert tok.bos_id == n == tok.enc.encode_single_token(BOS)
    assert tok.encode("hi", prepend_bos=True) == [tok.bos_id, *tok.encode("hi")]
    assert BOS.encode() not in tok.mergeable_ranks
    assert tok.bos_id not in tok.encode(f"text with {BOS} inside")  # a special token's text is plain text
    assert tok.decode([tok.bos_id]) == BOS


def test_encode_batch_matches_encode(tok):
    texts = ["one", "", "two three 🙂", "four\n\nfive"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, prepend_bos=True) == [tok.encode(t, prepend_bos=True) for t in texts]


def test_token_bytes_are_utf8_lengths_and_zero_for_specials(tok):
    lengths = tok.token_bytes()
    assert lengths.dtype.is_floating_point is False and str(lengths.dtype) == "torch.int32"
    assert lengths.shape == (tok.vocab_size,)
    for token_id in range(tok.vocab_size):
        expected = 0 if token_id >= tok.bos_id else len(tok.enc.decode_single_token_bytes(token_id))
        assert lengths[token_id].item() == expected
    assert lengths[:256].tolist() == [1] * 256


def test_save_load_gives_identical_tokenizer(tok, tmp_path):
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_FILE, RANKS_FILE, TOKEN_BYTES_FILE])
    loaded = Tokenizer.load(tmp_path)
    assert loaded.fingerprint == tok.fingerprint and loaded.vocab_size == tok.vocab_size
    assert loaded.mergeable_ranks == tok.mergeable_ranks and loaded.special_tokens == tok.special_tokens
    text = "Saving must not change a single id: 123456 ünïcödé 🙂 <|bos|>\n\n  spaces"
    assert loaded.encode(text, prepend_bos=True) == tok.encode(text, prepend_bos=True)
    assert loaded.token_bytes().tolist() == tok.token_bytes().tolist()
    # plain text, no pickle: the files are readable JSON and base64 lines
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["pattern"] == SPLIT_PATTERN and config["fingerprint"] == tok.fingerprint
    first_line = (tmp_path / RANKS_FILE).read_text().splitlines()[0]
    assert first_line == "AA== 0"  # base64 of byte 0x00, rank 0


def test_fingerprint_changes_with_content(tok, tmp_path):
    other = Tokenizer(tok.mergeable_ranks, tok.pattern.replace("{1,2}", "{1,3}"), tok.special_tokens)
    assert other.fingerprint != tok.fingerprint and len(tok.fingerprint) == 16


def test_from_encoding_wraps_a_tiktoken_encoding(tok):
    enc = tiktoken.Encoding(name="x", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks,
                            special_tokens=tok.special_tokens)
    wrapped = Tokenizer.from_encoding(enc)
    assert wrapped.fingerprint == tok.fingerprint
    no_bos = tiktoken.Encoding(name="y", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks, special_tokens={})
    with pytest.raises(ConfigError, match="<\\|bos\\|>"):
        Tokenizer.from_encoding(no_bos)


def test_too_small_vocab_is_a_config_error():
    with pytest.raises(ConfigError, match=f"at least {MIN_VOCAB_SIZE}"):
        Tokenizer.train(TRAIN_TEXT, MIN_VOCAB_SIZE - 1)
    assert MIN_VOCAB_SIZE == 265


def test_load_errors(tok, tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        Tokenizer.load(tmp_path)
    tok.save(tmp_path)
    ranks = (tmp_path / RANKS_FILE).read_text().splitlines()
    (tmp_path / RANKS_FILE).write_text("\n".join(ranks[:-1]) + "\n")  # one merge lost
    with pytest.raises(CheckpointError, match="do not match"):
        Tokenizer.load(tmp_path)
    (tmp_path / RANKS_FILE).write_text("not base64!! x\n")
    with pytest.raises(CheckpointError, match="tokenizer.tiktoken is damaged: line 1 is not 'base64-token rank'"):
        Tokenizer.load(tmp_path)


def test_cli_tokenizer_train_saves_a_loadable_tokenizer(tmp_path):
    from click.testing import CliRunner

    from nanogpt_cli.main import cli

    data = tmp_path / "data.txt"
    data.write_text("\n\n".join(TRAIN_TEXT * 3), encoding="utf-8")
    out = tmp_path / "tok"
    result = CliRunner().invoke(cli, ["tokenizer", "train", "--vocab-size", "290", "--data", str(data),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded = Tokenizer.load(out)
    assert loaded.vocab_size == 290 and loaded.fingerprint in result.output
    result = CliRunner().invoke(cli, ["tokenizer", "train", "--vocab-size", "100", "--data", str(data)])
    assert result.exit_code == 2 and "Error: vocab_size must be at least 265" in result.output
