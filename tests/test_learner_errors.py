"""Friendly errors: a skeleton's TODO, or a bug inside a component, becomes a short panel naming the component,
the method, the contract and a hint — with the exit code 3 (TODO) or 4 (bug), and no traceback without --debug."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from test_learner_support import REFERENCE_PARTS, _one_thread, make_set, registered, skel  # noqa: F401

import nanogpt_impls.reference as ref
from nanogpt_cli.main import cli
from nanogpt_core.learn.diagnose import EXIT_COMPONENT_BUG, EXIT_TODO, classify, diagnose
from nanogpt_core.learn.status import smoke_config
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.contracts import BY_NAME

TINY_TEXT = "\n\n".join(" ".join(["the cat sat on the mat and the dog ran far away"] * 20) for _ in range(40))


class WrongKVHeads(ref.CausalSelfAttention):
    """A classic GQA bug: k is viewed with n_head heads, but c_k only makes n_kv_head of them."""

    def forward(self, x, cos_sin, kv_cache):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)  # bug: n_kv_head
        return q.sum() + k.sum()


class ReturnsNothing(ref.MLP):
    def forward(self, x):
        self.c_proj(torch.relu(self.c_fc(x)).square())  # bug: no return


class HalfWidthMLP(ref.MLP):
    """Returns (B, T, C/2): the error surfaces in the reference block's residual add, not here."""

    def forward(self, x):
        return super().forward(x)[..., : x.size(-1) // 2]


class NoCastRotary(ref.Rotary):
    """Forgets `.to(x.dtype)`: q and k come back in the table's bfloat16 while v stays float32."""

    @staticmethod
    def apply(x, cos, sin):
        d = x.shape[3] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3).bfloat16()


@pytest.fixture(scope="module")
def buggy():
    parts = dict(REFERENCE_PARTS, attention=WrongKVHeads, mlp=ReturnsNothing)
    with registered(make_set("buggy", parts), "test-buggy"):
        with registered(make_set("half", dict(REFERENCE_PARTS, mlp=HalfWidthMLP, rotary=NoCastRotary)), "test-half"):
            yield "buggy"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT)
    return path


def train_args(use: str, corpus, out, *extra: str) -> list[str]:
    return ["train", "--use", use, "--data", str(corpus), "--depth=1", "--n_head=2", "--n_kv_head=1",
            "--max_seq_len=32", "--device_batch_size=2", "--eval_tokens=64", "--total_batch_size=64",
            "--num_iterations=1", "--vocab_size=300", "--sample_every=-1", "--out", str(out), *extra]


def run(args: list[str]):
    return CliRunner().invoke(cli, args)


# --- the diagnosis (pure) ------------------------------------------------------------------------------------------


def test_todo_diagnosis_names_component_method_and_reference(skel):  # noqa: F811
    with pytest.raises(NotImplementedError) as info:
        build_model(smoke_config(), use=f"{skel}:attention")
    d = diagnose(info.value, {"attention": skel})
    assert (d.kind, d.component, d.impl_set, d.method) == ("todo", "attention", skel, "__init__")
    assert d.reference_file == "impls/reference/attention.py"
    assert d.signature == BY_NAME["attention"].signature and d.shapes == BY_NAME["attention"].shapes
    assert d.file.endswith("attention.py") and d.qualname == "CausalSelfAttention.__init__"
    assert d.exit_code == EXIT_TODO == 3


def test_shape_bug_diagnosis_names_the_method_the_tensors_and_the_hint(buggy):
    model = build_model(smoke_config(), use="buggy:attention")
    model.init_weights()
    with pytest.raises(RuntimeError) as info:
        model(torch.zeros(1, 5, dtype=torch.long))
    d = diagnose(info.value, model.use)
    assert (d.kind, d.component, d.impl_set, d.method) == ("shape", "attention", "buggy", "forward")
    assert d.qualname == "WrongKVHeads.forward" and d.exit_code == EXIT_COMPONENT_BUG == 4
    # the tensors the failing frame held, with shapes from this very call: x is (B=1, T=5, C=32)
    assert "x: (1, 5, 32) float32 cpu" in d.actual
    assert "q: (1, 5, 2, 16) float32 cpu" in d.actual
    assert "head_dim = n_embd // n_head" in d.hint and "n_kv_head" in d.hint
    assert d.shapes == BY_NAME["attention"].shapes


def test_missing_return_is_diagnosed(buggy):
    model = build_model(smoke_config(), use="buggy:mlp")
    model.init_weights()
    with pytest.raises(TypeError) as info:
        model(torch.zeros(1, 5, dtype=torch.long))
    d = diagnose(info.value, model.use)
    # the TypeError is raised in the reference block (None + tensor): the swapped-in mlp is the suspect
    assert d.kind == "none-returned" and "forget the `return`" in d.hint
    assert d.suspects == ["mlp"]


