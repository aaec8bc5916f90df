"""`nanogpt eval --core` on the hand-made fixture bundle (tests/data/eval_bundle: one task of each kind) against an
independent computation, `train --core-metric-every` logging the same number, `eval --bpb` reproducing the run's
own validation figure, the items split over two processes under torchrun, and every offline path as one line.

The independent computation shares no code with `nanogpt_core.evals`: it reads core.yaml and the items with yaml,
csv and json, draws the few-shot examples as nanochat literally does (a sample of the list of other indices),
joins the prompts with "\\n\\n" (the product appends "\\n\\n" after each example), finds the scored spans with
os.path.commonprefix, and scores each sequence alone (no batch, no padding) with tests/independent_gpt.py in fp64.

The model is trained for a few dozen steps on the bundle's own sentences, so it gets some items right and some
wrong in every task type (an untrained model would get every language-modelling item wrong, which a broken
exact-match check would too).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from independent_gpt import gpt_logits
from test_distributed import _torchrun
from tiny_training import _one_thread, tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.io.checkpoint import load_model
from nanogpt_core.train.loop import train
from nanogpt_core.train.run_log import read_metrics

FIXTURE = Path(__file__).parent / "data" / "eval_bundle"
STEPS = 40
CORE_EVERY = 15  # CORE at steps 15, 30 and 40 (the last)
# The product scores in fp32, the independent computation in fp64: on this fixture and checkpoint their mean span
# losses differ by at most 1.6e-6 nats and their logits by 8.2e-6 (measured). Every decision of the fixture must be
# clear of that, or the comparison would test rounding, not the scoring: 1e-4 is 12x the larger difference.
DECISION_MARGIN = 1e-4


def _corpus(path: Path) -> Path:
    """The fixture's correct answers as sentences, many times over in a fixed shuffled order."""
    lines = []
    for spec in yaml.safe_load((FIXTURE / "core.yaml").read_text())["icl_tasks"]:
        delim = spec.get("continuation_delimiter", " ")
        for line in (FIXTURE / "eval_data" / spec["dataset_uri"]).read_text().splitlines():
            item = json.loads(line)
            if "choices" in item:
                lines.append(f"{item['query']}{delim}{item['choices'][item['gold']]}")
            elif "context_options" in item:
                lines.append(f"{item['context_options'][item['gold']]}{delim}{item['continuation']}")
            else:
                lines.append(f"{item['context'].strip()}{delim}{item['continuation']}")
    rng = random.Random(0)
    text = []
    for _ in range(40):
        rng.shuffle(lines)
        text.append("\n".join(lines))
    path.write_text("\n\n".join(text), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data folder with the fixture bundle where `nanogpt data download core-eval` puts it."""
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(FIXTURE, root / "core-eval" / "eval_bundle")
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_tokenizer, data_dir):  # noqa: F811
    """A tiny run that evaluates CORE (all items) every CORE_EVERY steps and at the end."""
    work = tmp_path_factory.mktemp("eval_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NANOGPT_DATA_DIR", str(data_dir))
        settings = tiny_settings(_corpus(work / "corpus.txt"), tiny_tokenizer, work / "run", num_iterations=STEPS,
                                 core_metric_every=CORE_EVERY, core_metric_max_per_task=-1, matrix_lr=0.05,
                                 embedding_lr=0.5, unembedding_lr=0.02)
        train(settings, stream=open(os.devnull, "w"), progress_bar=False)
    return work / "run"


# --- the independent computation -------------------------------------------------------------------------------------


def _draw(index: int, count: int, shots: int) -> list[int]:
    if shots == 0:
        return []
    return random.Random(1234 + index).sample([i for i in range(count) if i != index], min(shots, count - 1))


def independent_core(run: Path, max_per_task: int = -1) -> tuple[dict[str, int], float, list[float]]:
    """(correct items per task, CORE, every decision's margin) from the bundle files and the checkpoint alone."""
    model, tokenizer, _ = load_model(run, device="cpu")
    weights = {k: v.double() for k, v in model.state_dict().items()}
    with open(FIXTURE / "eval_meta_data.csv", newline="") as f:
        baselines = {row["Eval Task"]: float(row["Random baseline"]) / 100 for row in csv.DictReader(f)}
    correct, centred, margins = {}, [], []
    for spec in yaml.safe_load((FIXTURE / "core.yaml").read_text())["icl_tasks"]:
        lines = (FIXTURE / "eval_data" / spec["dataset_uri"]).read_text().splitlines()
        items = [json.loads(line) for line in lines if line.strip()]
        random.Random(1337).shuffle(items)
        items = items[:max_per_task] if max_per_task > 0 else items
        kind, delim = spec["icl_task_type"], spec.get("continuation_delimiter", " ")
        right = 0
        for index, item in enumerate(items):
            shots = [items[i] for i in _draw(index, len(items), spec["num_fewshot"][0])]
            if kind == "multiple_choice":
                texts = ["\n\n".join([f"{s['query']}{delim}{s['choices'][s['gold']]}" for s in shots]
                                     + [f"{item['query']}{delim}{choice}"]) for choice in item["choices"]]
                seqs = [tokenizer.encode(t, prepend_bos=True) for t in texts]
                start = len(os.path.commonprefix(seqs))
                spans = [(start, len(s)) for s in seqs]
            elif kind == "schema":
                texts = ["\n\n".join([f"{s['context_options'][s['gold']]}{delim}{s['continuation']}" for s in shots]
                                     + [f"{option}{delim}{item['continuation']}"])
                         for option in item["context_options"]]
                seqs = [tokenizer.encode(t, prepend_bos=True) for t in texts]
                suffix = len(os.path.commonprefix([s[::-1] for s in seqs]))
                spans = [(len(s) - suffix, len(s)) for s in seqs]
            else:
                examples = [f"{s['context'].strip()}{delim}{s['continuation']}" for s in shots]
                before = "\n\n".join(examples + [f"{item['context'].strip()}{delim}"]).strip()
                full = "\n\n".join(examples + [f"{item['context'].strip()}{delim}{item['continuation']}"])
                seqs = [tokenizer.encode(full, prepend_bos=True)]
                start = len(tokenizer.encode(before, prepend_bos=True))
                assert seqs[0][:start] == tokenizer.encode(before, prepend_bos=True)
                spans = [(start, len(seqs[0]))]
            scores = []
            for seq, (start, end) in zip(seqs, spans):
                logits = gpt_logits(torch.tensor([seq]), weights, model.config)[0]
                logp = torch.log_softmax(logits, dim=-1)
                positions = range(start, end)
                nll = [-logp[p - 1, seq[p]].item() for p in positions]
                gaps = [(logits[p - 1, seq[p]] - torch.cat([logits[p - 1, :seq[p]], logits[p - 1, seq[p] + 1:]]).max())
                        .item() for p in positions]  # > 0 where greedy decoding gives the token
                scores.append((sum(nll) / len(nll), gaps))
            if kind == "language_modeling":
                gaps = scores[0][1]
                ok = all(g > 0 for g in gaps)
                margins.append(min(gaps) if ok else max(-g for g in gaps))  # how clearly right, or clearly wrong
            else:
                means = [m for m, _ in scores]
                pick = min(range(len(means)), key=lambda i: means[i])
                ok = pick == item["gold"]
                margins.append(sorted(means)[1] - sorted(means)[0])
            right += ok
        correct[spec["label"]] = right
        accuracy, base = right / len(items), baselines[spec["label"]]
        centred.append((accuracy - base) / (1 - base))
    return correct, sum(centred) / len(centred), margins


def _eval(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["eval", *args], env=env)


# --- the tests ---------------------------------------------------------------------------------------------------


def test_eval_core_gives_the_independently_computed_accuracies(trained_run, data_dir):
    correct, core, margins = independent_core(trained_run)
    assert min(margins) > DECISION_MARGIN, "a fixture decision is too close to call; the comparison would be noise"
    kinds = {"tiny_choice_zeroshot", "tiny_question", "tiny_schema", "tiny_trivia", "tiny_lambada"}
    assert set(correct) == kinds
    assert 0 < sum(correct.values()) < 30 and correct["tiny_trivia"] + correct["tiny_lambada"] > 0, correct

    result = _eval(str(trained_run), "--core", "--json", env={"NANOGPT_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    tasks = report["core"]["tasks"]
    assert {label: t["correct"] for label, t in tasks.items()} == correct
    assert all(t["items"] == 6 for t in tasks.values())
    assert report["core"]["core"] == pytest.approx(core, abs=1e-12)
    assert report["step"] == STEPS and report["val_bpb"] is None


def test_training_logs_core_at_its_cadence_and_the_last_matches_eval(trained_run, data_dir):
    records = [r for r in read_metrics(trained_run) if r["type"] == "core"]
    assert [r["step"] for r in records] == [15, 30, 40]
    assert set(records[-1]["centered"]) == {"tiny_choice_zeroshot", "tiny_question", "tiny_schema", "tiny_trivia",
                                            "tiny_lambada"}
    _, core, _ = independent_core(trained_run)
    assert records[-1]["core"] == pytest.approx(core, abs=1e-12)  # the final checkpoint's CORE, as eval gives it
    png = (trained_run / "loss.png").read_bytes()
    width = struct.unpack(">I", png[16:20])[0]
    assert width == 1600  # three panels: loss, val bpb and CORE (two panels are 1100 px wide)


def test_max_per_task_takes_nanochats_subsample(trained_run, data_dir):
    correct, core, _ = independent_core(trained_run, max_per_task=4)
    result = _eval(str(trained_run), "--core", "--json", "--max-per-task", "4", "--bundle", str(FIXTURE))
    assert result.exit_code == 0, result.output
    tasks = json.loads(result.stdout)["core"]["tasks"]
    assert {label: t["correct"] for label, t in tasks.items()} == correct
    assert all(t["items"] == 4 for t in tasks.values())
    assert json.loads(result.stdout)["core"]["core"] == pytest.approx(core, abs=1e-12)


def test_eval_bpb_is_the_runs_own_validation_figure(trained_run):
    last = [r for r in read_metrics(trained_run) if r["type"] == "eval"][-1]
    result = _eval(str(trained_run), "--bpb", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["val_bpb"] == last["val_bpb"]  # same text, loader and batches: the same number


def test_the_table_and_what_to_expect(trained_run):
    result = _eval(str(trained_run), "--core", "--bpb", "--bundle", str(FIXTURE))
    assert result.exit_code == 0, result.output
    out = result.stdout
    row = next(line.split() for line in out.splitlines() if line.startswith("tiny_question "))
    report = json.loads(_eval(str(trained_run), "--core", "--json", "--bundle", str(FIXTURE)).stdout)["core"]
    task = report["tasks"]["tiny_question"]
    assert row == ["tiny_question", "multiple_choice", "3", "6", "25.0%", f"{task['accuracy']:.4f}",
                   f"{task['centered']:.4f}"]
    assert out.splitlines()[-2].split()[-1] == f"{report['core']:.4f}"
    assert "CORE (mean centred accuracy)" in out and "GPT-2 (1.5B) 0.2565" in out and "val bpb" in out
    assert "tiny_schema (2-shot, schema): accuracy" in result.stderr  # progress, task by task, on stderr


@pytest.mark.slow
def test_items_split_over_two_processes_give_the_same_result(trained_run, tmp_path):
    single = json.loads(_eval(str(trained_run), "--core", "--json", "--bundle", str(FIXTURE)).stdout)
    out = _torchrun(["eval", str(trained_run), "--core", "--json", "--bundle", str(FIXTURE), "--device", "cpu"],
                    cwd=tmp_path)
    report = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert {k: t["correct"] for k, t in report["core"]["tasks"].items()} == \
        {k: t["correct"] for k, t in single["core"]["tasks"].items()}
    assert report["core"]["core"] == single["core"]["core"]


@pytest.mark.slow
def test_training_under_torchrun_logs_the_core_of_its_weights(tiny_tokenizer, data_dir, tmp_path, monkeypatch):  # noqa: F811
    """Every rank evaluates its share at the cadence; rank 0 logs the combined number, which is the CORE of the
    weights it saves (the final checkpoint evaluated by one process)."""
    monkeypatch.setenv("NANOGPT_DATA_DIR", str(data_dir))
    corpus = _corpus(tmp_path / "corpus.txt")
    _torchrun(["train", "--data", str(corpus), "--tokenizer", str(tiny_tokenizer), "--out", str(tmp_path / "run"),
               "--depth=1", "--n-embd=64", "--n-head=1", "--max-seq-len=64", "--device-batch-size=2",
               "--total-batch-size=256", "--num-iterations=6", "--eval-every=-1", "--eval-tokens=512",
               "--device=cpu", "--core-metric-every=3", "--core-metric-max-per-task=-1"], cwd=tmp_path)
    records = [r for r in read_metrics(tmp_path / "run") if r["type"] == "core"]
    assert [r["step"] for r in records] == [3, 6]
    result = _eval(str(tmp_path / "run"), "--core", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["core"]["core"] == records[-1]["core"]


# --- offline, and other mistakes: one line each ----------------------------------------------------------------------


def test_eval_without_the_bundle_is_one_line_before_the_model_loads(trained_run, tmp_path):
    result = _eval(str(trained_run), "--core", env={"NANOGPT_DATA_DIR": str(tmp_path / "empty"),
                                                    "NANOCHAT_BASE_DIR": str(tmp_path / "nanochat")})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("Error: no CORE eval bundle in ") and "nanogpt data download core-eval" in lines[0]


@pytest.mark.parametrize(("args", "message"), [
    ([], "say what to evaluate: --core"),
    (["--bpb", "--batch-tokens", "0"], "--batch-tokens"),
])
def test_eval_argument_mistakes(trained_run, args, message):
    result = _eval(str(trained_run), *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_eval_of_a_missing_checkpoint(tmp_path):
    result = _eval(str(tmp_path / "nothing"), "--bpb")
    assert result.exit_code == 2 and "no checkpoint at" in result.output and "Traceback" not in result.output


def test_training_without_the_bundle_says_where_it_looked_and_trains_on(tiny_tokenizer, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("NANOGPT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "nanochat"))
    corpus = _corpus(tmp_path / "corpus.txt")
    result = CliRunner().invoke(cli, ["train", "--data", str(corpus), "--tokenizer", str(tiny_tokenizer), "--out",
                                      str(tmp_path / "run"), "--depth=1", "--n-embd=64", "--n-head=1",
                                      "--max-seq-len=32", "--device-batch-size=2", "--total-batch-size=64",
                                      "--eval-tokens=64", "--device=cpu", "--num-iterations=2",
                                      "--core_metric_every=1"])
    assert result.exit_code == 0, result.output
    assert (f"CORE metric off for this run: no CORE eval bundle in {tmp_path / 'empty' / 'core-eval' / 'eval_bundle'}"
            in result.output and "nanogpt data download core-eval" in result.output)
    assert not [r for r in read_metrics(tmp_path / "run") if r["type"] == "core"]
