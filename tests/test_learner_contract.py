"""The component contract checks, for any implementation set: `pytest --impl student` (default: reference).

Each check is the one definition in `nanogpt_core.checks` that `nanogpt check` and `nanogpt status` run; here every
(component, check) pair is its own test, so a learner sees exactly which property of their component fails. A
component that still raises its skeleton's TODO is skipped with the TODO as the reason.

Below: `nanogpt check` itself, a "solved" set (the reference under another name) that passes and trains, and a
mixed model — one skeleton component replaced by a solved one, the rest reference — that trains.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from test_learner_errors import TINY_TEXT, train_args
from test_learner_support import REFERENCE_PARTS, _one_thread, make_set, registered, skel, solved  # noqa: F401

import nanogpt_impls.reference as ref
from nanogpt_cli.main import cli
from nanogpt_core.checks import checks_for, default_check_config
from nanogpt_core.checks.harness import Bench, seeded
from nanogpt_core.checks.runner import SEED
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import registrations

CASES = [(component, check) for component in COMPONENT_NAMES for check in checks_for(component)]


@pytest.fixture(scope="module")
def impl(request) -> str:
    return request.config.getoption("--impl")


@pytest.mark.parametrize("component, check", CASES, ids=[f"{c}-{k.__name__}" for c, k in CASES])
def test_contract(impl, component, check):
    if (impl, component) not in registrations():
        pytest.skip(f"{impl!r} does not provide {component}")
    bench = Bench(impl, component, default_check_config())
    try:
        with seeded(SEED):
            result = check(bench)
    except NotImplementedError as exc:
        pytest.skip(f"not implemented: {exc}")
    if result.passed is None:
        pytest.skip(result.detail)
    assert result.passed, f"{result.name}: {result.diagnosis or 'failed'}: {result.detail}\n-> {result.hint}"


# --- nanogpt check -------------------------------------------------------------------------------------------------


class ReluMLP(ref.MLP):
    def forward(self, x):
        return self.c_proj(self.c_fc(x).relu())  # bug: relu, not relu²


@pytest.fixture(scope="module")
def relu():
    with registered(make_set("relu", {"mlp": ReluMLP}), "test-relu-check"):
        yield "relu"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_check_passes_a_solved_component_with_numbers(solved):  # noqa: F811
    result = invoke("check", f"{solved}:mlp")
    assert result.exit_code == 0, result.output
    assert "relu² activation" in result.output and "degree=2" in result.output
    assert "0 failed, 0 not implemented" in result.output


def test_check_json_for_the_whole_solved_set(solved):  # noqa: F811
    result = invoke("check", solved, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["passed"] is True
    assert {r["component"] for r in data["results"]} == set(COMPONENT_NAMES)
    assert all(r["status"] == "pass" for r in data["results"])


def test_check_reports_not_implemented_without_crashing(skel):  # noqa: F811
    result = invoke("check", f"{skel}:attention,{skel}:mlp")
    assert result.exit_code == 1
    assert result.output.count("not implemented") >= 2
    assert "TODO: Implement attention.__init__" in result.output and "Traceback" not in result.output
    assert "0 passed, 0 failed, 2 not implemented." in result.output


def test_check_names_the_bug_and_fails(relu):
    result = invoke("check", f"{relu}:mlp")
    assert result.exit_code == 1
    assert "│ fail " in result.output and "relu instead of relu²" in result.output
    assert "degree=1" in result.output  # the measured number behind the verdict
    assert "9 passed, 1 failed, 0 not implemented." in result.output


@pytest.mark.parametrize("target, message", [
    ("nope:mlp", "unknown implementation set 'nope'"),
    ("reference:softmax", "unknown component 'softmax'"),
    ("reference:mlp,student:norm", "one implementation set at a time"),
])
def test_check_rejects_bad_targets(target, message):
    result = invoke("check", target)
    assert result.exit_code == 2 and message in result.output


# --- solved and mixed sets train ----------------------------------------------------------------------------------


@pytest.mark.parametrize("use", ["solved", "solved:attention"])
def test_solved_and_mixed_models_train(use, solved, tmp_path):  # noqa: F811
    """The whole solved set, and a mixed model (attention solved, the rest reference), train 3 steps."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    args = train_args(use, corpus, tmp_path / "run")
    args[args.index("--num_iterations=1")] = "--num_iterations=3"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("type") == "train"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    vocab = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["vocab_size"]
    assert losses[0] == pytest.approx(math.log(vocab), abs=1e-4)  # zeroed head: the first loss is ln(vocab)
    assert f"Model: {use}" in result.output  # the run says which implementations it used
