"""The training loop: nanochat's schedule by hand, gradient accumulation, a real short run that learns, exact resume,
Ctrl-C, divergence."""

from __future__ import annotations

import io
import json
import math
import os
import signal

import pytest
import torch
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from tiny_training import _one_thread, tiny_corpus, tiny_settings, tiny_shards, tiny_tokenizer  # noqa: F401

from nanogpt_core import GPTConfig, build_model
from nanogpt_core.data.loader import TokenLoader
from nanogpt_core.errors import CheckpointError, ConfigError, TrainingError
from nanogpt_core.io.checkpoint import latest_checkpoint, load_checkpoint
from nanogpt_core.train.loop import TrainingInterrupted, train
from nanogpt_core.train.run_log import format_step_line, read_metrics
from nanogpt_core.train.schedule import lr_multiplier, muon_momentum
from nanogpt_core.train.settings import eval_steps, grad_accum_steps, resume_settings
from nanogpt_core.train.step import accumulate_gradients, apply_schedule, clip_gradients

# --- schedule, by hand -----------------------------------------------------------------------------------------


def test_lr_multiplier_default_schedule_is_flat_then_linear_warmdown():
    # N=100, warmdown 0.2 -> 20 warm-down steps: flat through step 80, then (100 - step) / 20
    assert [lr_multiplier(s, 100) for s in (0, 50, 80)] == [1.0, 1.0, 1.0]
    assert lr_multiplier(81, 100) == pytest.approx(19 / 20)
    assert lr_multiplier(90, 100) == pytest.approx(0.5)
    assert lr_multiplier(99, 100) == pytest.approx(0.05)


def test_lr_multiplier_warmup_and_final_fraction():
    # warm-up 10 of 100 steps: (step + 1) / 10
    assert lr_multiplier(0, 100, warmup_ratio=0.1) == pytest.approx(0.1)
    assert lr_multiplier(4, 100, warmup_ratio=0.1) == pytest.approx(0.5)
    assert lr_multiplier(9, 100, warmup_ratio=0.1) == 1.0
    assert lr_multiplier(10, 100, warmup_ratio=0.1) == 1.0
    # warm-down to final_lr_frac 0.1: halfway down the 20 steps -> 0.5 * 1 + 0.5 * 0.1
    assert lr_multiplier(90, 100, final_lr_frac=0.1) == pytest.approx(0.55)
    assert lr_multiplier(99, 100, final_lr_frac=0.1) == pytest.approx(0.05 + 0.95 * 0.1)


def test_lr_multiplier_rounds_warmdown_steps_as_nanochat():
    # round(0.25 * 10) = round(2.5) = 2 (Python rounds half to even): steps 0..8 flat, step 9 at 1/2
    assert [lr_multiplier(s, 10, warmdown_ratio=0.25) for s in range(10)] == [1.0] * 9 + [0.5]
    # the seed's single step: no warm-down step exists (round(0.2) = 0), so the one step runs at full lr
    assert lr_multiplier(0, 1) == 1.0


@hypothesis_settings(max_examples=300, deadline=None)
@given(num_iterations=st.integers(1, 5000), beyond=st.integers(0, 10000), warmup=st.floats(0, 1),
       warmdown=st.floats(0, 1), final=st.floats(0, 1))
