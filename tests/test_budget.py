"""`nanogpt train --time`: durations, the scaling rule by hand, the plan's choice, and the deadline that keeps a run
to its budget (with a clock the test drives, so the timing is exact), then a real short run."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from click.testing import CliRunner
from tiny_training import _one_thread, tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.errors import ConfigError
from nanogpt_core.train import budget
from nanogpt_core.train.budget import (
    Candidate,
    Deadline,
    batch_accumulation,
    misfit,
    parse_duration,
    plan_run,
    target_tokens,
    vocab_for_text,
)
from nanogpt_core.train.loop import train
from nanogpt_core.train.run_log import read_metrics
from nanogpt_core.train.schedule import lr_multiplier
from nanogpt_core.train.settings import TrainSettings, validate_settings

# --- durations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2.5m", 150),
                                           ("300", 300), (" 5M ", 300), ("1h 30m", 5400), ("1m30s", 90)])
def test_durations_read_as_the_help_writes_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "m", "5m5", "5mm", "s5", "-5m", "1.2.3", "five minutes"])
def test_a_duration_that_is_not_one_names_the_forms(text):
    with pytest.raises(ConfigError, match=r"is not a duration; write it as 90s, 5m, 1h or 1h30m"):
        parse_duration(text)


def test_a_budget_too_short_to_measure_anything_is_refused():
    with pytest.raises(ConfigError, match=r"'3s' is 3 s, too short .* at least 10s"):
        parse_duration("3s")


def test_time_and_num_iterations_together_are_refused():
    settings = TrainSettings(time_budget=60, time_budget_fixed=["num_iterations"])
    with pytest.raises(ConfigError, match="--time chooses the number of steps itself"):
        validate_settings(settings)


# --- the rule, by hand -----------------------------------------------------------------------------------------


def test_a_model_should_see_twenty_tokens_a_parameter_but_a_small_text_no_more_than_three_times():
    assert target_tokens(1e6, math.inf) == 20e6  # streamed data: nanochat's ratio
    assert target_tokens(1e6, 300_000) == 900_000  # tinyshakespeare-sized: three passes
    assert misfit(900_000, 1e6, 300_000) == 0
    assert misfit(1_800_000, 1e6, 300_000) == pytest.approx(math.log(2)) == pytest.approx(misfit(450_000, 1e6, 300_000))
    assert misfit(0, 1e6, 300_000) == math.inf


@pytest.mark.parametrize("chars, vocab", [(1_003_854, 1024), (100e6, 8192), (1e12, 65536), (1000, 512)])
def test_the_vocabulary_is_about_the_square_root_of_the_characters(chars, vocab):
    assert vocab_for_text(chars) == vocab


def test_a_step_is_4096_tokens_of_micro_batches():
    assert batch_accumulation(micro_tokens=1024) == 4 and batch_accumulation(micro_tokens=4096) == 1
    assert batch_accumulation(micro_tokens=3000) == 2  # at least 4,096


# --- the plan ----------------------------------------------------------------------------------------------------


def fake_measurements(monkeypatch, seconds_per_param: float = 1e-7) -> list[int]:
    """Candidates whose micro-step takes time in proportion to their parameters (no model is run)."""
    measured = []

    def measure(config, settings, device, bf16):
        measured.append(config.n_layer)
        params = 12 * config.n_layer * config.n_embd**2 + config.vocab_size * config.n_embd
        return Candidate(config.n_layer, config, params, micro_s=seconds_per_param * params, optimizer_s=0.001,
                         forward_s=seconds_per_param * params / 3, token_s=0.001)

    monkeypatch.setattr(budget, "measure_candidate", measure)
    return measured


def test_the_plan_picks_the_candidate_closest_to_its_target(monkeypatch):
    measured = fake_measurements(monkeypatch)
    settings = TrainSettings(time_budget=300)
    plan = plan_run(settings, unique_tokens=300_000, vocab_size=4096, device=torch.device("cpu"), time_left_s=300)
    misfits = {c.depth: misfit(c.tokens, c.params, 300_000) for c in plan.candidates
               if c.steps >= budget.MIN_STEPS or c is plan.candidates[0]}  # fewer steps are too few to learn in
    assert plan.chosen.depth == min(misfits, key=misfits.get) and plan.settings.depth == plan.chosen.depth
    assert len(measured) >= 2 and measured == sorted(measured)  # smallest first
    assert max(measured) > plan.chosen.depth  # it measured one past the best, then stopped
    s = plan.settings
    assert s.num_iterations == plan.chosen.steps and s.total_batch_size == plan.chosen.accum * 4 * 256
    assert s.eval_every == math.ceil(s.num_iterations / budget.EVALS_PER_RUN)
    assert settings.depth == 2 and settings.num_iterations == 450  # the caller's settings are left alone
    assert any("<- chosen" in line and f"depth {s.depth}:" in line for line in plan.lines)


def test_the_plan_keeps_what_the_command_line_fixed(monkeypatch):
    measured = fake_measurements(monkeypatch)
    settings = TrainSettings(time_budget=300, depth=3, total_batch_size=8192, eval_every=7, compile=False,
                             time_budget_fixed=["depth", "total_batch_size", "eval_every", "compile"])
    plan = plan_run(settings, 300_000, 4096, torch.device("cpu"), 300)
    assert measured == [3]
    s = plan.settings
    assert (s.depth, s.total_batch_size, s.eval_every, s.compile) == (3, 8192, 7, False)
    assert "depth 3 (given)" in plan.lines[-1]


def test_a_slower_machine_gets_a_smaller_model_for_the_same_budget(monkeypatch):
    fake_measurements(monkeypatch, seconds_per_param=1e-7)
    fast = plan_run(TrainSettings(time_budget=300), 300_000, 4096, torch.device("cpu"), 300).chosen.depth
    fake_measurements(monkeypatch, seconds_per_param=1e-5)
    slow = plan_run(TrainSettings(time_budget=300), 300_000, 4096, torch.device("cpu"), 300).chosen.depth
    assert slow < fast


def test_measuring_leaves_the_runs_random_numbers_untouched(tiny_corpus):  # noqa: F811
    settings = TrainSettings(time_budget=20, n_embd=64, n_head=1, n_kv_head=1, max_seq_len=32, device_batch_size=2,
                             eval_tokens=64, time_budget_fixed=["depth"], depth=1)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    plan = plan_run(settings, 10_000, 384, torch.device("cpu"), 20)
    assert torch.equal(torch.rand(3), expected)
    chosen = plan.chosen
    assert chosen.micro_s > 0 and chosen.optimizer_s > 0 and chosen.forward_s > 0 and chosen.token_s > 0
    assert chosen.params == sum(p.numel() for p in _model(chosen.config).parameters()) - 384 * 64  # wte left out


def _model(config):
    from nanogpt_core import build_model
    return build_model(config)


# --- keeping to the budget, on a clock the test drives --------------------------------------------------------


def simulate(deadline: Deadline, step_s, eval_s: float = 0.0, start: float = 0.0) -> tuple[float, list[float]]:
    """Run the loop's boundary/step/eval sequence against `deadline` on a fake clock; `step_s(step)` is each step's
    time. Returns (the end time, the lr multiplier each step trained with)."""
    s, now, step, lrms = deadline.settings, start, 0, []
    while True:
        deadline.boundary(step, now)
        if step in (0, s.num_iterations) or (s.eval_every > 0 and step % s.eval_every == 0):  # as the loop does
            deadline.observe_eval(eval_s)
            now += eval_s
        if step == s.num_iterations:
            return now + deadline.end_reserve_s, lrms
        lrms.append(lr_multiplier(step, s.num_iterations, s.warmup_ratio, s.warmdown_ratio, s.final_lr_frac))
        now += step_s(step)
        step += 1


def test_a_faster_machine_than_planned_trains_longer_and_ends_on_time():
    settings = TrainSettings(num_iterations=100, eval_every=20)
    deadline = Deadline(settings, end=300.0, end_reserve_s=5.0)
    end, lrms = simulate(deadline, lambda step: 30.0 if step == 0 else 1.0, eval_s=2.0)  # compiled: slow first step
    assert settings.num_iterations > 200
    assert 300 - 1.0 - 2.0 <= end <= 300 + 1.0  # within a step (and an evaluation) of the budget
    # every step trained with the multiplier nanochat's schedule gives for the final count: nothing was changed
    # after the fact, the warm-down is whole
    assert lrms == [lr_multiplier(i, settings.num_iterations) for i in range(settings.num_iterations)]


def test_a_machine_that_slows_down_still_ends_near_the_budget():
    settings = TrainSettings(num_iterations=250, eval_every=-1)
    deadline = Deadline(settings, end=300.0, end_reserve_s=2.0)
    end, lrms = simulate(deadline, lambda step: 1.0 if step < 100 else 2.0)  # someone else's job from step 100
    assert settings.num_iterations < 250
    assert abs(end - 300) <= 0.1 * 300
    assert lrms == [lr_multiplier(i, settings.num_iterations) for i in range(settings.num_iterations)]


def test_the_count_is_kept_once_the_warm_down_has_begun():
    settings = TrainSettings(num_iterations=100, eval_every=-1)
    deadline = Deadline(settings, end=100.0, end_reserve_s=0.0)
    for step in range(86):  # one second a step: on plan
        deadline.boundary(step, float(step))
    assert deadline.frozen and settings.num_iterations == 100
    for step in range(86, 100):  # ten times faster in the warm-down: the count stays
        deadline.boundary(step, 86 + (step - 86) / 10)
    assert settings.num_iterations == 100


def test_every_rank_takes_rank_zeros_count():
    settings = TrainSettings(num_iterations=100, eval_every=-1)
    deadline = Deadline(settings, end=300.0, end_reserve_s=0.0, agree=lambda n: 123)
    for step in range(4):
        deadline.boundary(step, float(step))
    assert settings.num_iterations == 123


# --- a real run ----------------------------------------------------------------------------------------------------


def test_a_time_budgeted_run_plans_says_why_and_keeps_to_its_plan(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    # no tokenizer given: the run trains its own, of about sqrt(characters) tokens (the tiny corpus: ~160k -> 512)
    settings = tiny_settings(tiny_corpus, None, tmp_path / "run", time_budget=10,
                             time_budget_fixed=["compile", "bf16"], compile=False, bf16=False)
    out = io.StringIO()
    result = train(settings, stream=out)
    text = out.getvalue()
    assert "Budget:" in text and "<- chosen" in text and "re-planned" in text
    assert "Budget: a tokenizer of 512 tokens" in text
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["tokenizer"]["vocab_size"] == 512 == config["model"]["vocab_size"]
    planned = config["training"]
    assert planned["time_budget"] == 10 and planned["num_iterations"] == result.step  # re-planned count kept
    assert planned["depth"] == config["model"]["n_layer"]
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if r["type"] == "train"]
    assert steps == list(range(result.step))
    assert settings.num_iterations == 8  # the caller's settings are not the plan's
    # the budget was used, not overrun by much: generous bounds, the test machine is shared
    assert 0.5 * 10 <= result.wall_time_s <= 2.0 * 10


def test_time_errors_are_one_line_and_exit_2(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    runner = CliRunner()
    for args, message in ((["--time", "5x"], "is not a duration"),
                          (["--time", "5m", "--num-iterations", "10"], "give --time or --num-iterations, not both")):
        result = runner.invoke(cli, ["train", "--out", str(tmp_path / "never"), *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "never").exists()


def test_resuming_with_time_is_refused(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", num_iterations=2), stream=io.StringIO())
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "run"), "--time", "1m"])
    assert result.exit_code == 2 and "--time plans a new run" in result.output
