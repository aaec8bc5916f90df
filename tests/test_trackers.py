"""Experiment trackers, read back from what each one wrote: TensorBoard's event files, wandb's offline transaction
log, trackio's local store. Each must hold what metrics.jsonl, samples.txt and config.json hold, and a run without
`--log` must not change.

wandb and trackio run in a subprocess (`nanogpt train` as a user runs it): both start background machinery and exit
hooks that should not live on inside the test process.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_training import tiny_corpus, tiny_settings, tiny_tokenizer  # noqa: F401

from nanogpt_cli.main import cli
from nanogpt_core.errors import ConfigError
from nanogpt_core.io.checkpoint import load_checkpoint
from nanogpt_core.train.loop import train
from nanogpt_core.train.run_log import read_metrics
from nanogpt_core.train.trackers import TRACKERS, scalars, tracker_sinks

ROOT = Path(__file__).resolve().parents[1]


def quiet() -> dict:
    return {"progress_bar": False, "stream": open(os.devnull, "w")}


def expected_scalars(run_dir: Path) -> dict[tuple[str, int], float]:
    """(tag, step) -> value for every number of metrics.jsonl, independently of `scalars`."""
    out = {}
    for record in read_metrics(run_dir):
        for key, value in record.items():
            if key not in ("type", "step") and value is not None:
                out[(f"{record['type']}/{key}", record["step"])] = float(value)
    return out


def read_tensorboard(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    found = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    texts = {tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(tag)]
             for tag in events.Tags()["tensors"]}
    return found, texts


def samples_block(run_dir: Path, step: int) -> str:
    """The samples.txt block of `step` (each sample as `[prompt]completion` and a newline), without its header."""
    return (run_dir / "samples.txt").read_text(encoding="utf-8").split(f"=== step {step} ===\n")[1].split("\n\n=== ")[0]


def as_block(rows) -> str:
    return "".join(f"[{prompt}]{completion}\n" for prompt, completion in rows).rstrip("\n")


def assert_same_numbers(found: dict, expected: dict) -> None:
    assert set(found) == set(expected)
    for key, value in expected.items():  # TensorBoard and trackio keep float32 or float64: compare at float32
        assert abs(found[key] - value) <= 1e-6 * max(1.0, abs(value)), (key, found[key], value)


def test_scalars_are_every_number_of_a_record():
    record = {"type": "train", "step": 3, "loss": 2.5, "lrm": 1, "mfu": None, "compiled": True, "note": "x"}
    assert scalars(record) == {"train/loss": 2.5, "train/lrm": 1.0}
    assert scalars({"type": "eval", "step": 0, "val_bpb": 1.25}) == {"eval/val_bpb": 1.25}


def test_unknown_tracker_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown tracker 'mlflow' in --log; choose from tensorboard, wandb, trackio"):
        tracker_sinks(["mlflow"], tmp_path)
    assert tracker_sinks([], tmp_path) == [] and tracker_sinks(None, tmp_path) == []
    assert not any(tmp_path.iterdir())  # making sinks writes nothing


def test_tensorboard_holds_what_the_run_folder_holds(tmp_path, tiny_corpus, tiny_tokenizer):  # noqa: F811
    settings = tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "run", num_iterations=6, eval_every=3,
                             sample_every=3, log=["tensorboard"])
    train(settings, **quiet())  # the library path: TrainSettings.log, no command line
    found, texts = read_tensorboard(tmp_path / "run" / "tensorboard")
    assert_same_numbers(found, expected_scalars(tmp_path / "run"))
    assert {"train/loss", "train/lrm", "train/tok_per_sec", "eval/val_bpb"} <= {tag for tag, _ in found}
    [(_, config)] = texts["config/text_summary"]
    assert json.loads(config.removeprefix("```json\n").removesuffix("\n```")) == \
        json.loads((tmp_path / "run" / "config.json").read_text())
    assert [step for step, _ in texts["samples/text_summary"]] == [3, 6]
    for step, table in texts["samples/text_summary"]:
        rows = [row[2:-2].split(" | ") for row in table.splitlines()[2:]]  # "| prompt | completion |"
        rows = [[cell.replace("\\|", "|").replace("↵", "\n") for cell in row] for row in rows]
        assert as_block(rows) == samples_block(tmp_path / "run", step).rstrip("\n")


def test_a_resumed_run_keeps_each_step_once(tmp_path, tiny_corpus, tiny_tokenizer):  # noqa: F811
    run = tmp_path / "run"
    settings = tiny_settings(tiny_corpus, tiny_tokenizer, run, num_iterations=5, save_every=2, log=["tensorboard"])
    train(settings, **quiet())
    # continue from step 2 as after a crash there: steps 2..4 are logged again, the first ones must disappear
    result = CliRunner().invoke(cli, ["train", "--resume", str(run / "checkpoints" / "step_000002")])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run, load_optimizer=False).state["settings"]["log"] == ["tensorboard"]  # kept on resume
    found, _ = read_tensorboard(run / "tensorboard")
    assert len(glob.glob(str(run / "tensorboard" / "events.out.tfevents.*"))) == 2  # both sessions wrote
    assert_same_numbers(found, expected_scalars(run))
    assert sorted(step for tag, step in found if tag == "train/loss") == [0, 1, 2, 3, 4]


def test_no_log_changes_nothing(tmp_path, tiny_corpus, tiny_tokenizer):  # noqa: F811
    plain = train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "plain"), **quiet())
    logged = train(tiny_settings(tiny_corpus, tiny_tokenizer, tmp_path / "logged", log=["tensorboard"]), **quiet())
    assert plain.losses == logged.losses and plain.val_bpb == logged.val_bpb
    assert sorted(p.name for p in (tmp_path / "logged").iterdir()) == \
        sorted([p.name for p in (tmp_path / "plain").iterdir()] + ["tensorboard"])


@pytest.mark.parametrize(("tracker", "package"), [("tensorboard", "tensorboard"), ("wandb", "wandb"),
                                                  ("trackio", "trackio")])
def test_a_missing_extra_is_one_line_naming_the_pip_command(tmp_path, monkeypatch, tracker, package, tiny_corpus):  # noqa: F811
    monkeypatch.setitem(sys.modules, package, None)  # what `import package` meets when it is not installed
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "run"),
                                      "--log", tracker, "--num-iterations", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"--log {tracker} needs {package}, which is not installed: pip install 'nanogpt[{tracker}]'" in result.output
    assert not (tmp_path / "run").exists()  # refused before the run began


def test_the_command_line_offers_every_tracker():
    result = CliRunner().invoke(cli, ["train", "--log", "mlflow"])
    assert result.exit_code == 2 and all(name in result.output for name in TRACKERS)


def test_under_torchrun_the_flag_is_spelled_tracker(tmp_path, tiny_corpus, tiny_tokenizer):  # noqa: F811
    """torchrun's parser matches prefixes of its own options anywhere on the line: `--log` is taken for --log-dir."""
    from torch.distributed.run import get_args_parser

    launcher = ["--standalone", "--nproc-per-node=2", "-m", "nanogpt_cli", "train"]
    assert get_args_parser().parse_args([*launcher, "--tracker", "tensorboard"]).training_script_args[-1] == \
        "tensorboard"
    with pytest.raises(SystemExit):
        get_args_parser().parse_args([*launcher, "--log", "tensorboard"])
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_corpus), "--tokenizer", str(tiny_tokenizer),
                                      "--out", str(tmp_path / "run"), "--num-iterations", "0", "--depth", "1",
                                      "--tracker", "tensorboard"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "run", load_optimizer=False).state["settings"]["log"] == ["tensorboard"]


