"""The example plugin package (examples/nanogpt-variants) seen from nanogpt: its entry point makes its sets appear in
`nanogpt components`, each variant passes the checks that apply to a different design, and LayerNorm's extra
parameters train, checkpoint and load.

These tests do not need the package installed: the discovery test builds a dist-info on sys.path in a fresh
interpreter, and the others register the package's plugin module directly (or use the installed one).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_training import tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_core.compare import PINNED_CHECKS, compare, design_checks
from nanogpt_core.io.checkpoint import CheckpointError, latest_checkpoint, load_model
from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.registry import load_plugins, pm, register_plugin, registrations, unregister_plugin

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "examples" / "nanogpt-variants"
VARIANT_SETS = {"swiglu": "mlp", "gelu": "mlp", "layernorm": "norm", "window": "attention", "tied": "gpt"}


def import_variants():
    """The package's plugin module: the installed one, else imported from its source folder."""
    if str(PACKAGE_DIR) not in sys.path:
        try:
            import nanogpt_variants  # noqa: F401  (installed: pip install -e examples/nanogpt-variants)
        except ImportError:
            sys.path.insert(0, str(PACKAGE_DIR))
    import nanogpt_variants

    return nanogpt_variants


@pytest.fixture(scope="module")
def variants_plugin() -> Iterator[object]:
    """The variants' sets registered for these tests (left alone if the installed entry point registered them)."""
    module = import_variants()
    load_plugins()
    ours = not pm.is_registered(module)
    if ours:
        register_plugin(module, name="variants")
    yield module
    if ours:
        unregister_plugin(module)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pyproject_entry_points() -> tuple[dict[str, str], dict[str, str]]:
    """(name and version, the `nanogpt` entry points) from the package's pyproject.toml (no tomllib on 3.10)."""
    text = (PACKAGE_DIR / "pyproject.toml").read_text(encoding="utf-8")

    def section(header: str) -> dict[str, str]:
        body = re.search(rf"^\[{re.escape(header)}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S).group(1)
        return dict(re.findall(r'^([\w.-]+)\s*=\s*"([^"]*)"', body, re.M))

    return section("project"), section("project.entry-points.nanogpt")


def test_the_entry_point_makes_the_variants_appear_in_nanogpt_components(tmp_path):
    """A dist-info built from the package's own pyproject entry point, discovered by a fresh `nanogpt components`."""
    project, entry_points = pyproject_entry_points()
    assert entry_points == {"variants": "nanogpt_variants"}
    dist = tmp_path / f"nanogpt_variants-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist / "entry_points.txt").write_text("[nanogpt]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    out = subprocess.run([sys.executable, "-m", "nanogpt_cli", "components", "--json"], capture_output=True,
                         text=True, env={"PYTHONPATH": f"{tmp_path}:{PACKAGE_DIR}", "PATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = {(impl["set"], row["component"]): impl["plugin"] for row in json.loads(out.stdout)
              for impl in row["implementations"]}
    for impl_set, component in VARIANT_SETS.items():
        assert listed.get((impl_set, component)) == "variants", (impl_set, component)
    assert listed[("reference", "mlp")] == "nanogpt_impls.reference"


@pytest.mark.parametrize("use", ["swiglu,layernorm,window", "gelu"])
def test_every_variant_passes_the_checks_that_apply_to_a_different_design(variants_plugin, use):
    results = design_checks(use)
    failed = [(r.component, r.name, r.detail) for r in results if not r.passed]
    assert not failed
    names = {(r.component, r.name) for r in results}
    swapped = [VARIANT_SETS[s] for s in use.split(",")]
    for component in swapped:  # the component's own contract checks ran, minus the pinned ones
        assert (component, "gradients") in names and (component, "model causal") in names
        assert not {(component, pinned) for pinned in PINNED_CHECKS[component]} & names
    # and the whole candidate model: causality, KV cache, every parameter in exactly one optimizer group
    for check in ("model causal", "model KV cache past the training length", "every parameter in one group",
                  "one step moves every parameter", "every parameter set"):
        assert ("model", check) in names


class _LeakyWindowAttention(torch.nn.Module):
    """A broken design: the window attention of the plugin, but not causal (sees the future)."""

    def __init__(self, config, layer_idx, *, norm, rotary):
        super().__init__()
        base = import_variants().SlidingWindowAttention(config, layer_idx, norm=norm, rotary=rotary)
        self.c_q, self.c_k, self.c_v, self.c_proj = base.c_q, base.c_k, base.c_v, base.c_proj
        self.n_head, self.n_kv_head, self.head_dim = base.n_head, base.n_kv_head, base.head_dim

    def forward(self, x, cos_sin, kv_cache):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.n_head != self.n_kv_head)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class _BrokenPlugin:
    @hookimpl
    def register_components(self, register):
        register("leaky-window", "attention", _LeakyWindowAttention)


def test_design_checks_catch_a_design_that_breaks_the_contract(variants_plugin):
    plugin = _BrokenPlugin()
    register_plugin(plugin, name="broken-design")
    try:
        failed = {(r.component, r.name): r.diagnosis for r in design_checks("leaky-window:attention")
                  if not r.passed}
    finally:
        unregister_plugin(plugin)
    assert failed[("attention", "causal")] == "causal leakage"
    assert failed[("model", "model causal")] == "causal leakage"
    assert ("leaky-window", "attention") not in registrations()


def test_design_report_is_compare_without_an_equality_verdict(variants_plugin):
    report = compare("swiglu:mlp", steps=4, device="cpu", data="synthetic", batch_size=2, mode="design")
    assert report.mode == "design" and report.use["mlp"] == "swiglu"
    verdict = report.verdict("mlp")
    assert verdict.status == "pass" and verdict.isolation is None
    assert not {c.name for c in verdict.checks} & set(PINNED_CHECKS["mlp"])
    assert {p.name for p in report.probes} >= {"model causal", "every parameter in one group"}
    t = report.training
    assert t.passed is None and len(t.candidate.losses) == len(t.reference.losses) == 4
    assert not t.candidate.shared_weights  # SwiGLU's matrices differ: it starts from its own init (same seed)
    assert t.candidate.losses[0] == pytest.approx(t.reference.losses[0], abs=1e-4)  # both ln(vocab): zeroed heads
    assert report.passed and report.exit_code == 0 and json.dumps(report.to_dict())


def test_design_report_fails_a_design_that_breaks_the_contract(variants_plugin):
    plugin = _BrokenPlugin()
    register_plugin(plugin, name="broken-design")
    try:
        report = compare("leaky-window:attention", steps=0, device="cpu", mode="design")
    finally:
        unregister_plugin(plugin)
    assert report.verdict("attention").status == "fail"
    assert report.verdict("attention").diagnosis == "causal leakage"
    assert "attention" in report.failed and "probe:model causal" in report.failed and report.exit_code == 1


def test_layernorm_variant_trains_checkpoints_and_loads(variants_plugin, tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    from nanogpt_core.train.loop import train

    result = train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", use="layernorm", num_iterations=6),
                   stream=open(tmp_path / "log.txt", "w"), progress_bar=False)  # noqa: SIM115
    assert result.losses[-1] < result.losses[0]
    saved = load_file(str(latest_checkpoint(result.run_dir) / "model.safetensors"))
    norm_keys = [k for k in saved if k.endswith("norm.weight") or k.endswith("norm.bias")]
    assert len(norm_keys) == 2 * (2 + 4)  # emb + final, and per layer two sub-layer norms + q_norm + k_norm
    # trained: the gains and biases moved from their init (1 and 0) ...
    assert any(not torch.equal(saved[k], torch.ones_like(saved[k])) for k in norm_keys if k.endswith("weight"))
    assert any(saved[k].abs().max() > 0 for k in norm_keys if k.endswith("bias"))
    # ... and load back exactly, with the implementation recorded in the checkpoint
    model, _, meta = load_model(result.run_dir, device="cpu")
    assert meta["use"]["norm"] == "layernorm"
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    # a weightless norm cannot silently drop them
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(result.run_dir, use="reference", device="cpu")


def test_tied_variant_replaces_the_top_level_and_checkpoints_its_one_matrix(variants_plugin, tiny_corpus,  # noqa: F811
                                                                            tiny_tokenizer, tmp_path):  # noqa: F811
    """A plugin's own top level, end to end: it trains through the loop, its shared matrix is saved under both names
    (safetensors refuses one tensor under two names; the writer gives each its own copy), and it loads back tied,
    with the logits and the samples it had before the save."""
    from nanogpt_core import GPTConfig, build_model
    from nanogpt_core.data.tokenizer import Tokenizer
    from nanogpt_core.io.checkpoint import save_checkpoint
    from nanogpt_core.train.loop import train

    result = train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", use="tied", num_iterations=6),
                   stream=open(tmp_path / "log.txt", "w"), progress_bar=False)  # noqa: SIM115
    assert result.losses[-1] < result.losses[0]
    loaded, _, meta = load_model(result.run_dir, device="cpu")
    assert [meta["use"][c] for c in ("gpt", "init", "optimizer")] == ["tied", "tied", "reference"]
    assert loaded.lm_head.weight is loaded.transformer.wte.weight

    tokenizer = Tokenizer.load(tiny_tokenizer)
    model = build_model(GPTConfig(sequence_len=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_kv_head=1,
                                  n_embd=32), use="tied")
    model.init_weights()
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0, 0.5)  # logits far from uniform, so samples vary
    save_checkpoint(tmp_path / "saved", 1, model, model.setup_optimizers(), tokenizer)
    again, _, _ = load_model(tmp_path / "saved", device="cpu")
    model.eval()
    assert again.lm_head.weight is again.transformer.wte.weight
    idx = torch.randint(0, tokenizer.vocab_size, (1, 20))
    assert torch.equal(again(idx), model(idx))
    for temperature, seed in ((0.0, 0), (1.0, 4)):
        assert list(again.generate([1, 2, 3], 16, temperature=temperature, seed=seed)) == \
            list(model.generate([1, 2, 3], 16, temperature=temperature, seed=seed))
