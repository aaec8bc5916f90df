"""Shared pieces of the learner-workflow tests: implementation sets made at test time.

- `skel`: the PRISTINE skeletons (package data), loaded from a temporary folder as their own set — never the live
  `impls/student` files, which a learner edits; the suite passes whatever state those are in.
- `solved`: the reference implementations registered under another name, as a learner's finished set would be.
- `make_set(name, {component: implementation})`: any set of test doubles (deliberately wrong ones, for example).

Other test modules import the fixtures from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import nanogpt_impls.reference as ref
from nanogpt_core.learn.workspace import write_pristine_dir
from nanogpt_core.model.component_files import load_set_from_dir
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.registry import register_plugin, unregister_plugin

REFERENCE_PARTS = {
    "norm": ref.RMSNorm, "rotary": ref.Rotary, "attention": ref.CausalSelfAttention, "mlp": ref.MLP,
    "block": ref.Block, "gpt": ref.GPT, "init": ref.init_weights, "optimizer": ref.setup_optimizers,
    "generate": ref.generate,
}
assert set(REFERENCE_PARTS) == set(COMPONENT_NAMES)


def make_set(impl_set: str, parts: dict[str, object]) -> object:
    class Plugin:
        @hookimpl
        def register_components(self, register):
            for component, implementation in parts.items():
                register(impl_set, component, implementation)

    return Plugin()


class registered:
    """Context manager: register a plugin for the block, always unregister it."""

    def __init__(self, plugin: object, name: str) -> None:
        self.plugin, self.name = plugin, name

    def __enter__(self) -> str:
        register_plugin(self.plugin, name=self.name)
        return self.name

    def __exit__(self, *exc: object) -> None:
        unregister_plugin(name=self.name)


@pytest.fixture(scope="module")
def skel(tmp_path_factory) -> Iterator[str]:
    directory = write_pristine_dir(tmp_path_factory.mktemp("pristine"))
    with registered(load_set_from_dir("skel", directory), "test-skel") as _:
        yield "skel"


@pytest.fixture(scope="module")
def skel_dir(tmp_path_factory) -> Path:
    return write_pristine_dir(tmp_path_factory.mktemp("pristine_dir"))


@pytest.fixture(scope="module")
def solved() -> Iterator[str]:
    with registered(make_set("solved", REFERENCE_PARTS), "test-solved"):
        yield "solved"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the CI machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_solved_set_is_the_reference_under_another_name(solved):
    from nanogpt_core.model.registry import get_implementation

    for component in COMPONENT_NAMES:
        assert get_implementation(solved, component) is get_implementation("reference", component)
