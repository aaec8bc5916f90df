"""A learner's component that is wrong in each classic way, run the way a learner runs it: `nanogpt train --use`,
here resuming a good run so that we can also check that the trained model on disk is untouched by the failure.

Errors inside a component end in the diagnosis panel (exit 4); mistakes torch would never raise on (a weight kept as a
plain tensor, no parameters, an optimizer that leaves a parameter out) are refused with one line (exit 4 too); a NaN
output stops the run before its first step with the way to find it (exit 2)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from test_learner_support import REFERENCE_PARTS, _one_thread, make_set, registered  # noqa: F401

import nanogpt_impls.reference as ref
from nanogpt_cli.main import cli
from nanogpt_core.io.checkpoint import load_checkpoint
from nanogpt_impls.reference.optimizer import setup_optimizers as reference_setup

TEXT = "\n\n".join(" ".join(["the cat sat on the mat and the dog ran far away"] * 20) for _ in range(40))


class WrongShapeMLP(ref.MLP):
    """Returns (B, T, C/2): the error surfaces in the reference block's residual add."""

    def forward(self, x):
        return super().forward(x)[..., : x.size(-1) // 2]


class WrongDtypeMLP(ref.MLP):
    """Returns float64 while the model computes in float32."""

    def forward(self, x):
        return super().forward(x).double()


class WrongDeviceMLP(ref.MLP):
    """Returns its output on another device ('meta' stands in for a GPU on a CPU-only machine)."""

    def forward(self, x):
        return super().forward(x).to("meta")


class NaNMLP(ref.MLP):
    def forward(self, x):
        return super().forward(x) * float("nan")


class NoParameterMLP(nn.Module):
    """relu² of the input, with no c_fc / c_proj at all."""

    def __init__(self, config):
        super().__init__()

    def forward(self, x):
        return torch.relu(x).square()


class PlainTensorMLP(nn.Module):
    """Weights as plain tensors: computes, but is never trained, saved or moved to the GPU."""

    def __init__(self, config):
        super().__init__()
        self.w_fc = torch.randn(4 * config.n_embd, config.n_embd) / config.n_embd**0.5
        self.w_proj = torch.zeros(config.n_embd, 4 * config.n_embd)

    def forward(self, x):
        return torch.relu(x @ self.w_fc.T).square() @ self.w_proj.T


class UnregisteredBufferAttention(ref.CausalSelfAttention):
    """Keeps a constant as a plain attribute instead of register_buffer: it stays on the CPU when the model moves."""

    def __init__(self, config, layer_idx, *, norm, rotary):
        super().__init__(config, layer_idx, norm=norm, rotary=rotary)
        self.scale = torch.tensor(1.0)

    def forward(self, x, cos_sin, kv_cache):
        return super().forward(x, cos_sin, kv_cache) * self.scale


def optimizer_without_head(model, **kwargs):
    """Leaves lm_head out of every group: training runs, the head never learns."""
    adamw, muon = reference_setup(model, **kwargs)
    adamw.param_groups = [g for g in adamw.param_groups if not any(p is model.lm_head.weight for p in g["params"])]
    return [adamw, muon]


BAD = {  # set name -> (component, implementation)
    "bad-shape": ("mlp", WrongShapeMLP),
    "bad-dtype": ("mlp", WrongDtypeMLP),
    "bad-device": ("mlp", WrongDeviceMLP),
    "bad-nan": ("mlp", NaNMLP),
    "bad-noparams": ("mlp", NoParameterMLP),
    "bad-plain": ("mlp", PlainTensorMLP),
    "bad-buffer": ("attention", UnregisteredBufferAttention),
    "bad-optimizer": ("optimizer", optimizer_without_head),
}


@pytest.fixture(scope="module")
def bad_sets():
    plugins = [registered(make_set(name, dict(REFERENCE_PARTS, **{c: impl})), f"test-{name}")
               for name, (c, impl) in BAD.items()]
    for p in plugins:
        p.__enter__()
    yield
    for p in reversed(plugins):
        p.__exit__()


def train(*args: str):
    return CliRunner().invoke(cli, ["train", *args])


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A 2-step run of the reference model: the trained model each failure must leave as it was."""
    folder = tmp_path_factory.mktemp("components")
    (folder / "text.txt").write_text(TEXT, encoding="utf-8")
    run = folder / "run"
    result = train("--data", str(folder / "text.txt"), "--depth=1", "--n-head=2", "--n-kv-head=1", "--max-seq-len=32",
                   "--device-batch-size=2", "--total-batch-size=64", "--eval-tokens=64", "--num-iterations=2",
                   "--vocab-size=300", "--device=cpu", "--out", str(run))
    assert result.exit_code == 0, result.output
    return run


def checkpoint_digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run / "checkpoints").rglob("*")) if p.is_file()}


def resume_with(run: Path, use: str, *extra: str):
    """Continue the good run with one bad component; the run's checkpoints must come out byte-for-byte the same."""
    before = checkpoint_digest(run)
    result = train("--resume", str(run), "--use", use, "--num-iterations=4", *extra)
    assert checkpoint_digest(run) == before, "a failed run changed the checkpoints on disk"
    assert load_checkpoint(run).step == 2
    return result


@pytest.mark.parametrize("impl_set, error, hint", [
    ("bad-shape", "The size of tensor a (64) must match the size of tensor b (32)", "Shape mismatch in the MLP"),
    ("bad-dtype", "expected m1 and m2 to have the same dtype", "Mixed dtypes."),
    ("bad-device", "Tensor on device meta is not on the expected device cpu", "Tensors on different devices."),
], ids=["wrong-shape", "wrong-dtype", "wrong-device"])
def test_a_component_returning_the_wrong_tensor_gets_the_panel_naming_it(bad_sets, good_run, impl_set, error, hint):
    component = BAD[impl_set][0]
    result = resume_with(good_run, f"{impl_set}:{component}")
    assert result.exit_code == 4, result.output
    err = result.stderr
    assert "Error in " in err and error in err
    assert "suspects" in err and component in err.split("suspects", 1)[1].splitlines()[0]  # the swapped-in part
    assert hint in " ".join(err.replace("│", " ").split())  # the panel wraps lines inside its borders
    assert "run again" in err and "Traceback" not in err
    assert "(run again with --debug for the full traceback)" in err


def test_debug_shows_the_traceback_behind_the_panel(bad_sets, good_run):
    result = resume_with(good_run, "bad-shape:mlp", "--debug")
    assert result.exit_code == 4
    assert "Traceback" in result.stderr and "Error in " in result.stderr


def test_a_component_returning_nan_stops_before_the_first_step(bad_sets, good_run):
    result = resume_with(good_run, "bad-nan:mlp")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0] == ("Error: loss became nan at step 2; the very first loss is not finite, so a component's "
                        "forward produces NaN/Inf: run with --debug=stats to see the first one. Last good checkpoint: "
                        f"{good_run / 'checkpoints' / 'step_000002'}.")


