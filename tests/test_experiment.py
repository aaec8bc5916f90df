"""`run_experiment` and `nanogpt experiment`: variants trained on the same data, batches and seeds; the table, the
JSON and Markdown results and the loss-curve plot; bad input refused before any training."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_variants_plugin import variants_plugin  # noqa: F401
from tiny_training import VOCAB_SIZE, tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_core.compare.experiment import (
    PLOT_FILE,
    RESULTS_JSON,
    RESULTS_MD,
    ExperimentResult,
    parse_variants,
    run_experiment,
)
from nanogpt_core.errors import ConfigError, UseSpecError
from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.registry import register_plugin, unregister_plugin

STEPS = 4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(corpus: Path, tokenizer: Path) -> dict:
    """tiny_training's settings (one layer, 64 wide, 64-token context) as run_experiment keywords."""
    settings = tiny_settings(corpus, tokenizer, Path("unused")).to_dict()
    keep = ("depth", "n_embd", "n_head", "n_kv_head", "max_seq_len", "device_batch_size", "total_batch_size",
            "eval_tokens", "data", "tokenizer", "device")
    return {k: settings[k] for k in keep}


def expected_params(n_embd: int, vocab: int, mlp_hidden: int, mlp_matrices: int) -> int:
    """One layer, one head: wte + lm_head (V x C each), q, k, v, proj (C x C each), the MLP's matrices."""
    return 2 * vocab * n_embd + 4 * n_embd * n_embd + mlp_matrices * n_embd * mlp_hidden