def test_lr_multiplier_stays_in_zero_one_for_any_step(num_iterations, beyond, warmup, warmdown, final):
    """Every step a run takes, and any step past the end (a resume that asked for fewer steps than it had): the
    multiplier is a fraction, never negative (which trained with a negative learning rate) and never a division by
    zero (a warm-down of zero steps)."""
    for step in (0, num_iterations // 2, num_iterations - 1, num_iterations + beyond):
        lrm = lr_multiplier(step, num_iterations, warmup, warmdown, final)
        assert 0 <= lrm <= 1, (step, lrm)
    # past the end it holds the last value the warm-down reaches (or the flat 1 without warm-down steps)
    expected = final if round(warmdown * num_iterations) else 1.0
    assert lr_multiplier(num_iterations + beyond, num_iterations, warmup, warmdown, final) == expected


@pytest.mark.parametrize("kwargs", [{"warmup_ratio": 2.0}, {"warmdown_ratio": -1.0}, {"final_lr_frac": 1.5},
                                    {"final_lr_frac": float("nan")}])
def test_lr_multiplier_refuses_ratios_outside_zero_one(kwargs):
    with pytest.raises(ValueError, match="must be between 0 and 1"):
        lr_multiplier(0, 10, **kwargs)


def test_muon_momentum_warms_up_over_300_steps():
    assert muon_momentum(0) == pytest.approx(0.85)
    assert muon_momentum(150) == pytest.approx(0.90)
    assert muon_momentum(300) == pytest.approx(0.95)
    assert muon_momentum(3000) == pytest.approx(0.95)


def test_apply_schedule_sets_every_group_and_only_muon_momentum(tiny_config):
    model = build_model(tiny_config)
    model.init_weights()
    adamw, muon = model.setup_optimizers()
    betas = [g["betas"] for g in adamw.param_groups]
    settings = type("S", (), dict(num_iterations=100, warmup_ratio=0.0, warmdown_ratio=0.2, final_lr_frac=0.0))
    lrm = apply_schedule([adamw, muon], 90, settings)
    assert lrm == pytest.approx(0.5)
    for opt in (adamw, muon):
        for group in opt.param_groups:
            assert group["lr"] == pytest.approx(group["initial_lr"] * 0.5)
    assert [g["momentum"] for g in muon.param_groups] == [pytest.approx(0.85 + 0.1 * 90 / 300)]
    assert [g["betas"] for g in adamw.param_groups] == betas and all("momentum" not in g for g in adamw.param_groups)


# --- batch arithmetic ------------------------------------------------------------------------------------------


def test_grad_accum_steps_and_eval_steps():
    assert grad_accum_steps(512, 1, 512) == 1  # the seed's command
    assert grad_accum_steps(4096, 8, 256) == 2
    assert grad_accum_steps(4096, 4, 256, world_size=2) == 2
    with pytest.raises(ConfigError, match="multiple of .* = 512; use --total-batch-size 1024"):
        grad_accum_steps(1000 + 100, 1, 512)
    with pytest.raises(ConfigError, match="use --total-batch-size 512"):
        grad_accum_steps(100, 1, 512)
    assert eval_steps(512, 1, 512) == 1
    assert eval_steps(100, 1, 512) == 1  # never zero
    assert eval_steps(8192, 8, 256) == 4


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, float("nan")])  # under the limit, at it, over it, broken
def test_clipping_is_torchs_clip_grad_norm_bit_for_bit(scale):
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        a.grad = torch.randn_like(a) * scale
        b.grad = a.grad.clone()
    limit = torch.nn.utils.get_total_norm([p.grad for p in ours.parameters()]).item() if scale == 1.0 else 1.0
    norm = clip_gradients(ours, limit)
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), limit).item()
    assert norm == expected or (math.isnan(norm) and math.isnan(expected))
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a.grad, b.grad) or (a.grad.isnan().all() and b.grad.isnan().all())


def test_accumulated_gradients_equal_one_big_batch():
    """2 micro-batches of 2 rows give the gradient of 1 batch of 4 rows (the loss / accum division)."""
    config = GPTConfig(sequence_len=16, vocab_size=64, n_layer=1, n_head=2, n_kv_head=1, n_embd=32)
    model = build_model(config)
    model.init_weights()
    for p in model.parameters():  # lm_head starts at zero; make every gradient non-trivial
        p.data.add_(0.02 * torch.randn_like(p))
    tokens = torch.randint(0, 64, (400,))

    def grads(batch, accum):
        model.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, TokenLoader(tokens, batch, 16), accum)
        return loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_big, big = grads(4, 1)
    loss_acc, acc = grads(2, 2)
    assert loss_acc == pytest.approx(loss_big, rel=1e-6)
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-5, atol=1e-7, msg=name)
    _, wrong = grads(2, 1)  # half the batch: a different gradient, so the comparison above can fail
    assert not torch.allclose(wrong["lm_head.weight"], big["lm_head.weight"], rtol=1e-3, atol=1e-6)


