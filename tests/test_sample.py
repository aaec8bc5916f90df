"""`nanogpt sample` and the streaming beneath it: deterministic with a seed, equal to decoding the generated tokens,
never showing half a UTF-8 character, and one-line errors for arguments it cannot honour."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner
from test_learner_support import REFERENCE_PARTS, make_set, registered
from tiny_training import _one_thread, tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.io.checkpoint import load_model
from nanogpt_core.train.loop import train
from nanogpt_core.train.sampling import prompt_tokens, stream_text


@pytest.fixture(scope="module")
def run_dir(tiny_corpus, tiny_tokenizer, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("sample_run") / "run"
    train(tiny_settings(tiny_corpus, tiny_tokenizer, out, num_iterations=10), stream=open(os.devnull, "w"))
    return out


def sample(*args: str):
    return CliRunner().invoke(cli, ["sample", *args])


def test_same_seed_same_text_and_it_is_the_decoded_generation(run_dir):
    args = [str(run_dir), "--prompt", "The function", "--max-tokens", "30", "--temperature", "1.0", "--seed", "5"]
    first, second = sample(*args), sample(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    other = sample(*args[:-1], "6")
    assert other.stdout != first.stdout
    # independently: load, generate the ids, decode them all at once
    model, tokenizer, _ = load_model(run_dir, device="cpu")
    ids = list(model.generate(prompt_tokens(tokenizer, "The function"), 30, temperature=1.0, seed=5))
    assert len(ids) == 30
    assert first.stdout == "The function" + tokenizer.decode(ids) + "\n"


def test_top_k_and_greedy(run_dir):
    greedy = sample(str(run_dir), "--prompt", "The", "--max-tokens", "12", "--temperature", "0", "--seed", "1")
    greedy_other_seed = sample(str(run_dir), "--prompt", "The", "--max-tokens", "12", "--temperature", "0",
                               "--seed", "2")
    assert greedy.exit_code == 0 and greedy.stdout == greedy_other_seed.stdout  # temperature 0 ignores the seed
    top1 = sample(str(run_dir), "--prompt", "The", "--max-tokens", "12", "--temperature", "1.0", "--top-k", "1")
    assert top1.stdout == greedy.stdout  # top-1 sampling is greedy


def test_empty_prompt_starts_from_bos(run_dir):
    result = sample(str(run_dir), "--max-tokens", "20", "--seed", "3")
    assert result.exit_code == 0, result.output
    model, tokenizer, _ = load_model(run_dir, device="cpu")
    ids = list(model.generate([tokenizer.bos_id], 20, temperature=0.8, seed=3))
    assert result.stdout == tokenizer.decode(ids) + "\n"


def test_stream_yields_pieces_that_add_up(run_dir):
    model, tokenizer, _ = load_model(run_dir, device="cpu")
    tokens = prompt_tokens(tokenizer, "A")
    pieces = list(stream_text(model, tokenizer, tokens, 25, temperature=1.0, seed=0))
    ids = list(model.generate(tokens, 25, temperature=1.0, seed=0))
    assert len(pieces) > 5 and "".join(pieces) == tokenizer.decode(ids)


def test_stream_holds_back_half_a_character(tiny_tokenizer):  # noqa: F811
    from nanogpt_core.data.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(tiny_tokenizer)
    e_acute = "é".encode()  # two bytes, each a token of its own in a byte-level BPE
    ids = [tokenizer.enc.encode_single_token(bytes([b])) for b in e_acute + "é!".encode()]

    class FakeModel:
        config = type("C", (), {"sequence_len": 64})()
        cos = torch.zeros(1, 640, 1, 4)

        def generate(self, tokens, max_tokens, **kw):
            yield from ids[:max_tokens]

    pieces = list(stream_text(FakeModel(), tokenizer, [tokenizer.bos_id], len(ids)))
    assert "".join(pieces) == "éé!"
    assert all("\ufffd" not in p for p in pieces)


def test_another_use_is_allowed_and_said(run_dir):
    with registered(make_set("samplealt", REFERENCE_PARTS), "test-sample-alt"):
        swapped = sample(str(run_dir), "--prompt", "The", "--max-tokens", "10", "--temperature", "0",
                         "--use", "samplealt:mlp")
    plain = sample(str(run_dir), "--prompt", "The", "--max-tokens", "10", "--temperature", "0")
    assert swapped.exit_code == 0, swapped.output
    assert "samplealt:mlp" in swapped.stderr and "trained with reference" in swapped.stderr
    assert swapped.stdout == plain.stdout  # the same weights through an equal implementation


@pytest.mark.parametrize("args, message", [
    (["--top-k", "0"], "--top-k must be >= 1"),
    (["--temperature", "-0.5"], "--temperature must be >= 0"),
    (["--prompt", "word " * 200], "but the model's context is 64 tokens"),
    (["--max-tokens", "5000"], "exceeds the 640 positions"),
])
def test_bad_arguments_are_one_line_errors(run_dir, args, message):
    result = sample(str(run_dir), *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""  # nothing was printed before the error


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = sample(str(tmp_path / "nope"))
    assert result.exit_code == 2 and "no checkpoint at" in result.stderr