@pytest.mark.parametrize("impl_set, message", [
    ("bad-noparams", "Error: mlp (bad-noparams) has no parameters, but its contract expects c_fc (4C, C), "
                     "c_proj (C, 4C), no biases; create them in __init__ (nn.Linear or nn.Parameter)"),
    ("bad-plain", "Error: mlp (bad-plain) keeps self.w_fc (PlainTensorMLP) as a plain tensor, so it is not trained, "
                  "not saved and not moved with the model; make a weight nn.Parameter(...)"),
    ("bad-buffer", "Error: attention (bad-buffer) keeps self.scale (UnregisteredBufferAttention) as a plain tensor, "
                   "so it is not trained, not saved and not moved with the model; make a weight nn.Parameter(...) or "
                   "register a constant with self.register_buffer('scale', ...)"),
], ids=["no-parameters", "plain-tensor-weights", "unregistered-buffer"])
def test_tensors_torch_would_silently_ignore_are_refused_at_build(bad_sets, good_run, impl_set, message):
    result = resume_with(good_run, f"{impl_set}:{BAD[impl_set][0]}")
    assert result.exit_code == 4, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


def test_an_optimizer_that_leaves_a_parameter_out_is_refused(bad_sets, good_run):
    result = resume_with(good_run, "bad-optimizer:optimizer")
    assert result.exit_code == 4, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: optimizer (bad-optimizer) leaves lm_head.weight out of every parameter group, so it would never "
        "train; put every trainable parameter in exactly one group (nanogpt check bad-optimizer:optimizer)."), lines


def test_the_library_refuses_the_same_mistakes(bad_sets, tiny_config):
    """build_model and check_optimizer_coverage directly: the CLI only reports what these raise."""
    from nanogpt_core import build_model
    from nanogpt_core.errors import ComponentError
    from nanogpt_core.model.assembly import check_optimizer_coverage

    for impl_set in ("bad-noparams", "bad-plain", "bad-buffer"):
        with pytest.raises(ComponentError, match=BAD[impl_set][0]):
            build_model(tiny_config, use=f"{impl_set}:{BAD[impl_set][0]}")
    model = build_model(tiny_config, use="bad-optimizer:optimizer")
    with pytest.raises(ComponentError, match="leaves lm_head.weight out of every parameter group"):
        check_optimizer_coverage(model, model.setup_optimizers())
    model = build_model(tiny_config)
    twice = [*model.setup_optimizers(), torch.optim.SGD([model.transformer.wte.weight], lr=0.1)]
    with pytest.raises(ComponentError, match="puts transformer.wte.weight in more than one parameter group"):
        check_optimizer_coverage(model, twice)
    check_optimizer_coverage(model, model.setup_optimizers())  # the reference: every parameter once
