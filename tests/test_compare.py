"""`compare` and `nanogpt compare`: the reference and a correct re-implementation pass, every wrong implementation
fails with the diagnosis that names its bug, a pristine skeleton reports "not implemented" cleanly."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch
from click.testing import CliRunner
from plugins.alt_impls import ALTERNATIVES
from plugins.wrong_impls import BUGS
from test_checks import SAME_NUMBERS

from nanogpt_cli.main import cli
from nanogpt_core.compare import compare, default_compare_config
from nanogpt_core.compare.curves import (
    SavedTensorBytes,
    every,
    make_batches,
    sparkline,
    synthetic_stream,
    train_curve,
)
from nanogpt_core.errors import ConfigError, UseSpecError
from nanogpt_core.learn.workspace import write_pristine_dir
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.component_files import load_set_from_dir
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.registry import register_plugin, unregister_plugin


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Iterator[str]:
    """The pristine skeletons as set `pristine` (the learner's own student files may be in any state)."""
    directory = write_pristine_dir(tmp_path_factory.mktemp("pristine"))
    register_plugin(load_set_from_dir("pristine", directory), name="nanogpt-test-pristine")
    yield "pristine"
    unregister_plugin(name="nanogpt-test-pristine")


def run_cli(*args: str):
    return CliRunner().invoke(cli, ["compare", *args], catch_exceptions=False)


# --- what passes ----------------------------------------------------------------------------------------------------


def test_reference_compared_with_itself_passes_exactly():
    report = compare("reference", steps=4, data="synthetic", device="cpu")
    assert report.passed and report.exit_code == 0 and report.mode == "equal"
    assert [v.component for v in report.components] == list(COMPONENT_NAMES)  # nothing swapped: all, with itself
    assert all(v.status == "pass" for v in report.components)
    assert all(p.passed for p in report.probes)
    t = report.training
    assert t.passed and t.diffs == [0.0] * 4  # same code, weights and batches: bit-identical on CPU
    assert t.memory_ratio == 1.0
    # lm_head starts at zero, so the first loss is ln(vocab) whatever the batch
    assert t.reference.losses[0] == pytest.approx(math.log(report.config["vocab_size"]), abs=1e-4)


@pytest.mark.parametrize("impl_set", sorted(ALTERNATIVES))
def test_a_correct_reimplementation_written_differently_passes(alt, impl_set):
    report = compare(impl_set, steps=10, data="synthetic", device="cpu")
    assert report.passed, [(v.component, v.diagnosis, v.detail) for v in report.components if v.status != "pass"]
    assert {v.component for v in report.components} == set(ALTERNATIVES[impl_set])
    t = report.training
    assert t.max_abs_diff < t.tolerance  # einsum vs fused attention, bf16 Muon: rounding-level differences only
    assert t.candidate.shared_weights


def test_torch_muon_as_the_skeleton_describes_it_trains_within_the_tolerance_over_the_default_steps(alt):
    """The reference orthogonalises in fp32 off CUDA, torch.optim.Muon in bf16: over compare's default 50 steps the
    loss curves drift apart by bf16 rounding only (measured: 3.9e-3 nats), well inside the tolerance."""
    report = compare(f"{alt}:optimizer", device="cpu")
    assert report.passed and report.verdict("optimizer").status == "pass"
    assert 0 < report.training.max_abs_diff < report.training.tolerance / 2


def test_training_learns_the_synthetic_stream():
    config = default_compare_config()
    reference = dict.fromkeys(COMPONENT_NAMES, "reference")
    batches = make_batches(config, 30, 8, "synthetic", seed=0, device=torch.device("cpu"))
    losses = train_curve(reference, config, batches, seed=0, device=torch.device("cpu")).losses
    assert len(losses) == 30 and losses[-1] < losses[0] - 1.0


# --- what fails, and why --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl_set", sorted(BUGS))
def test_each_bug_fails_with_its_diagnosis_first(bugs, impl_set):
    component, _, diagnosis = bugs[impl_set]
    report = compare(f"{impl_set}:{component}", steps=0, device="cpu")
    verdict = report.verdict(component)
    assert verdict.status == "fail" and verdict.diagnosis == diagnosis, (verdict.diagnoses, verdict.detail)
    assert verdict.diagnoses[0] == diagnosis and verdict.next_step  # the fix printed with it
    assert "wrong_impls.py:" in verdict.where  # the file and line of the method at fault
    assert report.exit_code == 1 and component in report.failed
    # and the comparison with the reference sees it too, unless the bug computes the reference's numbers
    assert verdict.isolation.passed is (impl_set in SAME_NUMBERS), verdict.isolation.detail


BUGGY_NORM_FILE = '''\
import torch.nn as nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x * (x.pow(2).mean(dim=-1, keepdim=True) + 1e-2).rsqrt()  # eps 1e-2
'''


def test_the_verdict_names_the_learners_file_and_the_line_of_the_method_at_fault(tmp_path):
    directory = write_pristine_dir(tmp_path / "ws")
    (directory / "norm.py").write_text(BUGGY_NORM_FILE)
    register_plugin(load_set_from_dir("wsnorm", directory, ["norm"]), name="nanogpt-test-wsnorm")
    try:
        report = compare("wsnorm:norm", steps=0, device="cpu")
    finally:
        unregister_plugin(name="nanogpt-test-wsnorm")
    verdict = report.verdict("norm")
    assert verdict.diagnosis == "norm eps too large" and "fitted eps 0.01" in verdict.detail
    assert verdict.where == f"{directory.resolve() / 'norm.py'}:9 (RMSNorm.forward)"  # the def line of forward


def test_unbounded_logits_are_caught_by_the_softcap_probe_even_in_design_mode(gpt_bugs):
    """In design mode the cap's value is not pinned (Gemma's 30 is a design), but logits that nothing bounds are
    still caught, by the probe of the assembled model."""
    report = compare("bug-gpt-no-softcap:gpt", steps=0, device="cpu", mode="design")
    assert "softcap" not in {r.name for r in report.verdict("gpt").checks}  # the gpt's own check: skipped
    probe = next(p for p in report.probes if p.name == "softcap")
    assert probe.passed is False and probe.diagnosis == "missing softcap"
    assert probe.numbers["max_abs_logit"] > 100
    assert "probe:softcap" in report.failed and report.exit_code == 1
    report = compare("bug-gpt-softcap-30:gpt", steps=0, device="cpu", mode="design")
    assert next(p for p in report.probes if p.name == "softcap").passed


def test_a_bug_that_only_shows_in_training_fails_the_training_verdict(bugs):
    report = compare("bug-no-residual:block", steps=5, data="synthetic", device="cpu")
    assert report.training.passed is False and "training" in report.failed
    assert report.training.max_abs_diff > report.training.tolerance


# --- not implemented ------------------------------------------------------------------------------------------------


def test_pristine_skeletons_report_not_implemented_per_component(pristine):
    report = compare(pristine, steps=5, device="cpu")
    assert [v.status for v in report.components] == ["not implemented"] * len(COMPONENT_NAMES)
    assert all(v.detail.startswith("TODO: Implement") for v in report.components)
    assert report.training is None and report.exit_code == 3 and not report.failed


def test_cli_on_pristine_skeletons_is_clean(pristine):
    result = run_cli("--use", pristine, "--steps", "5")
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    assert result.output.count("not implemented") >= len(COMPONENT_NAMES)
    assert "NOT IMPLEMENTED" in result.output


class _BracketRotary:
    """A rotary whose apply raises a TODO quoting code with square brackets, and whose precompute raises an error
    holding some."""

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        raise ValueError("bad table [cos, sin] at [0]")

    @staticmethod
    def apply(x, cos, sin):
        raise NotImplementedError("TODO: Implement rotary.apply — return torch.cat([y1, y2], dim=3)")


class _BracketPlugin:
    @hookimpl
    def register_components(self, register):
        register("brackets", "rotary", _BracketRotary)


def test_square_brackets_in_messages_and_source_survive_every_rich_output():
    """rich reads `[y1, y2]` as markup and drops it unless escaped: `return torch.cat(, dim=3)` was printed."""
    register_plugin(_BracketPlugin(), name="nanogpt-test-brackets")
    try:
        outputs = [run_cli("--use", "brackets:rotary", "--steps", "0").output,
                   CliRunner().invoke(cli, ["check", "brackets:rotary"]).output,
                   CliRunner().invoke(cli, ["status", "--use", "brackets"]).output]
    finally:
        unregister_plugin(name="nanogpt-test-brackets")
    for output in outputs:
        assert "[cos, sin] at [0]" in " ".join(output.split()), output


# --- the command ----------------------------------------------------------------------------------------------------


def test_cli_writes_json_and_plot(tmp_path, alt):
    out_json, out_png = tmp_path / "report.json", tmp_path / "curves.png"
    result = run_cli("--use", f"{alt}:mlp", "--steps", "3", "--data", "synthetic", "--device", "cpu",
                     "--json", str(out_json), "--plot", str(out_png))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "training" in result.output
    data = json.loads(out_json.read_text())
    assert data["mode"] == "equal" and data["passed"] is True and data["exit_code"] == 0
    assert len(data["training"]["reference"]["losses"]) == 3
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_design_mode_has_no_equality_verdict_but_still_catches_a_broken_contract(tmp_path, alt, bugs):
    """--design: a different design is judged by the checks that apply and the curves, never by equality."""
    out_json = tmp_path / "design.json"
    result = run_cli("--use", f"{alt}:mlp", "--design", "--steps", "3", "--data", "synthetic", "--device", "cpu",
                     "--json", str(out_json))
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    assert data["mode"] == "design" and data["training"]["passed"] is None
    assert "tolerance nan" not in result.output
    leaky = run_cli("--use", "bug-no-causal-mask:attention", "--design", "--steps", "0", "--json", "-")
    assert leaky.exit_code == 1  # causality is part of the contract, whatever the design
    verdict = next(v for v in json.loads(leaky.stdout)["components"] if v["component"] == "attention")
    assert verdict["diagnosis"] == "causal leakage"


def test_cli_failure_names_the_diagnosis_where_and_the_fix_and_exits_1(bugs):
    result = run_cli("--use", "bug-relu:mlp", "--steps", "0")
    assert result.exit_code == 1
    assert "relu instead of relu²" in result.output and "FAIL" in result.output
    text = " ".join(result.output.split())
    assert "where: " in text and "wrong_impls.py:" in text and "(ReluMLP.forward)" in text
    assert "fix: the activation is relu(x).square(), not relu(x)." in text


def test_cli_debug_prints_the_traceback_of_an_error_caught_inside_a_check(bugs):
    plain = run_cli("--use", "bug-norm-no-keepdim:norm", "--steps", "0")
    debug = run_cli("--use", "bug-norm-no-keepdim:norm", "--steps", "0", "--debug")
    assert plain.exit_code == debug.exit_code == 1
    assert "Traceback" not in plain.output and "Traceback (most recent call last)" in debug.output


def test_cli_json_to_stdout(bugs):
    result = run_cli("--use", "bug-gqa-tiled:attention", "--steps", "0", "--json", "-")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    verdict = next(v for v in data["components"] if v["component"] == "attention")
    assert verdict["diagnosis"] == "GQA head mapping" and verdict["status"] == "fail"


def test_bad_input_is_a_clear_error():
    with pytest.raises(UseSpecError):
        compare("nope:attention", steps=0)
    with pytest.raises(ConfigError):
        compare("reference", steps=-1)
    with pytest.raises(ConfigError):
        compare("reference", steps=0, data="wikipedia")
    result = CliRunner().invoke(cli, ["compare", "--use", "nope"])
    assert result.exit_code == 2 and "unknown implementation set" in result.output


# --- pieces ---------------------------------------------------------------------------------------------------------


def test_saved_tensor_bytes_counts_activations_once(tiny_config):
    model = build_model(tiny_config)
    saved = SavedTensorBytes(model)
    x = torch.randn(3, 5, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        y = (x * x).sum()  # mul saves x twice: one storage, counted once
    y.backward()
    assert saved.total == 3 * 5 * 4


def test_synthetic_stream_is_deterministic_and_in_range():
    a, b = synthetic_stream(2000, 50, seed=3), synthetic_stream(2000, 50, seed=3)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < 50
    assert not torch.equal(a, synthetic_stream(2000, 50, seed=4))


def test_sparkline_and_every():
    assert sparkline([0.0, 1.0]) == "▁█"
    assert sparkline([1.0, 1.0, 1.0]) == "▁▁▁"
    assert [i for i, _ in every(list(range(25)), 10)] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24]
