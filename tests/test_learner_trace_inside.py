"""`--debug=inside`: inside the components a run swaps in, what every statement binds (shape, dtype, with stats the
range), the first time each method runs, from Python's tracing hook; `--debug-layer N` limits any trace to layer N.
On a pristine skeleton, a half-written file and a finished one."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch
from click.testing import CliRunner
from learner_files import FINISHED_ATTENTION, finished_set, half_written
from test_learner_errors import TINY_TEXT, train_args
from test_learner_support import REFERENCE_PARTS, _one_thread, make_set, registered, skel  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.component_files import load_set_from_dir
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.trace import tracing
from nanogpt_core.model.trace_lines import LineTracer

CFG = GPTConfig(sequence_len=16, vocab_size=64, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    with registered(finished_set(tmp_path_factory.mktemp("finished")), "test-finished"):
        yield "finished"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(TINY_TEXT)
    return path


def line_of(text: str, code: str) -> int:
    """The 1-based line number of `code` in a file's text (independent of the tracer's statement map)."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.strip() == code)


def inside_lines(output: str, file: str = "attention.py") -> list[str]:
    return [line.split("[DEBUG]", 1)[1].strip() for line in output.splitlines() if f" {file}:" in line]


def test_the_trace_of_a_finished_attention_lists_q_k_v_and_the_output_in_the_order_they_run(finished, corpus,
                                                                                            tmp_path):
    result = CliRunner().invoke(cli, train_args(f"{finished}:attention", corpus, tmp_path / "run", "--debug=inside"))
    assert result.exit_code == 0, result.output[-3000:]
    # the sizes of train_args: batch 2, context 32, depth 1 -> width 64, 2 query heads of 32, 1 KV head
    B, T, C, H, Hkv = 2, 32, 64, 2, 1
    D = C // H
    expected = [
        ("q = self.c_q(x).view(B, T, self.n_head, self.head_dim)", f"q ({B}, {T}, {H}, {D}) float32"),
        ("k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)", f"k ({B}, {T}, {Hkv}, {D}) float32"),
        ("v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)", f"v ({B}, {T}, {Hkv}, {D}) float32"),
        ("q = self.q_norm(self.rotary.apply(q, cos, sin)).transpose(1, 2)", f"q ({B}, {H}, {T}, {D}) float32"),
        ("k = self.k_norm(self.rotary.apply(k, cos, sin)).transpose(1, 2)", f"k ({B}, {Hkv}, {T}, {D}) float32"),
        ("v = v.transpose(1, 2)", f"v ({B}, {Hkv}, {T}, {D}) float32"),
        ("out = F.scaled_dot_product_attention(q, k, v, is_causal=Tq == Tk, enable_gqa=grouped)",
         f"out ({B}, {H}, {T}, {D}) float32"),
        ("out = out.transpose(1, 2).contiguous().view(B, T, C)", f"out ({B}, {T}, {C}) float32"),
        ("return self.c_proj(out)", f"returns ({B}, {T}, {C}) float32"),
    ]
    lines = inside_lines(result.output)
    positions = []
    for code, shape in expected:
        want = f"attention.py:{line_of(FINISHED_ATTENTION, code)}  {code}  -> {shape}"
        assert want in lines, f"{want!r} not in the trace:\n" + "\n".join(lines)
        positions.append(lines.index(want))
    assert positions == sorted(positions)
    assert f"B={B}, T={T}, C={C}" in lines[lines.index(next(x for x in lines if "B, T, C = x.shape" in x))]
    # first time only: one layer's forward (and one __init__), though the model runs every step
    assert sum("def forward(self" in x for x in lines) == 1 and sum("def __init__(self" in x for x in lines) == 1
    assert "self.c_q Linear(64 -> 64)" in " ".join(lines) and "self.c_k Linear(64 -> 32)" in " ".join(lines)
    assert not inside_lines(result.output, "rotary.py")  # the reference's code is not followed
    assert "range [" not in result.output  # ranges only with stats


