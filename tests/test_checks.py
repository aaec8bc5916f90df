"""The component checks (`nanogpt_core.checks`): they pass every correct implementation, however it is written,
and fail each realistic bug with the diagnosis that names its cause first."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from plugins.alt_impls import ALTERNATIVES
from plugins.wrong_impls import BUGS

from nanogpt_core.checks import DIAGNOSES, CheckResult, diff_tensors, matches_reference, run_checks
from nanogpt_core.checks.harness import Bench, default_check_config
from nanogpt_core.checks.modules import rotary_relative_offset
from nanogpt_core.checks.tolerance import FLOOR_MULTIPLE, least_squares
from nanogpt_core.errors import UseSpecError
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.registry import register_plugin, unregister_plugin
from nanogpt_impls.reference.mlp import MLP

# bugs the contract cannot see (the code computes a valid rotary / attention / optimizer, just not the reference's):
# `nanogpt check` passes them, and only the comparison with the reference catches them
CONTRACT_VALID = {
    "bug-mlp-activation-before-fc", "bug-mlp-halved", "bug-mlp-square-after-proj", "bug-mlp-straight-through",
    "bug-no-rotary", "bug-no-softmax-scale", "bug-norm-on-v", "bug-norm-subtracts-mean", "bug-optimizer-amsgrad",
    "bug-rotary-called-swapped",
    "bug-optimizer-default-betas", "bug-optimizer-default-eps", "bug-optimizer-lrs-swapped",
    "bug-optimizer-match-rms", "bug-optimizer-momentum", "bug-optimizer-muon-decay", "bug-optimizer-muon-default-lr",
    "bug-optimizer-no-nesterov", "bug-optimizer-no-width-scaling", "bug-parallel-block", "bug-qknorm-hardcoded",
    "bug-rotary-after-qknorm", "bug-rotary-base", "bug-rotary-bf16-positions", "bug-rotary-cos-sin-swapped",
    "bug-rotary-exponent", "bug-rotary-on-v", "bug-rotary-reversed", "bug-softmax-scale-by-d",
}
# bugs that compute the reference's numbers on a CPU in fp32, so the isolation comparison cannot see them: the device
# and dtype of a table or an output, how draws are distributed, the fields and the cache a component passes on
SAME_NUMBERS = {
    "bug-block-drops-cache", "bug-generate-always-top-p", "bug-greedy-without-top-k", "bug-init-skips-embedding",
    "bug-init-uniform", "bug-norm-not-cast-back", "bug-optimizer-no-initial-lr", "bug-optimizer-no-momentum-field",
    "bug-rotary-device", "bug-rotary-fp32-table", "bug-sampling-softmax-wrong-dim", "bug-temperature",
    "bug-temperature-multiplied", "bug-top-k-ids-not-mapped", "bug-top-k-ignored", "bug-top-k-ignores-temperature",
    "bug-top-k-off-by-one", "bug-unseeded",
}


def failed(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.passed is False]


# --- correct implementations pass -----------------------------------------------------------------------------------


def test_reference_passes_every_contract_check():
    results = run_checks("reference")
    assert {r.component for r in results} == set(COMPONENT_NAMES)
    assert not failed(results), [(r.component, r.name, r.detail) for r in failed(results)]
    assert all(r.passed is True and r.diagnosis == "" for r in results)


@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_reference_matches_itself(component):
    r = matches_reference("reference", component)
    assert r.passed is True, r.detail
    assert r.component == component and r.name == "matches reference"


def test_reference_matches_itself_in_bf16_within_its_measured_bf16_floor():
    r = matches_reference("reference", "attention", dtype=torch.bfloat16)
    assert r.passed is True and r.numbers["dtype"] == "bfloat16"
    tolerances = [t["tolerance"] for t in r.numbers["tensors"].values()]
    # bf16 carries 8 bits: each floor is at least one rounding (2^-8), each tolerance 10x its floor
    assert min(tolerances) >= FLOOR_MULTIPLE * 2**-8 and max(tolerances) < 1.0


ALTERNATIVE_CASES = [(s, c) for s, parts in ALTERNATIVES.items() for c in parts]


@pytest.mark.parametrize("impl_set, component", ALTERNATIVE_CASES, ids=[f"{s}-{c}" for s, c in ALTERNATIVE_CASES])
def test_a_correct_implementation_written_differently_passes(alt, impl_set, component):
    """torch.optim.Muon as the skeleton describes it, eps anywhere in [0, 1e-5], einsum and fp32-softmax attention,
    rotate_half and complex rotary, sampling by recomputing the prefix or by the Gumbel-max trick."""
    bad = failed(run_checks(impl_set, [component]))
    assert not bad, [(r.name, r.diagnosis, r.detail) for r in bad]
    r = matches_reference(impl_set, component)
    assert r.passed is True, r.detail


def test_components_an_alternative_set_does_not_provide_are_skipped(alt):
    results = run_checks(alt)
    provided = set(ALTERNATIVES[alt])
    assert {r.component for r in results if r.passed} == provided
    assert all(r.diagnosis == "not provided" for r in results if r.component not in provided)


# --- each bug fails with its cause first ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl_set", sorted(BUGS))
def test_check_names_the_cause_first_or_passes_a_bug_only_the_reference_shows(bugs, impl_set):
    component, _, diagnosis = bugs[impl_set]
    bad = failed(run_checks(impl_set, [component]))
    if impl_set in CONTRACT_VALID:
        assert not bad, [(r.name, r.diagnosis, r.detail) for r in bad]
        return
    assert bad, f"{impl_set} passed every contract check"
    assert bad[0].diagnosis == diagnosis, [(r.name, r.diagnosis, r.detail) for r in bad]
    assert bad[0].hint == DIAGNOSES[diagnosis] and "wrong_impls.py:" in bad[0].where


@pytest.mark.parametrize("impl_set", sorted(CONTRACT_VALID))
def test_bugs_the_contract_cannot_see_are_named_by_the_reference_comparison(bugs, impl_set):
    component, _, diagnosis = bugs[impl_set]
    r = matches_reference(impl_set, component)
    assert r.passed is False and r.diagnosis == diagnosis, r.detail


def test_the_suite_holds_at_least_45_distinct_mutants_each_with_a_named_fix():
    assert len(BUGS) >= 45 and len({id(impl) for _, impl, _ in BUGS.values()}) == len(BUGS)
    assert all(DIAGNOSES.get(diagnosis) for _, _, diagnosis in BUGS.values())


# --- what a check reports -------------------------------------------------------------------------------------------


def test_isolation_reports_errors_and_first_mismatching_positions(bugs):
    r = matches_reference("bug-relu", "mlp")
    out = r.numbers["tensors"]["output"]
    assert out["max_abs"] > 0 and out["rel"] > out["tolerance"] and out["tolerance"] < 1e-5
    assert out["first_mismatches"] and all(len(p) == 3 for p in out["first_mismatches"])
    assert "grad c_fc.weight" in r.numbers["tensors"]


def test_diff_tensors_against_hand_computed_values():
    ref = torch.tensor([[1.0, -2.0], [4.0, 0.5]])
    cand = ref.clone()
    cand[1, 0] += 0.04  # rel = 0.04 / 4 = 1e-2
    cand[0, 1] += 0.001
    d = diff_tensors("x", cand, ref, tolerance=1e-3)
    assert d.max_abs == pytest.approx(0.04) and d.rel == pytest.approx(1e-2)
    assert d.mean_abs == pytest.approx(0.041 / 4)
    assert d.first_mismatches == [(1, 0)]  # 0.001 / 4 is within the tolerance, 0.04 / 4 is not
    assert not d.passed and diff_tensors("x", cand, ref, tolerance=2e-2).passed
    assert not diff_tensors("x", cand[:1], ref, 1.0).passed  # another shape never passes
    nan = ref.clone()
    nan[0, 0] = float("nan")
    assert not diff_tensors("x", nan, ref, 1.0).passed


def test_relative_offset_check_measures_the_property():
    """Independent of the reference: a table of unit-norm rotations passes, the bf16 error is well under 5e-2."""
    r = rotary_relative_offset(Bench("reference", "rotary", default_check_config()))
    assert r.passed and r.numbers["max_deviation_same_offset"] < 1e-2
    assert r.numbers["score_spread_over_offsets"] > 0.1


def test_first_loss_check_compares_with_ln_vocab():
    r = next(r for r in run_checks("reference", ["init"]) if r.name == "first loss = ln(vocab)")
    assert r.numbers["expected"] == pytest.approx(math.log(default_check_config().vocab_size), abs=1e-12)
    assert r.numbers["abs_error"] <= 1e-4


class _TodoMLP(MLP):
    def forward(self, x):
        raise NotImplementedError("TODO: Implement mlp.forward — c_fc, relu², c_proj.")


class _ShapeBugMLP(MLP):
    def forward(self, x):
        return self.c_proj(self.c_fc(x).relu().square())[..., :-1]  # drops a channel


class _Plugin:
    @hookimpl
    def register_components(self, register):
        register("todo", "mlp", _TodoMLP)
        register("shapebug", "mlp", _ShapeBugMLP)


@pytest.fixture
def odd_sets() -> Iterator[None]:
    register_plugin(_Plugin(), name="nanogpt-test-odd")
    yield
    unregister_plugin(name="nanogpt-test-odd")


def test_not_implemented_is_reported_once_with_the_todo(odd_sets):
    results = run_checks("todo", ["mlp"])
    assert len(results) == 1
    r = results[0]
    assert r.passed is None and r.status == "not implemented" and r.diagnosis == "not implemented"
    assert r.detail.startswith("TODO: Implement mlp.forward")
    m = matches_reference("todo", "mlp")
    assert m.passed is None and m.diagnosis == "not implemented"


def test_an_exception_in_the_component_is_a_failed_check_not_a_crash(odd_sets):
    results = run_checks("shapebug", ["mlp"])
    bad = failed(results)
    assert bad and {r.diagnosis for r in bad} <= {"wrong shape", "raised an error"}
    assert bad[0].diagnosis == "wrong shape"
    raised = next(r for r in bad if r.diagnosis == "raised an error" and "RuntimeError" in r.detail)
    # the line that raised, in the component's own file, and the traceback for --debug
    assert "test_checks.py:" in raised.where and "_ShapeBugMLP.forward" in raised.where
    assert "Traceback" in raised.traceback and "traceback" not in raised.to_dict()


def test_components_a_set_does_not_provide_are_skipped(odd_sets):
    results = run_checks("todo")
    skipped = [r for r in results if r.component != "mlp"]
    assert len(skipped) == len(COMPONENT_NAMES) - 1
    assert all(r.passed is None and r.diagnosis == "not provided" for r in skipped)


def test_unknown_set_or_component_is_a_clear_error():
    with pytest.raises(UseSpecError, match="unknown implementation set"):
        run_checks("nope")
    with pytest.raises(UseSpecError, match="unknown component"):
        run_checks("reference", ["attn"])


def test_results_serialise_to_json():
    import json

    r = run_checks("reference", ["norm"])[0]
    data = json.loads(json.dumps(r.to_dict()))
    assert data["status"] == "pass" and data["component"] == "norm"


def test_check_cli_shows_the_cause_first_with_where_and_the_traceback_behind_debug(bugs):
    from click.testing import CliRunner

    from nanogpt_cli.main import cli

    plain = CliRunner().invoke(cli, ["check", "bug-norm-no-keepdim:norm"])
    debug = CliRunner().invoke(cli, ["check", "bug-norm-no-keepdim:norm", "--debug"])
    assert plain.exit_code == debug.exit_code == 1
    text = " ".join(plain.output.split())
    first_row = text.split("┡", 1)[1]
    assert first_row.index("cause →") < first_row.index("raised an error")  # the cause before the symptoms
    assert "norm reduces without keepdim" in text and "where: " in text and "NormNoKeepdim.forward" in text
    assert "Traceback" not in plain.output and "Traceback (most recent call last)" in debug.output


def test_least_squares_with_a_column_of_zeros_gives_the_same_answer_every_call():
    # torch's default CPU driver returned all zeros in 8 of 2,000 identical calls here; the update-kind checks fit
    # exactly such columns (a parameter that starts at zero), and a wrong zero failed correct optimizers at random
    signs = torch.where(torch.rand(13, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0).double()
    a = torch.stack([signs, torch.zeros_like(signs)], dim=1)
    answers = {tuple(least_squares(a, 0.0138 * signs[:, None]).flatten().tolist()) for _ in range(2000)}
    assert len(answers) == 1
    assert answers.pop()[0] == pytest.approx(0.0138, rel=1e-12)
