"""`nanogpt inspect` and `train --inspect-every`: the files they write, the tables they print, the same weights
through two sets, attention over training, and one-line errors for what they cannot do."""

from __future__ import annotations

import json
import os

import matplotlib.image
import pytest
import torch
from click.testing import CliRunner
from tiny_training import _one_thread, tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.inspection.snapshots import load_snapshots
from nanogpt_core.io.checkpoint import load_model
from nanogpt_core.train.loop import train
from nanogpt_core.train.run_log import read_metrics

PROMPT = "The function returns"


@pytest.fixture(scope="module")
def run_dir(tiny_corpus, tiny_tokenizer, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("inspect_run") / "run"
    settings = tiny_settings(tiny_corpus, tiny_tokenizer, out, num_iterations=8, n_embd=64, n_head=2, n_kv_head=1,
                             inspect_every=4, inspect_prompt=PROMPT)
    train(settings, stream=open(os.devnull, "w"))
    return out


def inspect(*args: str):
    return CliRunner().invoke(cli, ["inspect", *args])


def picture(path) -> tuple[int, int]:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image[..., :3].std() > 0.05  # an image with something drawn on it
    return image.shape[:2]


def test_train_saves_the_attention_grid_at_step_0_every_n_and_the_end(run_dir):
    folders = sorted(p.name for p in (run_dir / "inspect").iterdir())
    assert folders == ["step_000000", "step_000004", "step_000008"]
    snapshots, unreadable = load_snapshots(run_dir)
    assert [s.step for s in snapshots] == [0, 4, 8] and not unreadable
    model, tokenizer, _ = load_model(run_dir, device="cpu")
    assert snapshots[-1].tokens == tokenizer.encode(PROMPT, prepend_bos=True)
    # the last snapshot is the final model's pattern of the prompt, recomputed independently of the hook
    from nanogpt_core.inspection import run_with_cache

    _, cache = run_with_cache(model, torch.tensor([snapshots[-1].tokens]), names="blocks.*.attn.pattern")
    torch.testing.assert_close(snapshots[-1].patterns[0], cache["blocks.0.attn.pattern"][0], rtol=0, atol=1e-6)
    assert not torch.equal(snapshots[0].patterns[0], snapshots[-1].patterns[0])  # training changed the heads
    records = [r for r in read_metrics(run_dir) if r["type"] == "inspect"]
    assert [r["step"] for r in records] == [0, 4, 8]
    assert len(records[0]["attention_entropy"]) == 1 and len(records[0]["attention_entropy"][0]) == 2
    for folder in folders:
        picture(run_dir / "inspect" / folder / "attention.png")


def test_inspect_writes_the_pictures_and_prints_the_tables(run_dir, tmp_path):
    result = inspect(str(run_dir), "--prompt", PROMPT, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    for text in ("Logit lens", "Per layer", "attention entropy", "MLP hidden units = 0", "attention.png"):
        assert text in result.output
    height, width = picture(tmp_path / "attention.png")
    assert width > 300 and height > 300
    picture(tmp_path / "logit_lens.png")
    numbers = json.loads((tmp_path / "inspect.json").read_text())
    assert numbers["logit_lens"]["rows"] == ["embedding", "block 0"]
    assert len(numbers["logit_lens"]["top_ids"][0]) == len(numbers["tokens"])
    assert numbers["missing"] == {}


def test_inspect_defaults_to_the_runs_inspect_folder(run_dir):
    result = inspect(str(run_dir / "checkpoints" / "step_000008"))
    assert result.exit_code == 0, result.output
    assert (run_dir / "inspect" / "attention.png").is_file() and (run_dir / "inspect" / "logit_lens.png").is_file()


def test_against_the_same_math_differs_by_rounding_and_a_bug_by_much_more(run_dir, tmp_path, alt, bugs):
    same = inspect(str(run_dir), "--use", "alt:attention", "--against", "reference", "--out", str(tmp_path / "a"))
    assert same.exit_code == 0, same.output
    diff = json.loads((tmp_path / "a" / "inspect.json").read_text())["against"]
    # einsum + softmax against SDPA on the same weights: fp32 rounding of weights in [0, 1] (measured ~3e-7)
    assert max(max(heads) for heads in diff["pattern_max_abs_diff"]) < 5e-6
    picture(tmp_path / "a" / "attention_vs_reference.png")
    leaky = inspect(str(run_dir), "--use", "bug-no-causal-mask:attention", "--against", "reference",
                    "--out", str(tmp_path / "b"))
    assert leaky.exit_code == 0, leaky.output
    diff = json.loads((tmp_path / "b" / "inspect.json").read_text())["against"]
    assert min(max(heads) for heads in diff["pattern_max_abs_diff"]) > 0.1
    assert "against reference, same weights" in leaky.output


def test_steps_draws_the_saved_grids_over_time(run_dir, tmp_path):
    result = inspect(str(run_dir), "--steps", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "3 saved steps (0, 4, 8)" in result.output
    height, width = picture(tmp_path / "steps.png")
    assert width > height  # steps across, heads down: 3 steps x 2 heads


def test_steps_without_saved_grids_says_how_to_get_them(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    out = tmp_path / "plain"
    train(tiny_settings(tiny_corpus, tiny_tokenizer, out, num_iterations=1), stream=open(os.devnull, "w"))
    result = inspect(str(out), "--steps")
    assert result.exit_code == 2
    assert "no saved attention grids" in result.output and "--inspect-every" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", "   "], "the prompt is empty"),
    (["--prompt", "word " * 200], "more than the model's context of 64"),
    (["--against", "nope"], "unknown implementation set 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, args, message):
    result = inspect(str(run_dir), *args, "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "attention.png").exists()


def test_a_missing_run_is_one_line(tmp_path):
    result = inspect(str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "no checkpoint at" in result.output


def test_inspect_prompt_without_every_and_a_prompt_too_long_fail_before_any_step(tiny_corpus, tiny_tokenizer,  # noqa: F811
                                                                                 tmp_path):
    from nanogpt_core.errors import ConfigError

    with pytest.raises(ConfigError, match="--inspect-prompt needs --inspect-every"):
        train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "a", inspect_prompt="hi"),
              stream=open(os.devnull, "w"))
    with pytest.raises(ConfigError, match="more than the model's context"):
        train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "b", inspect_every=2,
                            inspect_prompt="word " * 200), stream=open(os.devnull, "w"))
    assert not (tmp_path / "b" / "checkpoints").exists() and not (tmp_path / "b" / "inspect").exists()


def test_the_default_prompt_is_cut_to_a_short_context_and_a_given_one_is_not(run_dir):
    from nanogpt_core.errors import ConfigError
    from nanogpt_core.inspection.report import DEFAULT_PROMPT, prompt_ids

    _, tokenizer, _ = load_model(run_dir, device="cpu")
    assert prompt_ids(tokenizer, None, 5) == tokenizer.encode(DEFAULT_PROMPT, prepend_bos=True)[:5]
    with pytest.raises(ConfigError, match="more than the model's context of 5"):
        prompt_ids(tokenizer, DEFAULT_PROMPT, 5)


def test_the_train_flags_reach_the_hook_and_a_prompt_alone_is_refused(tiny_corpus, tiny_tokenizer, tmp_path):  # noqa: F811
    base = ["train", "--depth", "1", "--n-embd", "64", "--n-head", "1", "--n-kv-head", "1", "--max-seq-len", "64",
            "--device-batch-size", "2", "--total-batch-size", "128", "--eval-every", "-1", "--eval-tokens", "128",
            "--data", str(tiny_corpus), "--tokenizer", str(tiny_tokenizer), "--device", "cpu"]
    alone = CliRunner().invoke(cli, [*base, "--num-iterations", "1", "--out", str(tmp_path / "a"),
                                     "--inspect-prompt", "The function"])
    assert alone.exit_code == 2 and "--inspect-prompt needs --inspect-every N" in alone.output
    ran = CliRunner().invoke(cli, [*base, "--num-iterations", "3", "--out", str(tmp_path / "b"),
                                   "--inspect-every", "2", "--inspect-prompt", "The function"])
    assert ran.exit_code == 0, ran.output
    assert sorted(p.name for p in (tmp_path / "b" / "inspect").iterdir()) == ["step_000000", "step_000002",
                                                                             "step_000003"]


def test_an_attention_whose_pattern_cannot_be_seen_still_gets_the_lens_and_the_tables(run_dir, tmp_path):
    from test_inspection import HandRolledSoftmax

    from nanogpt_core.inspection.report import inspect_prompt

    model, tokenizer, _ = load_model(run_dir, device="cpu")
    reference, _, _ = load_model(run_dir, device="cpu")
    model.transformer.h[0].attn.__class__ = HandRolledSoftmax
    result = inspect_prompt(model, tokenizer, PROMPT, tmp_path, against=reference)
    assert "neither F.scaled_dot_product_attention" in result.cache.missing["blocks.0.attn.pattern"]
    # exp/sum by hand against SDPA: the same math, logits equal to fp32 rounding (measured 4.8e-7 on logits ~1)
    assert result.against.pattern_diff is None and result.against.logits_max_diff < 1e-5
    assert sorted(result.files) == ["logit_lens", "numbers"]
    assert result.stats[0].attn_entropy is None and result.stats[0].mlp_zero_fraction is not None
