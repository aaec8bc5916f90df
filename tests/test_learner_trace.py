"""The `--debug` trace: the seed's config banner, one line per component call with shapes, first step only; and
`--debug=stats` flags NaN/Inf at the first component that produced them."""

from __future__ import annotations

import io
import re

import pytest
import torch
from click.testing import CliRunner
from test_learner_errors import TINY_TEXT, train_args
from test_learner_support import REFERENCE_PARTS, _one_thread, make_set, registered  # noqa: F401

import nanogpt_impls.reference as ref
from nanogpt_cli.main import cli
from nanogpt_core.errors import ConfigError
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.trace import normalize_mode, print_config_banner, tracing

CFG = GPTConfig(sequence_len=16, vocab_size=64, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)
SEED_BANNER = """\
[DEBUG] ========================================
[DEBUG] Initializing GPT model
[DEBUG]   n_layer: 4
[DEBUG]   n_head: 2
[DEBUG]   n_kv_head: 2
[DEBUG]   n_embd: 256
[DEBUG]   vocab_size: 65536
[DEBUG]   sequence_len: 512
[DEBUG] ========================================
"""


class NaNMLP(ref.MLP):
    """Produces NaN from finite input: the trace must blame it, not the block or the model around it."""

    def forward(self, x):
        return super().forward(x) * float("nan")


def test_banner_is_the_seeds():
    out = io.StringIO()
    print_config_banner(GPTConfig(sequence_len=512, vocab_size=65536, n_layer=4, n_head=2, n_kv_head=2, n_embd=256),
                        file=out)
    assert out.getvalue() == SEED_BANNER


def test_flow_trace_lists_every_component_call_with_shapes_for_the_first_forward_only():
    model = build_model(CFG)
    model.init_weights()
    x = torch.randint(0, 64, (1, 16))
    out = io.StringIO()
    with tracing(model, "flow", file=out):
        model(x, x).backward()
        model(x, x)  # a second forward (e.g. the next micro-batch) is not printed
    text = out.getvalue()
    lines = text.splitlines()
    assert all(line.startswith("[DEBUG]") for line in lines)
    assert text.count("[DEBUG] GPT.forward() called") == 1
    for layer in range(CFG.n_layer):
        i = lines.index(f"[DEBUG] Block.forward() called for layer {layer}  [reference:block]")
        assert lines[i + 1] == "[DEBUG]   Input shape: torch.Size([1, 16, 32])"
        assert f"[DEBUG] CausalSelfAttention.forward() called for layer {layer}  [reference:attention]" in lines
    # rotary rotates q (2 heads) and k (1 KV head) in every layer, with their own shapes
    assert text.count("[DEBUG] Rotary.apply() called") == 2 * CFG.n_layer
    assert "[DEBUG]   Input shape: torch.Size([1, 16, 2, 16])" in lines
    assert "[DEBUG]   Input shape: torch.Size([1, 16, 1, 16])" in lines
    # norms: embedding, 2 per block, QK-norm (2 per attention), final
    assert text.count("RMSNorm.forward() called") == 2 + 4 * CFG.n_layer
    assert "[DEBUG]   GPT.forward() returned shape: torch.Size([])" in lines  # the loss
    assert "mean=" not in text  # stats only with --debug=stats


def test_tracing_restores_everything_it_touched():
    model = build_model(CFG)
    apply_before = ref.Rotary.__dict__["apply"]
    parts_before = dict(model.parts)
    with tracing(model, "stats", file=io.StringIO()):
        assert ref.Rotary.__dict__["apply"] is not apply_before
    assert ref.Rotary.__dict__["apply"] is apply_before
    assert model.parts == parts_before
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_no_mode_prints_nothing(capsys):
    model = build_model(CFG)
    with tracing(model, None) as tracer:
        model.init_weights()
        model(torch.zeros(1, 4, dtype=torch.long))
    assert tracer is None and capsys.readouterr().out == ""