@pytest.fixture(scope="module")
def experiment(variants_plugin, tiny_corpus, tiny_tokenizer, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("experiment")
    messages: list[str] = []
    result = run_experiment({"base": "reference", "swiglu": "swiglu:mlp"}, STEPS, seeds=2, out=out,
                            progress=messages.append, **tiny(tiny_corpus, tiny_tokenizer))
    return result, out, messages


def test_every_variant_runs_once_per_seed_with_the_same_seeds_and_steps(experiment):
    result, out, messages = experiment
    assert [(r.variant, r.seed) for r in result.runs] == [("base", 0), ("base", 1), ("swiglu", 0), ("swiglu", 1)]
    assert [r.use for r in result.runs] == ["reference", "reference", "swiglu:mlp", "swiglu:mlp"]
    assert all(len(r.losses) == STEPS for r in result.runs)
    # the zeroed head makes every run's first loss exactly ln(vocab): same tokenizer, every variant, every seed
    assert all(abs(r.losses[0] - math.log(VOCAB_SIZE)) < 1e-4 for r in result.runs)
    # different seeds, different weights: the curves differ after the first step
    assert result.runs[0].losses[1:] != result.runs[1].losses[1:]
    assert sum(m.startswith("[") for m in messages) == 4
    for r in result.runs:
        assert Path(r.run_dir) == out / "runs" / r.variant / f"seed{r.seed}"
        config = json.loads((Path(r.run_dir) / "config.json").read_text())
        assert config["training"]["seed"] == r.seed and config["use_spec"] == r.use


def test_summaries_are_the_mean_and_sample_std_over_seeds(experiment):
    result, _, _ = experiment
    for summary in result.summaries:
        runs = [r for r in result.runs if r.variant == summary.name]
        bpbs = [r.val_bpb for r in runs]
        assert summary.val_bpb_mean == pytest.approx(sum(bpbs) / 2, rel=1e-12)
        assert summary.val_bpb_std == pytest.approx(abs(bpbs[0] - bpbs[1]) / math.sqrt(2), rel=1e-9)
        assert summary.mean_losses[2] == pytest.approx((runs[0].losses[2] + runs[1].losses[2]) / 2, rel=1e-12)
        assert summary.std_losses[2] == pytest.approx(statistics.stdev([r.losses[2] for r in runs]), rel=1e-9)
    assert result.delta_bpb("swiglu") == pytest.approx(result.summaries[1].val_bpb_mean
                                                       - result.summaries[0].val_bpb_mean)
    # parameters counted by hand: relu² has two C x 4C matrices, SwiGLU three C x 176 (8C/3 rounded up to 8s)
    assert result.summary("base").num_params == expected_params(64, VOCAB_SIZE, 256, 2) == 98_304
    assert result.summary("swiglu").num_params == expected_params(64, VOCAB_SIZE, 176, 3) == 99_328
    assert result.summary("base").peak_memory_bytes is None  # CPU: no CUDA allocator to ask
    assert all(s.tokens_per_sec_mean > 0 for s in result.summaries)


def test_results_json_markdown_and_plot_are_written(experiment):
    result, out, _ = experiment
    data = json.loads((out / RESULTS_JSON).read_text())
    assert data["variants"] == {"base": "reference", "swiglu": "swiglu:mlp"} and data["seeds"] == [0, 1]
    assert [s["name"] for s in data["summaries"]] == ["base", "swiglu"]
    assert data["summaries"][1]["val_bpb_mean"] == result.summaries[1].val_bpb_mean
    assert len(data["runs"]) == 4 and data["settings"]["num_iterations"] == STEPS
    md = (out / RESULTS_MD).read_text()
    base, swiglu = result.summaries
    assert f"| base | reference | {base.val_bpb_mean:.4f} ± {base.val_bpb_std:.4f} |  |" in md
    assert f"| swiglu | swiglu:mlp | {swiglu.val_bpb_mean:.4f} ± {swiglu.val_bpb_std:.4f} | " \
           f"{swiglu.val_bpb_mean - base.val_bpb_mean:+.4f} |" in md
    assert "98,304" in md and "99,328" in md
    assert ExperimentResult.load(out).to_dict() == result.to_dict()  # a notebook reads it back unchanged
    png = (out / PLOT_FILE).read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


def test_the_cli_prints_the_table_and_writes_the_results(variants_plugin, tiny_corpus, tiny_tokenizer,  # noqa: F811
                                                        tmp_path):
    from nanogpt_cli.main import cli

    out = tmp_path / "exp"
    args = ["experiment", "--variant", "base=reference", "--variant", "gelu", "--steps", "2", "--seeds", "1",
            "--out", str(out), "--depth", "1", "--max-seq-len", "64", "--device-batch-size", "2",
            "--total-batch-size", "128", "--eval-tokens", "512", "--data", str(tiny_corpus), "--tokenizer",
            str(tiny_tokenizer), "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / RESULTS_JSON).read_text())
    assert data["variants"] == {"base": "reference", "gelu": "gelu:mlp"} and data["steps"] == 2
    for s in data["summaries"]:
        assert s["name"] in result.output and f"{s['val_bpb_mean']:.4f} ± 0.0000" in result.output
    assert data["checks"]["gelu"] >= 15 and f"{data['checks']['gelu']} pass" in result.output  # --check is the default
    assert "checks" in result.output  # the column has its header
    assert f"| {data['checks']['gelu']} pass |" in (out / RESULTS_MD).read_text()
    assert (out / PLOT_FILE).is_file() and (out / RESULTS_MD).is_file()


@pytest.mark.parametrize("items, message", [
    (["base=reference", "base=swiglu"], "given twice"),
    (["my variant=reference"], "letters, digits"),
    (["=reference"], "incomplete"),
    (["base="], "incomplete"),
])
def test_bad_variant_flags_are_refused(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_variants(items)


def test_parse_variants_names_a_bare_set_after_itself():
    assert parse_variants(["base=reference", "swiglu", "all = swiglu,layernorm"]) == \
        {"base": "reference", "swiglu": "swiglu", "all": "swiglu,layernorm"}


def test_bad_input_fails_before_any_training(variants_plugin, tmp_path):  # noqa: F811
    with pytest.raises(UseSpecError, match="unknown implementation set 'nope'"):
        run_experiment({"base": "reference", "x": "nope:mlp"}, 2, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="--steps"):
        run_experiment({"base": "reference"}, 0, out=tmp_path / "b")
    with pytest.raises(ConfigError, match="--seeds"):
        run_experiment({"base": "reference"}, 2, seeds=0, out=tmp_path / "c")
    with pytest.raises(ConfigError, match="sets 'use' itself"):
        run_experiment({"base": "reference"}, 2, out=tmp_path / "d", use="swiglu")
    with pytest.raises(ConfigError, match="unknown training setting"):
        run_experiment({"base": "reference"}, 2, out=tmp_path / "e", depht=2)
    (tmp_path / "f" / "runs" / "base").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds an experiment"):
        run_experiment({"base": "reference"}, 2, out=tmp_path / "f")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="not valid JSON|missing"):
        ExperimentResult.load(tmp_path)


def test_check_refuses_a_variant_that_breaks_the_contract_before_training(variants_plugin, tmp_path):  # noqa: F811
    from test_variants_plugin import _BrokenPlugin

    plugin = _BrokenPlugin()
    register_plugin(plugin, name="broken-design")
    try:
        with pytest.raises(ConfigError, match=r"leaky: attention causal: causal leakage.*--no-check"):
            run_experiment({"base": "reference", "leaky": "leaky-window:attention"}, 2, out=tmp_path / "x",
                           check=True)
    finally:
        unregister_plugin(plugin)
    assert not (tmp_path / "x").exists()


class _DivergingMLP(torch.nn.Module):
    """The reference MLP's shapes, but from the third training forward on it outputs NaN (a diverging design)."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = torch.nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = torch.nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.calls = 0

    def forward(self, x):
        self.calls += self.training
        y = self.c_proj(torch.relu(self.c_fc(x)).square())
        return y * float("nan") if self.calls > 2 else y


class _DivergingPlugin:
    @hookimpl
    def register_components(self, register):
        register("diverging", "mlp", _DivergingMLP)


def test_a_diverging_variant_is_a_result_not_a_crash(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    plugin = _DivergingPlugin()
    register_plugin(plugin, name="diverging")
    try:
        result = run_experiment({"base": "reference", "nan": "diverging:mlp"}, STEPS, seeds=1, out=tmp_path,
                                **tiny(tiny_corpus, tiny_tokenizer))
    finally:
        unregister_plugin(plugin)
    base, nan = result.runs
    assert base.diverged is None and len(base.losses) == STEPS and base.val_bpb is not None
    # two micro-batches a step: forwards 3 and 4 are step 1's, so step 0 is the last finite loss
    assert "loss became nan at step 1" in nan.diverged
    assert len(nan.losses) == 2 and math.isfinite(nan.losses[0]) and math.isnan(nan.losses[1])
    assert nan.val_bpb is None and nan.first_val_bpb is not None and nan.num_params == base.num_params
    summary = result.summary("nan")
    assert summary.diverged == 1 and summary.val_bpb_mean is None and summary.mean_losses == nan.losses[:1]
    md = (tmp_path / RESULTS_MD).read_text()
    assert "| nan | diverging:mlp | n/a (1/1 diverged) |" in md and "nan seed 0 diverged: loss became nan" in md
    data = json.loads((tmp_path / RESULTS_JSON).read_text())  # strict JSON: no bare NaN
    assert data["runs"][1]["losses"][-1] == "nan"
    assert math.isnan(ExperimentResult.load(tmp_path).runs[1].losses[-1])
    assert (tmp_path / PLOT_FILE).is_file()
    assert "loss became nan" in (Path(nan.run_dir) / "train.log").read_text()


def test_the_cli_reports_a_bad_variant_in_one_line(variants_plugin):  # noqa: F811
    from nanogpt_cli.main import cli

    result = CliRunner().invoke(cli, ["experiment", "--variant", "base=reference", "--variant", "x=nope:mlp"])
    assert result.exit_code == 2
    assert "Error: unknown implementation set 'nope'" in result.output
    assert "Traceback" not in result.output
