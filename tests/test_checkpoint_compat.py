"""A checkpoint written before the `gpt` component existed (tests/fixtures/pre_gpt_checkpoint, made by
tests/fixtures/make_pre_gpt_checkpoint.py on the commit before it) loads into today's model and gives the logits,
greedy tokens and sampled tokens it gave then — bit for bit, since the operations are the same ones in the same
order. Its recorded `use` names eight components; the ninth, gpt, is the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.make_pre_gpt_checkpoint import TEXT
from safetensors.torch import load_file
from test_learner_support import _one_thread  # noqa: F401

from nanogpt_core.io.checkpoint import latest_checkpoint, load_model
from nanogpt_core.model.contracts import COMPONENT_NAMES

FIXTURE = Path(__file__).parent / "fixtures" / "pre_gpt_checkpoint"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def loaded():
    return load_model(FIXTURE, device="cpu")


def test_the_fixture_predates_the_gpt_component(loaded):
    _, _, meta = loaded
    with open(latest_checkpoint(FIXTURE) / "model.safetensors", "rb") as f:  # the use the old code wrote
        header = f.read(2000).decode("utf-8", "replace")
    assert '\\"attention\\": \\"reference\\"' in header and '\\"gpt\\"' not in header
    assert meta["use"] == dict.fromkeys(COMPONENT_NAMES, "reference")


def test_an_old_checkpoint_gives_the_same_logits_bit_for_bit(loaded):
    model, tokenizer, _ = loaded
    expected = load_file(str(FIXTURE / "expected_logits.safetensors"))["logits"]
    idx = torch.tensor([tokenizer.encode(TEXT)[: expected.size(1)]])  # the script's first 8 tokens
    with torch.no_grad():
        logits = model(idx)
    assert torch.equal(logits, expected)


def test_an_old_checkpoint_samples_the_same_tokens(loaded):
    model, _, _ = loaded
    prompt = EXPECTED["prompt"]
    assert list(model.generate(prompt, 12, temperature=0.0)) == EXPECTED["greedy"]
    assert list(model.generate(prompt, 12, temperature=1.0, top_k=20, seed=5)) == EXPECTED["sampled_t1_top20_seed5"]


def test_an_old_checkpoint_loads_into_a_hand_written_gpt_too(alt):
    """The weights are shared by contract: the same checkpoint in a learner's top level samples the same tokens."""
    model, _, meta = load_model(FIXTURE, use=f"{alt}:gpt", device="cpu")
    assert meta["use"]["gpt"] == alt
    assert list(model.generate(EXPECTED["prompt"], 12, temperature=0.0)) == EXPECTED["greedy"]
