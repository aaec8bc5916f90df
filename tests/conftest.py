"""Shared fixtures. Tests run on CPU in fp32 unless marked `cuda`."""

from __future__ import annotations

import os

import pytest
import torch

from nanogpt_core import GPTConfig
from nanogpt_core.model.registry import register_plugin, unregister_plugin

# The tests use tiny models, whose small matmuls run fastest on one thread (and do not fight over a busy machine).
torch.set_num_threads(1)
# Muon's Newton-Schulz dtype is measured per machine and process (nanogpt_core.device.newton_schulz_dtype). Tests
# compare runs made in different processes (a resumed run against an uninterrupted one), which must compute alike:
# pin it, for this process and every `nanogpt` it starts. tests/test_newton_schulz_dtype.py tests the measuring.
os.environ.setdefault("NANOGPT_NS_DTYPE", "float32")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_config() -> GPTConfig:
    """Small enough for fast tests, with GQA (2 query heads share 1 KV head) so head mapping is exercised."""
    return GPTConfig(sequence_len=32, vocab_size=97, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def pytest_addoption(parser):
    parser.addoption("--impl", action="store", default="reference", metavar="SET",
                     help="implementation set checked by tests/test_learner_contract.py (e.g. --impl student)")


# --- test plugins shared by the checks and compare suites (tests/plugins/) ------------------------------------------


@pytest.fixture(scope="module")
def bugs():
    """The deliberately wrong implementations, each registered as its own set (`bug-...`)."""
    from plugins.wrong_impls import BUGS, PLUGIN_NAME, WrongImplsPlugin

    register_plugin(WrongImplsPlugin(), name=PLUGIN_NAME)
    yield BUGS
    unregister_plugin(name=PLUGIN_NAME)


@pytest.fixture(scope="module")
def alt():
    """Correct implementations written differently from the reference (einsum attention, manual RMSNorm, ...)."""
    from plugins.alt_impls import ALT_SET, AltImplsPlugin

    register_plugin(AltImplsPlugin(), name="nanogpt-test-alt")
    yield ALT_SET
    unregister_plugin(name="nanogpt-test-alt")


@pytest.fixture(scope="module")
def gpt_bugs():
    """The deliberately wrong top levels (tests/plugins/wrong_gpt.py), each registered as its own set."""
    from plugins.wrong_gpt import GPT_BUGS, PLUGIN_NAME, WrongGPTPlugin

    register_plugin(WrongGPTPlugin(), name=PLUGIN_NAME)
    yield GPT_BUGS
    unregister_plugin(name=PLUGIN_NAME)