def test_function_components_are_traced_on_their_first_call():
    model = build_model(CFG)
    out = io.StringIO()
    with tracing(model, "flow", file=out):
        model.init_weights()
        model.setup_optimizers()
        model.setup_optimizers()
        list(model.generate([1, 2], 2, temperature=0.0))
    text = out.getvalue()
    assert text.count("[DEBUG] init_weights() called  [reference:init]") == 1
    assert text.count("[DEBUG] setup_optimizers() called  [reference:optimizer]") == 1
    assert text.count("[DEBUG] generate() called  [reference:generate]") == 1


def test_construction_trace_from_build_model(capsys):
    build_model(CFG, trace="flow")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["[DEBUG] ========================================", "[DEBUG] Initializing GPT model"]
    assert "[DEBUG] Rotary.precompute() called  [reference:rotary]" in lines
    assert "[DEBUG]   Rotary.precompute() returned shape: torch.Size([1, 160, 1, 8]), torch.Size([1, 160, 1, 8])" \
        in lines
    assert [line for line in lines if "Block.__init__" in line] == [
        f"[DEBUG] Block.__init__() called for layer {i}  [reference:block]" for i in range(CFG.n_layer)]


def test_stats_flag_nan_at_the_first_component_that_produced_it():
    with registered(make_set("nan", dict(REFERENCE_PARTS, mlp=NaNMLP)), "test-nan"):
        model = build_model(CFG, use="nan:mlp")
        model.init_weights()
        out = io.StringIO()
        x = torch.randint(0, 64, (1, 16))
        with tracing(model, "stats", file=out) as tracer:
            model(x, x)
    text = out.getvalue()
    flags = [line for line in text.splitlines() if "!!!" in line]
    assert len(flags) == 1, flags
    assert "NaN/Inf first appears in the output of NaNMLP.forward() (component 'mlp')" in flags[0]
    assert tracer.first_nonfinite == "NaNMLP.forward"
    # the stats lines: dtype, device, mean, std, min, max per tensor, and the NaN count on the bad output
    assert re.search(r"out \(1, 16, 32\) dtype=torch\.float32 device=cpu mean=nan .*NaN=512 Inf=0", text)
    assert re.search(r"in  \(1, 16, 32\) dtype=torch\.float32 device=cpu mean=\S+ std=\S+ min=\S+ max=\S+$",
                     text, re.M)


def test_stats_stays_quiet_when_everything_is_finite():
    model = build_model(CFG)
    model.init_weights()
    out = io.StringIO()
    with tracing(model, "stats", file=out) as tracer:
        model(torch.zeros(1, 4, dtype=torch.long))
    assert "!!!" not in out.getvalue() and tracer.first_nonfinite is None


@pytest.mark.parametrize("value, mode", [(None, None), (True, "flow"), ("flow", "flow"), ("stats", "stats"),
                                         ("inside", "inside"), ("stats,inside", "inside,stats"),
                                         ("flow,stats", "stats"), ("off", None)])
def test_normalize_mode(value, mode):
    assert normalize_mode(value) == mode


@pytest.mark.parametrize("value", ["verbose", "inside,loud"])
def test_normalize_mode_rejects_unknown_values(value):
    with pytest.raises(ConfigError, match="--debug takes no value, 'stats', 'inside' or 'inside,stats'"):
        normalize_mode(value)


def test_train_debug_traces_the_first_step_only(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    args = train_args("reference", corpus, tmp_path / "run", "--debug")
    args[args.index("--num_iterations=1")] = "--num_iterations=2"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("[DEBUG] Initializing GPT model") == 1
    assert "[DEBUG]   n_layer: 1" in out and "[DEBUG]   n_embd: 64" in out
    # two optimisation steps, each with one micro-batch: only the first step's forward is traced
    assert out.count("[DEBUG] Block.forward() called for layer 0  [reference:block]") == 1
    i = out.index("[DEBUG] Block.forward() called for layer 0")
    assert out[i:].splitlines()[1] == "[DEBUG]   Input shape: torch.Size([2, 32, 64])"
