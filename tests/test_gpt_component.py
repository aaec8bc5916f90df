"""The `gpt` component, the model's top level: the reference's FLOPs formula against torch's own count, the classic
mistakes each named first by compare, a hand-written top level that matches the reference in compare and in a whole
student run, the skeleton's first stop, the core's guards around a top level, and the trace of the model itself."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from plugins.wrong_gpt import GPT_BUGS
from test_learner_errors import TINY_TEXT, train_args
from test_learner_support import REFERENCE_PARTS, _one_thread, make_set, registered, skel  # noqa: F401
from tiny_training import tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core import GPTConfig
from nanogpt_core.checks import DIAGNOSES
from nanogpt_core.checks.top_level import counted_flops_per_token
from nanogpt_core.compare import compare
from nanogpt_core.errors import ComponentError
from nanogpt_core.learn.diagnose import diagnose
from nanogpt_core.learn.workspace import write_pristine_dir
from nanogpt_core.model.assembly import GPT as CoreGPT
from nanogpt_core.model.assembly import assembled_class, build_model
from nanogpt_core.model.component_files import load_set_from_dir
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.trace import tracing
from nanogpt_core.train.loop import train
from nanogpt_impls.reference.gpt import GPT as ReferenceGPT

REPO = Path(__file__).resolve().parents[1]
CFG = GPTConfig(sequence_len=16, vocab_size=64, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)


# --- estimate_flops: nanochat's formula is what torch counts -----------------------------------------------------


@pytest.mark.parametrize("shape", [dict(n_head=4, n_kv_head=4), dict(n_head=4, n_kv_head=2),
                                   dict(n_head=4, n_kv_head=1), dict(n_head=2, n_kv_head=1, n_layer=3)])
def test_estimate_flops_equals_the_matmul_flops_torch_counts_on_a_forward_and_backward(shape):
    cfg = GPTConfig(**{**dict(sequence_len=32, vocab_size=97, n_layer=2, n_embd=64), **shape})
    model = build_model(cfg)
    C, H, Hkv, D, L, T, V = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.n_layer, cfg.sequence_len, \
        cfg.vocab_size
    # written out: per layer c_q, c_k, c_v, c_proj and the MLP's two 4C matrices, the head; 6 FLOPs per weight
    # (2 forward, 4 backward), plus q k^T and att v at full T (12 L H D T), the embedding a lookup
    by_hand = 6 * (L * (C * H * D + 2 * C * Hkv * D + C * C + 8 * C * C) + V * C) + 12 * L * H * D * T
    assert model.estimate_flops() == by_hand
    assert counted_flops_per_token(model, T) == by_hand  # torch's FlopCounterMode, attention on the math backend


# --- the classic mistakes, each named first -------------------------------------------------------------------------


@pytest.mark.parametrize("impl_set", sorted(GPT_BUGS))
def test_compare_names_each_classic_top_level_mistake_first(gpt_bugs, impl_set):
    _, diagnosis = gpt_bugs[impl_set]
    report = compare(f"{impl_set}:gpt", steps=0, device="cpu")
    verdict = report.verdict("gpt")
    assert verdict.status == "fail" and verdict.diagnosis == diagnosis, (verdict.diagnoses, verdict.detail)
    first = next(r for r in verdict.checks if r.passed is False)  # what `nanogpt check` shows first, too
    assert first.diagnosis == diagnosis and verdict.next_step
    assert report.exit_code == 1


def test_the_bugs_cover_every_mistake_the_issue_names():
    named = {"missing softcap", "wrong softcap value", "final norm missing", "embedding norm missing",
             "loss not in fp32", "targets -1 not ignored", "logits of the wrong shape", "embedding and head tied",
             "estimate_flops off"}
    assert named <= {diagnosis for _, diagnosis in GPT_BUGS.values()} <= set(DIAGNOSES)


# --- a hand-written top level -------------------------------------------------------------------------------------


def test_a_hand_written_gpt_matches_the_reference_in_compare(alt):
    report = compare(f"{alt}:gpt", steps=10, data="synthetic", device="cpu")
    verdict = report.verdict("gpt")
    assert report.passed, report.failed
    assert verdict.isolation.passed  # logits, losses, every gradient, the cached decode: within rel 1e-5
    assert {n for n in verdict.isolation.numbers["tensors"]} >= {"output", "loss", "grad lm_head.weight",
                                                                   "grad transformer.wte.weight"}
    t = report.training
    assert t.candidate.shared_weights and t.passed and t.max_abs_diff < t.tolerance


def _finished_workspace(root: Path) -> Path:
    """A learner's workspace with every component written: the reference's files for eight of them, the
    hand-written top level (tests/plugins/alt_gpt.py) for gpt."""
    directory = write_pristine_dir(root)
    for component in COMPONENT_NAMES:
        source = REPO / "tests" / "plugins" / "alt_gpt.py" if component == "gpt" else \
            REPO / "impls" / "reference" / f"{component}.py"
        shutil.copyfile(source, directory / f"{component}.py")
    return directory


def test_a_whole_student_set_with_a_hand_written_gpt_trains_as_the_reference(tiny_corpus, tiny_tokenizer,  # noqa: F811
                                                                           tmp_path):
    directory = _finished_workspace(tmp_path / "student")
    with registered(load_set_from_dir("finished", directory), "test-finished"):
        runs = {use: train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / use), stream=io.StringIO(),
                           progress_bar=False) if use == "reference" else
                train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / use, use=use), stream=io.StringIO(),
                      progress_bar=False) for use in ("reference", "finished")}
        result = CliRunner().invoke(cli, train_args("finished", tiny_corpus, tmp_path / "cli"))
    assert result.exit_code == 0, result.output
    ref, mine = runs["reference"].losses, runs["finished"].losses
    assert len(ref) == len(mine) == 8
    # same init (the same modules built in the same order), same batches: the hand-written loss differs from
    # F.cross_entropy by float rounding only (measured: 5e-7 at most over these 8 steps)
    assert max(abs(a - b) for a, b in zip(ref, mine)) < 1e-5


# --- the skeleton's first stop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gpt", None])
def test_train_from_a_pristine_skeleton_stops_first_at_gpt_init_with_the_panel(skel, tmp_path, which):  # noqa: F811
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    use = f"{skel}:{which}" if which else skel  # the top level alone, or the whole pristine set
    result = CliRunner().invoke(cli, train_args(use, corpus, tmp_path / "run"))
    assert result.exit_code == 3, result.output
    assert "Not implemented yet: gpt.__init__" in result.output
    assert "gpt.py" in result.output and "impls/reference/gpt.py" in result.output
    assert "make_block" in result.output and "Traceback" not in result.output


# --- the core's guards around a top level ------------------------------------------------------------------------


class DefinesGenerate(ReferenceGPT):
    def generate(self, *args, **kwargs):  # nanochat's GPT has one; here sampling is a component
        raise AssertionError("never called")


class NoHead(ReferenceGPT):
    def __init__(self, config, *, make_block, norm):
        super().__init__(config, make_block=make_block, norm=norm)
        del self.lm_head


class OneBlockShort(ReferenceGPT):
    def __init__(self, config, *, make_block, norm):
        super().__init__(config, make_block=make_block, norm=norm)
        del self.transformer.h[-1]


class PlainScale(ReferenceGPT):
    def __init__(self, config, *, make_block, norm):
        super().__init__(config, make_block=make_block, norm=norm)
        self.scale = torch.ones(config.n_embd)  # not a Parameter: never trained, saved or moved


class NotAModule:
    def __init__(self, config, *, make_block, norm):
        pass

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        pass

    def estimate_flops(self):
        return 0


@pytest.mark.parametrize("top, message", [
    (DefinesGenerate, r"gpt \(guard\) defines generate, which the core provides on every model; remove it"),
    (NoHead, r"gpt \(guard\) builds no self\.lm_head, which the other components use; .*transformer\.wte"),
    (OneBlockShort, r"gpt \(guard\) holds 1 blocks in transformer\.h but n_layer is 2; build them with "
                    r"\[make_block\(i\)"),
    (PlainScale, r"gpt \(guard\) keeps self\.scale \(PlainScale\) as a plain tensor"),
    (NotAModule, r"gpt \(guard\) is .*NotAModule.*, not an nn\.Module class"),
])
def test_the_core_refuses_a_top_level_the_rest_cannot_work_with(top, message):
    with registered(make_set("guard", {"gpt": top}), "test-guard"):
        with pytest.raises(ComponentError, match=message):
            build_model(CFG, use="guard:gpt")


def test_a_refused_top_level_is_one_line_and_exit_4_on_the_command_line(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    with registered(make_set("guard", {"gpt": NoHead}), "test-guard"):
        result = CliRunner().invoke(cli, train_args("guard:gpt", corpus, tmp_path / "run"))
    assert result.exit_code == 4 and "builds no self.lm_head" in result.output and "Traceback" not in result.output


def test_the_model_is_the_components_own_class_with_the_cores_facilities_mixed_in():
    model = build_model(CFG)
    assert isinstance(model, ReferenceGPT) and isinstance(model, CoreGPT)
    assert type(model) is assembled_class(ReferenceGPT) and type(model).__name__ == "GPT"
    assert type(model).forward is ReferenceGPT.forward  # the component's forward is the model's
    assert {name for name, _ in model.named_buffers()} == {"cos", "sin"} and "cos" not in model.state_dict()
    assert model.use["gpt"] == "reference" and model.parts["gpt"] is ReferenceGPT


# --- the trace and the panel of the model itself --------------------------------------------------------------------


def test_the_trace_starts_with_the_top_level_and_tags_it(capsys):
    model = build_model(CFG, trace="flow")
    built = [line for line in capsys.readouterr().out.splitlines() if "called" in line]
    assert built[0] == "[DEBUG] GPT.__init__() called  [reference:gpt]"  # before any layer
    assert built[-1] == "[DEBUG] Rotary.precompute() called  [reference:rotary]"  # the table once the model is built
    model.init_weights()
    out = io.StringIO()
    x = torch.randint(0, CFG.vocab_size, (1, 16))
    with tracing(model, "flow", file=out):
        model(x, x)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["[DEBUG] GPT.forward() called  [reference:gpt]", "[DEBUG]   Input shape: torch.Size([1, 16])"]


class NaNHead(ReferenceGPT):
    """Divides the logits by zero in the top level: the trace must blame gpt, not a block."""

    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        return super().forward(idx, targets, kv_cache, loss_reduction) / 0.0


def test_stats_trace_blames_a_top_level_that_makes_nan():
    with registered(make_set("nanhead", {"gpt": NaNHead}), "test-nanhead"):
        model = build_model(CFG, use="nanhead:gpt")
        model.init_weights()
        out = io.StringIO()
        x = torch.randint(0, CFG.vocab_size, (1, 16))
        with tracing(model, "stats", file=out) as tracer:
            model(x, x)
    assert tracer.first_nonfinite == "NaNHead.forward"
    assert "(component 'gpt')" in out.getvalue()


class ShapeBugGPT(ReferenceGPT):
    def forward(self, idx, targets=None, kv_cache=None, loss_reduction="mean"):
        x = self.transformer.wte(idx)
        return self.lm_head(x.transpose(1, 2))  # (B, C, T) into a (C -> V) head


def test_a_bug_in_the_top_level_is_diagnosed_in_gpt_forward():
    with registered(make_set("shapebug", {"gpt": ShapeBugGPT}), "test-shapebug"):
        model = build_model(CFG, use="shapebug:gpt")
        with pytest.raises(RuntimeError) as info:
            model(torch.zeros(1, 4, dtype=torch.long))
        d = diagnose(info.value, model.use)
    assert (d.kind, d.component, d.impl_set, d.method) == ("shape", "gpt", "shapebug", "forward")
    assert "make_block" in d.signature


def test_the_top_level_is_in_the_reference_set_and_the_registry_lists_nine_components():
    assert REFERENCE_PARTS["gpt"] is ReferenceGPT and len(COMPONENT_NAMES) == 9
    assert issubclass(ReferenceGPT, nn.Module) and not issubclass(ReferenceGPT, CoreGPT)