def test_a_pristine_skeleton_shows_the_raise_and_its_todo(skel, corpus, tmp_path):  # noqa: F811
    result = CliRunner().invoke(cli, train_args(f"{skel}:attention", corpus, tmp_path / "run", "--debug=inside"))
    assert result.exit_code == 3, result.output[-3000:]
    lines = inside_lines(result.output)
    assert lines[0].startswith("attention.py:") and "def __init__(self, config, layer_idx: int, *, norm, rotary)" \
        in lines[0] and "layer_idx=0" in lines[0]
    assert lines[-1].startswith("attention.py:") and "raise NotImplementedError(" in lines[-1]
    assert "-> !! NotImplementedError: TODO: Implement attention.__init__" in lines[-1]
    assert "Not implemented yet: attention.__init__" in result.output  # the panel still follows


def test_a_half_written_file_traces_what_is_written_then_stops_at_the_todo(corpus, tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "attention.py").write_text(half_written("attention"))
    with registered(load_set_from_dir("half", folder, ["attention"]), "test-half"):
        result = CliRunner().invoke(cli, train_args("half:attention", corpus, tmp_path / "run", "--debug=inside"))
    assert result.exit_code == 3, result.output[-3000:]
    text = " ".join(inside_lines(result.output))
    assert "self.head_dim = config.n_embd // config.n_head  -> self.head_dim=32" in text
    assert "self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)  -> self.c_v " \
           "Linear(64 -> 32)" in text
    assert "-> !! NotImplementedError: TODO: Implement attention.forward" in text


def test_a_shape_bug_is_the_last_line_traced(corpus, tmp_path):
    folder = tmp_path / "bug"
    folder.mkdir()
    buggy = FINISHED_ATTENTION.replace("k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)",
                                       "k = self.c_k(x).view(B, T, self.n_head, self.head_dim)")
    (folder / "attention.py").write_text(buggy)
    with registered(load_set_from_dir("bug", folder, ["attention"]), "test-bug"):
        result = CliRunner().invoke(cli, train_args("bug:attention", corpus, tmp_path / "run", "--debug=inside"))
    assert result.exit_code == 4, result.output[-3000:]
    lines = inside_lines(result.output)
    bad = next(i for i, x in enumerate(lines) if "k = self.c_k(x).view(B, T, self.n_head" in x)
    assert "-> !! RuntimeError: shape '[2, 32, 2, 32]' is invalid for input of size 2048" in lines[bad]
    assert "q (2, 32, 2, 32) float32" in lines[bad - 1]  # the line before ran, with its shape
    assert len(lines) == bad + 1  # nothing after the line that raised


def test_stats_adds_each_tensors_range(finished):
    model = build_model(CFG, use=f"{finished}:attention")
    model.init_weights()
    x = torch.randint(0, CFG.vocab_size, (1, CFG.sequence_len))
    seen = {}
    attn = model.transformer.h[0].attn

    def keep_input(module, args):
        seen.setdefault("x", args[0].detach().clone())

    hook = attn.register_forward_pre_hook(keep_input)
    out = io.StringIO()
    with tracing(model, "inside,stats", file=out):
        model(x, x)
    hook.remove()
    q = attn.c_q(seen["x"]).view(1, CFG.sequence_len, CFG.n_head, CFG.head_dim)  # the same line, by hand
    line = next(x for x in out.getvalue().splitlines() if "q = self.c_q(x)" in x)
    assert line.endswith(f"-> q (1, 16, 2, 16) float32 range [{q.min().item():.4g}, {q.max().item():.4g}]"), line


def test_debug_layer_keeps_one_layers_lines_and_the_model_level_ones():
    model = build_model(CFG)
    model.init_weights()
    x = torch.randint(0, CFG.vocab_size, (1, CFG.sequence_len))
    out = io.StringIO()
    with tracing(model, "flow", file=out, layer=1):
        model(x, x)
    text = out.getvalue()
    assert "for layer 1" in text and "for layer 0" not in text and "transformer.h.0." not in text
    assert "RMSNorm.forward() called (emb_norm)" in text and "RMSNorm.forward() called (final_norm)" in text
    assert text.count("Rotary.apply() called") == 2  # q and k of layer 1 only
    assert text.count("[DEBUG] GPT.forward() called") == 1