# --- wandb (offline) and trackio (local store), as a user runs them -----------------------------------------------


def wandb_records(run_dir: Path) -> list:
    """Every record of wandb's offline transaction log (a LevelDB-style log of protobuf `Record`s, read here with
    wandb's own message classes)."""
    from wandb.proto import wandb_internal_pb2

    [path] = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    data, block, pos, pending, records = Path(path).read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full, first
            pending = chunk
        elif kind in (3, 4):  # middle, last
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@pytest.mark.slow
def test_wandb_offline_and_trackio_hold_what_the_run_folder_holds(tmp_path, tiny_corpus, tiny_tokenizer):  # noqa: F811
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TRACKIO_"))}
    env.update(TRACKIO_DIR=str(tmp_path / "trackio"), NETRC=str(tmp_path / "no-netrc"), HF_HUB_OFFLINE="1",
               WANDB_DIR=str(tmp_path / "wandb-cache"))  # no credentials: wandb must choose offline by itself
    command = [sys.executable, "-m", "nanogpt_cli", "train", "--depth", "1", "--n-embd", "64", "--n-head", "1",
               "--n-kv-head", "1", "--max-seq-len", "64", "--device-batch-size", "2", "--total-batch-size", "256",
               "--num-iterations", "4", "--eval-every", "2", "--eval-tokens", "512", "--data", str(tiny_corpus),
               "--tokenizer", str(tiny_tokenizer), "--out", str(run), "--device", "cpu",
               "--log", "wandb", "--log", "trackio"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = expected_scalars(run)
    config = json.loads((run / "config.json").read_text())
    samples = samples_block(run, 4).rstrip("\n")

    # wandb: history rows, the run's config, the samples table
    records = wandb_records(run)
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history.update({(k, r.history.step.num): v for k, v in items.items()
                            if not k.startswith(("_", "samples"))})
    assert_same_numbers(history, expected)
    [run_record] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    logged_config = {i.key: json.loads(i.value_json) for i in run_record.config.update if i.key != "_wandb"}
    assert logged_config == config and run_record.display_name == "run"
    [table_file] = glob.glob(str(run / "wandb" / "offline-run-*" / "files" / "media" / "table" / "samples_4_*.json"))
    table = json.loads(Path(table_file).read_text())
    assert table["columns"] == ["prompt", "completion"]
    assert as_block(table["data"]) == samples

    # trackio: read its local store with trackio's own reader
    reader = ("import json, sys\nfrom trackio.sqlite_storage import SQLiteStorage\n"
              "logs = SQLiteStorage.get_logs('nanogpt', 'run')\n"
              "print(json.dumps({'config': SQLiteStorage.get_run_config('nanogpt', 'run'), 'logs': logs},"
              " default=str))\n")
    out = subprocess.run([sys.executable, "-c", reader], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    stored = json.loads(out.stdout)
    numbers = {(k, row["step"]): v for row in stored["logs"] for k, v in row.items()
               if "/" in k and isinstance(v, (int, float)) and not k.startswith("samples")}
    assert_same_numbers(numbers, expected)
    assert {k: v for k, v in stored["config"].items() if not k.startswith("_")} == config
    [row] = [row for row in stored["logs"] if "samples" in row]
    assert row["step"] == 4 and as_block((r["prompt"], r["completion"]) for r in row["samples"]["_value"]) == samples