def test_step_line_has_the_fields():
    line = format_step_line({"step": 4, "smooth_loss": 3.21, "lrm": 0.5, "dt_ms": 12.3, "tok_per_sec": 4096.0,
                             "eta_s": 125, "mfu": None}, 10)
    assert line == "step 00005/00010 (50.0%) | loss 3.2100 | lrm 0.50 | 12.3 ms/step | 4,096 tok/s | eta 2m05s"
    with_mfu = format_step_line({"step": 0, "smooth_loss": 1, "lrm": 1, "dt_ms": 1, "tok_per_sec": 1, "mfu": 41.5,
                                 "eta_s": None}, 1)
    assert "mfu 41.5%" in with_mfu


# --- real runs -------------------------------------------------------------------------------------------------


def test_thirty_step_run_learns(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    # stored order: which 7 of the ~40 documents a 30-step run reads moves its val bpb by up to 0.14 (0.67-0.80 of
    # the first over two shuffle seeds, 0.77 in stored order), and these thresholds were measured in stored order
    settings = tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", num_iterations=30, eval_every=15,
                             shuffle=False)
    result = train(settings, stream=open(os.devnull, "w"))
    losses = result.losses
    assert len(losses) == 30
    assert losses[0] == pytest.approx(math.log(384), abs=0.05)  # lm_head starts at zero: uniform over the vocab
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5, losses
    assert result.val_bpb < 0.8 * result.first_val_bpb
    # the run folder holds what it promises
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "samples.txt", "loss.png"):
        assert (run / name).is_file(), name
    records = read_metrics(run)
    assert [r["step"] for r in records if r["type"] == "train"] == list(range(30))
    assert [r["step"] for r in records if r["type"] == "eval"] == [0, 15, 30]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["n_layer"] == 1 and config["training"]["num_iterations"] == 30
    assert config["use_spec"] == "reference" and config["grad_accum_steps"] == 2
    assert latest_checkpoint(run) == result.checkpoint and result.checkpoint.name == "step_000030"
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "=== step 30 ===" in (run / "samples.txt").read_text()


def _stop_at(k):
    def on_step(step, record):
        if step == k - 1:
            raise KeyboardInterrupt

    return on_step


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_resume_reproduces_the_uninterrupted_run_exactly(tiny_corpus, tiny_shards, tiny_tokenizer, tmp_path,  # noqa: F811
                                                         mode):
    """In memory (one text file) and streamed (a folder of files, a tokenizer thread), documents shuffled."""
    quiet = open(os.devnull, "w")
    data, extra = (tiny_corpus, {}) if mode == "memory" else (tiny_shards, {"stream": True})
    full = train(tiny_settings(data, tiny_tokenizer, tmp_path / "full", **extra), stream=quiet)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_settings(data, tiny_tokenizer, tmp_path / "cut", **extra), on_step=_stop_at(3), stream=quiet)
    assert info.value.step == 3 and info.value.checkpoint.name == "step_000003"
    saved = load_checkpoint(info.value.checkpoint).state["train_loader"]
    assert saved["kind" if mode == "stream" else "shuffle_seed"] == ("stream" if mode == "stream" else 7)
    settings = resume_settings(tmp_path / "cut", {})
    resumed = train(settings, resume=tmp_path / "cut", stream=quiet)
    assert resumed.losses == full.losses[3:]  # bit-exact on CPU
    assert resumed.val_bpb == full.val_bpb
    a = load_checkpoint(full.checkpoint).model_state
    b = load_checkpoint(resumed.checkpoint).model_state
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the resumed run's metrics continue the interrupted ones without repeating a step
    steps = [r["step"] for r in read_metrics(tmp_path / "cut") if r["type"] == "train"]
    assert steps == list(range(8))


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_sigint_saves_a_checkpoint_at_the_step_boundary(tiny_corpus, tiny_tokenizer, tmp_path, signum,  # noqa: F811
                                                        exit_code):
    """Ctrl-C, and SIGTERM (what SLURM, Kubernetes and `kill` send before SIGKILL), the same way."""
    def on_step(step, record):
        if step == 1:
            os.kill(os.getpid(), signum)  # the real signal: the handler defers it to the boundary

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run"), on_step=on_step,
              stream=open(os.devnull, "w"))
    assert info.value.step == 2 and info.value.signum == signum and info.value.exit_code == exit_code
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 2
    assert ckpt.state["train_loader"]["position"] == 2 * 256  # two steps of 256 tokens read, none more
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers were put back
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_before_the_first_step_stops_at_once_and_leaves_no_folder(tiny_corpus, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    """SIGTERM while the tokenizer is being trained: nothing to save, nothing left behind, exit code 143."""
    from nanogpt_core.data.tokenizer import Tokenizer

    real = Tokenizer.train.__func__

    def train_then_get_killed(cls, texts, vocab_size):
        tokenizer = real(cls, texts, vocab_size)
        os.kill(os.getpid(), signal.SIGTERM)
        return tokenizer

    monkeypatch.setattr(Tokenizer, "train", classmethod(train_then_get_killed))
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_settings(tiny_corpus, None, tmp_path / "runs" / "new", vocab_size=300),
              stream=open(os.devnull, "w"))
    assert info.value.exit_code == 143 and info.value.checkpoint is None
    assert not (tmp_path / "runs").exists()


