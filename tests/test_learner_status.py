"""`nanogpt status`: each component's state in the order a run meets it, and the next thing to do — on a learner
workspace made at test time (pristine files, a finished one, a buggy one), never the real student folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_learner_support import _one_thread, registered  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.learn.status import COMPONENT_ORDER, learner_status
from nanogpt_core.learn.workspace import write_pristine_dir
from nanogpt_core.model.component_files import load_set_from_dir

FINISHED_MLP = '''\
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())
'''
RELU_MLP = FINISHED_MLP.replace(".square()", "")  # runs, but fails the contract (relu instead of relu²)
WRONG_NORM = '''\
import torch.nn as nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x[..., : x.size(-1) // 2]  # a shape bug
'''
STARTED_BLOCK_SUFFIX = "\n# I have started reading the reference\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    directory = write_pristine_dir(tmp_path_factory.mktemp("ws"))
    (directory / "mlp.py").write_text(FINISHED_MLP)
    (directory / "norm.py").write_text(WRONG_NORM)
    (directory / "block.py").write_text((directory / "block.py").read_text() + STARTED_BLOCK_SUFFIX)
    with registered(load_set_from_dir("ws", directory), "test-ws-status"):
        yield "ws", directory


@pytest.fixture(scope="module")
def report(workspace):
    impl_set, directory = workspace
    return learner_status(impl_set, directory=directory)


def test_components_come_in_the_order_a_run_meets_them(report):
    assert [s.component for s in report.components] == list(COMPONENT_ORDER)
    assert COMPONENT_ORDER[:6] == ("gpt", "attention", "mlp", "block", "rotary", "init")


def test_each_state(report):
    by = {s.component: s for s in report.components}
    assert by["gpt"].state == "not started" and by["gpt"].method == "__init__"
    assert by["rotary"].state == "not started" and by["rotary"].method == "precompute"
    assert by["attention"].state == "not started"
    assert by["attention"].message.startswith("TODO: Implement attention.__init__")
    assert by["block"].state == "raises TODO"  # edited, so started, but still the skeleton's TODO
    # the norm's bad output breaks the reference attention's c_q: the status still blames the norm
    assert by["norm"].state == "raises an error" and "mat1 and mat2 shapes cannot be multiplied" in by["norm"].message
    assert "raised in attention.forward (reference), so check what your norm returns" in by["norm"].message
    assert by["mlp"].state == "matches reference"
    assert by["mlp"].checks_total and by["mlp"].checks_passed == by["mlp"].checks_total


def test_next_step_is_what_a_run_with_the_whole_set_stops_at(report):
    nxt = report.next
    assert (nxt.component, nxt.method) == ("gpt", "__init__")  # the model's top level: the first thing built
    assert nxt.message.startswith("TODO: Implement gpt.__init__")
    assert nxt.command.startswith("nanogpt train --use ws:gpt --depth=4 --max_seq_len=512")
    assert nxt.check_command == "nanogpt check ws:gpt"


def test_a_component_that_runs_but_breaks_the_contract_is_only_implemented(tmp_path):
    directory = write_pristine_dir(tmp_path / "relu")
    (directory / "mlp.py").write_text(RELU_MLP)
    with registered(load_set_from_dir("relu", directory, ["mlp"]), "test-relu"):
        report = learner_status("relu", directory=directory)
    [mlp] = report.components
    assert mlp.state == "implemented"
    assert mlp.checks_passed < mlp.checks_total and "relu" in mlp.message
    assert report.next.component == "mlp" and report.next.command == "nanogpt check relu:mlp"


def test_without_checks_a_running_set_is_implemented_and_points_to_check():
    report = learner_status("reference", with_checks=False)
    assert {s.state for s in report.components} == {"implemented"}
    # nothing raises; without the checks no component counts as done, so the next step is to check the first
    assert report.next.component == "gpt" and report.next.command == "nanogpt check reference:gpt"


def test_cli_status_json_and_table(workspace):
    impl_set, _ = workspace
    result = CliRunner().invoke(cli, ["status", "--use", impl_set, "--no-checks", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [c["component"] for c in data["components"]] == list(COMPONENT_ORDER)
    assert data["next"]["component"] == "gpt"
    table = CliRunner().invoke(cli, ["status", "--use", impl_set, "--no-checks"])
    assert table.exit_code == 0
    assert "Next: TODO: Implement gpt.__init__" in table.output
    assert "nanogpt train --use ws:gpt" in table.output


def test_cli_status_unknown_set():
    result = CliRunner().invoke(cli, ["status", "--use", "nope"])
    assert result.exit_code == 2 and "unknown implementation set 'nope'" in result.output


ROTARY_2D_TABLE = '''\
import torch


class Rotary:
    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
        return freqs.cos().bfloat16(), freqs.sin().bfloat16()  # bug: (T, D/2), not (1, T, 1, D/2)

    @staticmethod
    def apply(x, cos, sin):
        d = x.shape[3] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], 3).to(x.dtype)
'''


def test_a_rotary_table_of_the_wrong_shape_is_blamed_on_rotary_and_next_points_there(tmp_path):
    """The core used to raise "positions 0..511 exceed the rotary table of 64 positions" naming no component, and
    status then said Next: attention."""
    directory = write_pristine_dir(tmp_path / "rot")
    (directory / "rotary.py").write_text(ROTARY_2D_TABLE)
    for name in ("gpt", "attention", "mlp", "block"):  # the components a run meets first, finished
        (directory / f"{name}.py").write_text(
            (Path(__file__).parents[1] / "impls" / "reference" / f"{name}.py").read_text())
    with registered(load_set_from_dir("rot", directory), "test-rot"):
        report = learner_status("rot", directory=directory, with_checks=False)
        result = CliRunner().invoke(cli, ["train", "--use", "rot:rotary", "--depth=1", "--num_iterations=1"])
    by = {s.component: s for s in report.components}
    assert by["rotary"].state == "raises an error" and "rotary (rot).precompute returned cos of shape (" in \
        by["rotary"].message
    assert report.next.component == "rotary" and report.next.check_command == "nanogpt check rot:rotary"
    assert result.exit_code == 4 and "rotary (rot).precompute" in result.output and "(1, seq_len, 1, " \
        "head_dim // 2)" in result.output


def test_next_is_the_first_component_in_run_order_that_raises_or_fails(tmp_path):
    directory = write_pristine_dir(tmp_path / "order")
    (directory / "mlp.py").write_text(RELU_MLP)  # runs, fails its contract
    (directory / "norm.py").write_text(WRONG_NORM)  # raises
    with registered(load_set_from_dir("order", directory, ["mlp", "norm"]), "test-order"):
        report = learner_status("order", directory=directory)
    assert [s.component for s in report.components] == ["mlp", "norm"]  # the order a run meets them
    assert report.next.component == "mlp" and "relu instead of relu²" in report.next.message
