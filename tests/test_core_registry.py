"""The registry, the use spec, injection of parts, and entry-point plugin discovery."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt_core import build_model, hookimpl
from nanogpt_core.errors import RegistryError, UseSpecError
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import register_plugin, registrations, unregister_plugin
from nanogpt_core.model.use_spec import format_use, parse_use, resolve_use


class CountingNorm(nn.Module):
    """An RMSNorm that counts its calls and remembers the sizes it normalised."""

    calls: list[int] = []

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        CountingNorm.calls.append(x.size(-1))
        return F.rms_norm(x, (x.size(-1),))


class RotaryProbe:
    """The reference rotation with a call counter."""

    applied = 0

    @staticmethod
    def precompute(seq_len, head_dim, base=10000, device=None):
        from nanogpt_impls.reference.rotary import Rotary

        return Rotary.precompute(seq_len, head_dim, base, device)

    @staticmethod
    def apply(x, cos, sin):
        from nanogpt_impls.reference.rotary import Rotary

        RotaryProbe.applied += 1
        return Rotary.apply(x, cos, sin)


class ProbePlugin:
    @hookimpl
    def register_components(self, register):
        register("probe", "norm", CountingNorm, description="counts calls")
        register("probe", "rotary", RotaryProbe)


@pytest.fixture
def probe_plugin():
    plugin = ProbePlugin()
    register_plugin(plugin, name="probe-plugin")
    yield plugin
    unregister_plugin(name="probe-plugin")


def test_builtin_sets_provide_every_component():
    regs = registrations()
    for component in COMPONENT_NAMES:
        assert ("reference", component) in regs
        assert ("student", component) in regs
        assert regs[("reference", component)].plugin == "nanogpt_impls.reference"


def test_swapped_norm_reaches_every_norm_in_the_model(tiny_config, probe_plugin):
    CountingNorm.calls = []
    model = build_model(tiny_config, use="probe:norm")
    model.init_weights()
    model(torch.randint(0, tiny_config.vocab_size, (1, 8)))
    C, D, L = tiny_config.n_embd, tiny_config.head_dim, tiny_config.n_layer
    # embedding norm + 2 per block + final norm over C; q and k norms over D in every layer
    assert sorted(CountingNorm.calls) == sorted([C] * (2 + 2 * L) + [D] * (2 * L))


def test_swapped_rotary_is_what_attention_applies(tiny_config, probe_plugin):
    RotaryProbe.applied = 0
    model = build_model(tiny_config, use={"rotary": "probe"})
    model.init_weights()
    model(torch.randint(0, tiny_config.vocab_size, (1, 8)))
    assert RotaryProbe.applied == 2 * tiny_config.n_layer  # q and k in each layer
    assert model.use["rotary"] == "probe" and model.use["norm"] == "reference"


def test_use_spec_forms():
    assert parse_use("student:attention,student:mlp") == ([], {"attention": "student", "mlp": "student"})
    assert parse_use("student") == (["student"], {})
    assert resolve_use(None) == dict.fromkeys(COMPONENT_NAMES, "reference")
    assert resolve_use("student")["generate"] == "student"
    chosen = resolve_use("student,reference:generate")
    assert chosen["generate"] == "reference" and chosen["attention"] == "student"
    assert resolve_use({"attention": "student"}) == resolve_use("student:attention")
    assert format_use(resolve_use("student:mlp")) == "student:mlp"
    assert format_use(resolve_use(None)) == "reference"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("nosuch:attention", "unknown implementation set 'nosuch'; available: reference, student"),
        ("student:attn", "unknown component 'attn'; components are: norm, rotary, attention"),
        ("", "empty"),
        ("student:", "incomplete"),
        (":mlp", "incomplete"),
        ("student:mlp,student:mlp", "twice"),
        ("student:mlp,,reference:norm", "empty item"),
        ("a:b:c", "more than one"),
        ("nosuch", "unknown implementation set"),
    ],
)
def test_bad_use_specs_give_one_clear_error(spec, fragment):
    with pytest.raises(UseSpecError, match=fragment.replace("(", r"\(")) as info:
        resolve_use(spec)
    assert "\n" not in str(info.value)


def test_set_without_that_component_lists_providers(probe_plugin):
    # reference and student always provide it; installed plugins (e.g. the example variants) may add more
    expected = "'probe' has no 'mlp'; mlp is provided by: (.+, )?reference, (.+, )?student"
    with pytest.raises(UseSpecError, match=expected):
        resolve_use("probe:mlp")


def test_registering_unknown_component_names_the_plugin():
    class Bad:
        @hookimpl
        def register_components(self, register):
            register("bad", "attn", object)

    with pytest.raises(RegistryError, match="plugin 'bad-plugin' registers unknown component 'attn'"):
        register_plugin(Bad(), name="bad-plugin")
    unregister_plugin(name="bad-plugin")
    registrations(refresh=True)


def test_registering_a_taken_pair_names_both_plugins():
    class Dup:
        @hookimpl
        def register_components(self, register):
            register("reference", "mlp", nn.Identity)

    expected = "'dup-plugin' registers reference:mlp, which plugin 'nanogpt_impls.reference'"
    with pytest.raises(RegistryError, match=expected):
        register_plugin(Dup(), name="dup-plugin")
    unregister_plugin(name="dup-plugin")
    registrations(refresh=True)


def test_implementation_missing_a_contract_member_is_refused():
    class NoApply:
        @staticmethod
        def precompute(*a, **k):
            return None

    class Plugin:
        @hookimpl
        def register_components(self, register):
            register("half", "rotary", NoApply)

    with pytest.raises(RegistryError, match="half:rotary lacks apply"):
        register_plugin(Plugin(), name="half-plugin")
    unregister_plugin(name="half-plugin")
    registrations(refresh=True)


def test_entry_point_plugins_are_discovered(tmp_path):
    """A real distribution on sys.path with a `nanogpt` entry point, discovered in a fresh interpreter."""
    (tmp_path / "epdemo_plugin.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        from nanogpt_core import hookimpl

        class WideMLP(nn.Module):
            '''An MLP from an installed plugin.'''
            def __init__(self, config):
                super().__init__()
                self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
                self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
            def forward(self, x):
                return self.c_proj(self.c_fc(x).relu().square())

        @hookimpl
        def register_components(register):
            register("epdemo", "mlp", WideMLP)
    """))
    dist = tmp_path / "epdemo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: epdemo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[nanogpt]\nepdemo = epdemo_plugin\n")
    code = textwrap.dedent("""
        from nanogpt_core import GPTConfig, build_model
        from nanogpt_core.model.registry import registrations
        reg = registrations()[("epdemo", "mlp")]
        model = build_model(GPTConfig(sequence_len=8, vocab_size=32, n_layer=1, n_head=1, n_kv_head=1, n_embd=16),
                            use="epdemo:mlp")
        print(reg.plugin, reg.description, type(model.transformer.h[0].mlp).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["epdemo", "An", "MLP", "from", "an", "installed", "plugin.", "WideMLP"]


def test_components_cli_lists_all_eight():
    from click.testing import CliRunner

    from nanogpt_cli.main import cli

    result = CliRunner().invoke(cli, ["components"])
    assert result.exit_code == 0, result.output
    for component in COMPONENT_NAMES:
        assert component in result.output
    assert "nanogpt_impls.reference" in result.output and "student" in result.output
