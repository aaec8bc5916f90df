"""Broken third-party plugins, installed for real: a distribution with a `nanogpt` entry point on sys.path, and the
`nanogpt` command run in a fresh interpreter. Each failure is one line naming the plugin and the fix, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

GOOD_MLP = """
    import torch.nn as nn
    from nanogpt_core import hookimpl

    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

        def forward(self, x):
            return self.c_proj(self.c_fc(x).relu().square())
"""


def install(site: Path, package: str, module: str, source: str) -> None:
    """A minimal installed distribution: the module, and a dist-info whose entry point names it."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist = site / f"{package}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[nanogpt]\n{package} = {module}\n")


def nanogpt(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nanogpt_cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    assert "Traceback" not in out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_plugin_that_raises_at_import_is_named_with_the_fix(tmp_path):
    install(tmp_path, "brokenplug", "brokenplug_module", "import torch\nraise ImportError('needs nanogpt_extras')\n")
    out = nanogpt(tmp_path, "components")
    assert_one_line_error(out, "plugin 'brokenplug' (brokenplug_module, from package brokenplug) failed to import",
                          "uninstall it with pip")


def test_a_plugin_whose_hook_raises_is_named_with_the_fix(tmp_path):
    install(tmp_path, "hookboom", "hookboom_module", """
        from nanogpt_core import hookimpl

        @hookimpl
        def register_components(register):
            raise RuntimeError("boom while registering")
    """)
    out = nanogpt(tmp_path, "components")
    assert_one_line_error(out, "plugin 'hookboom' failed while registering components",
                          "RuntimeError: boom while registering", "fix its register_components hook")


def test_two_plugins_registering_the_same_pair_are_both_named(tmp_path):
    for package in ("dupa", "dupb"):
        install(tmp_path, package, f"{package}_module", GOOD_MLP + """
    @hookimpl
    def register_components(register):
        register("dupset", "mlp", MLP)
""")
    out = nanogpt(tmp_path, "check", "dupset:mlp")
    assert_one_line_error(out, "registers dupset:mlp, which plugin", "already registered; rename one")
    assert "'dupa'" in out.stderr and "'dupb'" in out.stderr


def test_a_plugin_that_calls_sys_exit_at_import_is_named_with_the_fix(tmp_path):
    """Was: only 'needs CUDA' on stderr (SystemExit passes every `except Exception`), no word of which plugin."""
    install(tmp_path, "exitplug", "exitplug_module", "import sys\nsys.exit('needs CUDA')\n")
    out = nanogpt(tmp_path, "components")
    assert_one_line_error(out, "plugin 'exitplug' (exitplug_module, from package exitplug) failed to import "
                               "(SystemExit: needs CUDA); fix it, or uninstall it with pip")