def test_debug_layer_picks_the_layer_the_inside_trace_follows(finished, capsys):
    build_model(CFG, use=f"{finished}:attention", trace="inside", trace_layer=1)
    text = capsys.readouterr().out
    assert "self.layer_idx=1" in text and "self.layer_idx=0" not in text
    assert [line for line in text.splitlines() if "__init__() called" in line and "layer" in line] == [
        "[DEBUG] CausalSelfAttention.__init__() called for layer 1  [finished:attention]",
        "[DEBUG] Block.__init__() called for layer 1  [reference:block]"]
    assert text.count("MLP.__init__() called") == 1  # built without a layer index, between its layer's two


def test_debug_layer_alone_implies_the_trace_and_tracebacks(corpus, tmp_path):
    result = CliRunner().invoke(cli, train_args("reference", corpus, tmp_path / "run", "--debug-layer", "0"))
    assert result.exit_code == 0, result.output[-3000:]
    assert "[DEBUG] Block.forward() called for layer 0  [reference:block]" in result.output


def test_loops_show_their_first_pass_and_generators_stop_at_the_first_yield():
    with registered(make_set("mine", REFERENCE_PARTS), "test-mine"):
        model = build_model(CFG, use="mine:init,mine:generate")
        out = io.StringIO()
        with tracing(model, "inside", file=out):
            model.init_weights()
            tokens = list(model.generate([1, 2, 3], 4, temperature=0.0))
    init = inside_lines(out.getvalue(), "init.py")
    assert sum("for module in model.modules():" in x for x in init) == 1
    note = next(x for x in out.getvalue().splitlines() if "loops ran" in x)
    n_modules = len(list(model.modules()))
    assert int(re.search(r"loops ran (\d+) more", note).group(1)) >= 2 * (n_modules - 1)  # >= 2 lines a pass
    generate = inside_lines(out.getvalue(), "generate.py")
    assert sum(" yields " in x for x in generate) == 1 and f"yields {tokens[0]}" in generate[-1]
    assert sum("def sample_next_token" in x for x in generate) == 1  # a helper in the same file is followed


def test_the_line_tracer_hands_other_frames_to_a_tracer_already_installed(finished):
    model = build_model(CFG, use=f"{finished}:attention")
    model.init_weights()
    seen = []

    def recorder(frame, event, arg):
        if frame.f_code.co_name == "marker":
            seen.append(event)
        return None

    def marker():
        return 1

    previous = sys.gettrace()
    sys.settrace(recorder)
    try:
        with tracing(model, "inside", file=io.StringIO()):
            marker()
            model(torch.zeros(1, 4, dtype=torch.long))
        assert sys.gettrace() is recorder
    finally:
        sys.settrace(previous)
    assert seen == ["call"]


def test_a_run_without_own_components_says_what_inside_follows(capsys):
    build_model(CFG, trace="inside")
    assert "--debug=inside follows the code of the components you swap in" in capsys.readouterr().out


def test_line_tracer_follows_only_the_given_files(tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text("def double(x):\n    y = x * 2\n    return y\n")
    namespace: dict = {}
    exec(compile(mine.read_text(), str(mine), "exec"), namespace)
    said: list[str] = []
    with LineTracer({str(mine)}, said.append):
        namespace["double"](torch.ones(3))
        namespace["double"](torch.ones(5))  # the second call is not traced
        torch.ones(2).sum()
    assert [s.strip() for s in said] == ["mine.py:1  def double(x):  <- x (3,) float32",
                                         "mine.py:2  y = x * 2  -> y (3,) float32",
                                         "mine.py:3  return y  -> returns (3,) float32"]


def test_the_finished_attention_of_these_tests_is_finished(finished):
    """The learner's attention the tests trace, show and diff is a correct one: every contract check (the KV-cache
    decode among them) and the reference on the same weights agree."""
    from nanogpt_core.checks import matches_reference, run_checks

    results = [r for r in run_checks(finished, ["attention"]) if r.passed is not None]
    assert results and all(r.passed for r in results), [(r.name, r.diagnosis) for r in results if not r.passed]
    assert matches_reference(finished, "attention").passed