def test_nan_loss_stops_with_a_diagnosis_and_keeps_the_last_checkpoint(tiny_corpus, tiny_tokenizer, tmp_path,  # noqa: F811
                                                                       monkeypatch):
    from nanogpt_impls.reference.gpt import GPT  # the model's top level: its forward is the model's

    forward, calls = GPT.forward, {"n": 0}

    def poisoned(self, idx, targets=None, **kw):
        out = forward(self, idx, targets, **kw)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] > 2 * 3:  # from the 4th step on (2 micro-batches a step)
                return out * float("nan")
        return out

    monkeypatch.setattr(GPT, "forward", poisoned)
    settings = tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", save_every=2)
    with pytest.raises(TrainingError, match=r"loss became nan at step 3; the last finite loss was \d.*"
                                            r"Last good checkpoint: .*step_000002"):
        train(settings, stream=open(os.devnull, "w"))
    assert latest_checkpoint(tmp_path / "run").name == "step_000002"
    assert load_checkpoint(tmp_path / "run").step == 2


def test_resume_refuses_a_change_of_shape_and_keeps_other_overrides(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", num_iterations=2),
          stream=open(os.devnull, "w"))
    with pytest.raises(CheckpointError, match="--depth 2 differs from the checkpoint's 1"):
        resume_settings(tmp_path / "run", {"depth": 2})
    settings = resume_settings(tmp_path / "run", {"num_iterations": 4, "matrix_lr": 0.01})
    assert settings.num_iterations == 4 and settings.matrix_lr == 0.01 and settings.depth == 1
    assert settings.out == str(tmp_path / "run")
    # the same data by a relative path is the same data
    assert resume_settings(tmp_path / "run", {"data": os.path.relpath(tiny_corpus)}).depth == 1
    with pytest.raises(CheckpointError, match="--data .* differs"):
        resume_settings(tmp_path / "run", {"data": str(tmp_path / "other.txt")})


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", num_iterations=1),
          stream=open(os.devnull, "w"))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", num_iterations=1),
              stream=open(os.devnull, "w"))


