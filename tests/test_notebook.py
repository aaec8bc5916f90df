"""docs/notebooks/look-inside.ipynb runs from top to bottom and shows its pictures (executed with nbclient, so it never
goes stale), is committed without outputs, and docs/inspect.md lists every capture point as the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nanogpt_core.inspection import POINTS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "notebooks" / "look-inside.ipynb"


def test_docs_list_every_capture_point_as_the_code_does():
    text = (ROOT / "docs" / "inspect.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| (\([^)]*\)) \|.*\| (\w+) \| (.+) \|$", text, flags=re.MULTILINE)
    assert rows == [(p.name, p.shape, p.component or "core", p.meaning) for p in POINTS]


def test_the_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_the_notebook_runs_and_shows_the_cache_the_maps_and_the_lens(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel is this interpreter's (ipykernel's own spec), started in a scratch folder
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 4  # attention, logit lens, against the reference, over training
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "blocks.1.attn.pattern    (1, 4, 13, 13)" in text
    assert "rows sum to 1: True | causal: True | seen through: a softmax over the keys" in text
    difference = float(re.search(r"largest attention-weight difference: (\S+)", text).group(1))
    assert difference < 5e-6  # the notebook's explicit-softmax attention is the reference's math (fp32 rounding)
    bpb = re.findall(r"val bpb (\d+\.\d+)", text)
    assert len(bpb) == 4 and float(bpb[-1]) < float(bpb[0]) - 0.5  # it learned