def test_error_surfacing_in_reference_code_names_the_swapped_component(buggy):
    model = build_model(smoke_config(), use="half:mlp")
    model.init_weights()
    with pytest.raises(RuntimeError) as info:
        model(torch.zeros(1, 5, dtype=torch.long))
    d = diagnose(info.value, model.use)
    assert (d.component, d.impl_set, d.method, d.kind) == ("block", "reference", "forward", "shape")
    assert d.suspects == ["mlp"] and "your mlp returned" in d.hint


def test_dtype_leak_from_rotary_is_diagnosed_with_the_seeds_hint(buggy):
    model = build_model(smoke_config(), use="half:rotary")
    model.init_weights()
    with pytest.raises(RuntimeError) as info:
        model(torch.zeros(1, 5, dtype=torch.long))
    d = diagnose(info.value, model.use)
    assert d.kind == "dtype" and d.component == "attention" and d.impl_set == "reference"
    assert d.suspects == ["rotary"] and ".to(x.dtype)" in d.hint
    assert "q: (1, 2, 5, 16) bfloat16 cpu" in d.actual and "v: (1, 1, 5, 16) float32 cpu" in d.actual


def test_an_error_outside_components_is_not_diagnosed():
    try:
        raise ValueError("nothing to do with a component")
    except ValueError as exc:
        assert diagnose(exc) is None


@pytest.mark.parametrize("message, kind", [
    ("Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!", "device"),
    ("mat1 and mat2 shapes cannot be multiplied (5x32 and 64x32)", "shape"),
    ("The size of tensor a (32) must match the size of tensor b (16) at non-singleton dimension 2", "shape"),
    ("expected mat1 and mat2 to have the same dtype, but got: float != c10::BFloat16", "dtype"),
    ("loss is nan", "nonfinite"),
    ("something else entirely", "error"),
])
def test_classify_maps_torch_messages_to_the_seeds_common_issues(message, kind):
    assert classify(RuntimeError(message)) == kind


# --- the CLI panel ----------------------------------------------------------------------------------------------


def test_train_with_a_todo_prints_the_panel_and_exits_3(skel, corpus, tmp_path):  # noqa: F811
    result = run(train_args(f"{skel}:attention", corpus, tmp_path / "run"))
    assert result.exit_code == 3, result.output
    out = result.output
    assert "Not implemented yet: attention.__init__ (skel)" in out
    assert "impls/reference/attention.py" in out
    assert f"nanogpt train --use {skel}:attention" in out  # the command to run again
    assert f"nanogpt check {skel}:attention" in out
    assert "Traceback" not in out


def test_debug_adds_the_traceback_and_the_trace(skel, corpus, tmp_path):  # noqa: F811
    result = run(train_args(f"{skel}:mlp", corpus, tmp_path / "run", "--debug"))
    assert result.exit_code == 3
    assert "Traceback" in result.output and "Not implemented yet: mlp.__init__" in result.output
    assert "[DEBUG] Initializing GPT model" in result.output  # the banner comes before the TODO, as in the seed
    assert result.output.index("[DEBUG] Initializing GPT model") < result.output.index("Not implemented yet")


def test_train_with_a_shape_bug_prints_the_panel_and_exits_4(buggy, corpus, tmp_path):
    result = run(train_args("buggy:attention", corpus, tmp_path / "run"))
    assert result.exit_code == 4, result.output
    out = result.output
    assert "Error in attention.forward (buggy)" in out
    assert "is invalid for input of size" in out  # torch's own message
    assert "head_dim = n_embd // n_head" in out
    assert "Traceback" not in out and "--debug for the full traceback" in out


def test_a_non_component_error_keeps_the_one_line_report(tmp_path):
    result = run(["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert "╭" not in result.output


class NoKeepdimNorm(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1) + 1e-6)  # bug: no keepdim


def test_a_shape_error_in_the_norm_gets_the_norms_hint_not_attentions():
    """A missing keepdim used to get attention's "check head_dim = n_embd // n_head"."""
    with registered(make_set("nokeep", {"norm": NoKeepdimNorm}), "test-nokeep"):
        model = build_model(smoke_config(), use="nokeep:norm")
        with pytest.raises(RuntimeError) as info:
            model(torch.randint(0, 64, (2, 16)))
        d = diagnose(info.value, model.use)
    assert d.component == "norm" and d.kind == "shape"
    assert "keepdim=True" in d.hint and "head_dim" not in d.hint