def test_tokenizer_is_trained_into_the_run_then_reused(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    from nanogpt_core.data.tokenizer import Tokenizer

    quiet = open(os.devnull, "w")
    run = tmp_path / "run"
    settings = tiny_settings(tiny_corpus, None, run, num_iterations=0, vocab_size=300)
    train(settings, stream=quiet)
    trained = Tokenizer.load(run / "tokenizer")
    assert trained.vocab_size == 300
    assert json.loads((run / "config.json").read_text())["model"]["vocab_size"] == 300
    # a folder with a tokenizer but no checkpoint (a run stopped before its first save) reuses it...
    import shutil

    shutil.rmtree(run / "checkpoints")
    result = train(tiny_settings(tiny_corpus, None, run, num_iterations=0), stream=quiet)
    assert load_checkpoint(result.checkpoint).tokenizer_fingerprint == trained.fingerprint
    # ...and refuses a --vocab-size it does not have
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(ConfigError, match="has a 300-token tokenizer but --vocab-size is 512"):
        train(tiny_settings(tiny_corpus, None, run, num_iterations=0, vocab_size=512), stream=quiet)


def test_the_cpu_demo_defaults_are_consistent():
    """`nanogpt train` with no flags must at least start: batch arithmetic and model shape from the defaults."""
    from nanogpt_core.train.settings import TrainSettings, model_config

    s = TrainSettings()
    assert grad_accum_steps(s.total_batch_size, s.device_batch_size, s.max_seq_len) == 4
    assert eval_steps(s.eval_tokens, s.device_batch_size, s.max_seq_len) == 8
    config = model_config(s, 4096)
    assert (config.n_layer, config.n_embd, config.n_head, config.sequence_len) == (2, 128, 1, 256)
    assert s.warmup_ratio == 0.0 and s.warmdown_ratio == 0.2 and s.final_lr_frac == 0.0 and s.grad_clip == 1.0


def test_an_optimizer_that_leaves_a_parameter_out_stops_before_the_first_step(tiny_corpus, tiny_tokenizer,  # noqa: F811
                                                                               tmp_path):
    from test_learner_support import REFERENCE_PARTS, make_set, registered

    from nanogpt_core.errors import ComponentError

    def without_head(model, **lrs):
        optimizers = REFERENCE_PARTS["optimizer"](model, **lrs)
        adamw = optimizers[0]
        adamw.param_groups = [g for g in adamw.param_groups if g["params"][0] is not model.lm_head.weight]
        return optimizers

    with registered(make_set("headless", {"optimizer": without_head}), "test-headless"):
        with pytest.raises(ComponentError, match="leaves lm_head.weight out of every parameter group"):
            train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", use="headless:optimizer"),
                  stream=open(os.devnull, "w"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # not a single step was taken


def test_step_hooks_run_at_their_steps_and_log_their_numbers(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    from nanogpt_core.train.loop import StepHook

    calls = []

    def probe(run, step):
        calls.append((step, run.model.training))
        return {"value": float(step)}

    hooks = [StepHook("probe", every=3, call=probe), StepHook("first", every=0, call=lambda run, step: None,
                                                              at_start=True)]
    train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run"), hooks=hooks, stream=io.StringIO())
    assert calls == [(3, False), (6, False), (8, False)]  # every 3 steps and the last (8), in eval mode
    logged = [(r["step"], r["value"]) for r in read_metrics(tmp_path / "run") if r["type"] == "probe"]
    assert logged == [(3, 3.0), (6, 6.0), (8, 8.0)]


def test_metric_sinks_get_what_the_run_folder_gets(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    class Sink:
        def __init__(self):
            self.events = []

        def start(self, config):
            self.events.append(("start", config["num_params"]))

        def record(self, record):
            self.events.append((record["type"], record["step"]))

        def samples(self, step, samples):
            self.events.append(("samples", step, len(samples)))

        def close(self):
            self.events.append(("close",))

    sink = Sink()
    train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", num_iterations=2), sinks=[sink],
          stream=io.StringIO())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    records = [(r["type"], r["step"]) for r in read_metrics(tmp_path / "run")]
    assert sink.events[0] == ("start", config["num_params"]) and sink.events[-1] == ("close",)
    assert [e for e in sink.events if e[0] in ("train", "eval")] == records
    assert ("samples", 2, 5) in sink.events
