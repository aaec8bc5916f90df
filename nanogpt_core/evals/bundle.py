"""The CORE eval bundle: where it is, what its files say, and the items of each task.

nanochat evaluates CORE from `eval_bundle.zip` (`nanogpt data download core-eval` fetches and unpacks it):

    eval_bundle/core.yaml            icl_tasks: label, dataset_uri, num_fewshot [N], icl_task_type,
                                     continuation_delimiter (default " ")
    eval_bundle/eval_meta_data.csv   one row per task: "Eval Task", "Random baseline" (a percentage), ...
    eval_bundle/eval_data/*/*.jsonl  one item per line: {query, choices, gold} (multiple_choice),
                                     {context_options, continuation, gold} (schema), {context, continuation}
                                     (language_modeling)

The items of a task are shuffled with `random.Random(1337)` before `max_per_task` keeps the first N, as nanochat's
`base_eval.evaluate_core` does, so a subsample is the same subsample everywhere (and the few-shot examples, drawn by
item index, are the same too).
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nanogpt_core.data.download import data_dir
from nanogpt_core.errors import DataError

CORE_DATASET = "core-eval"  # the name `nanogpt data download` knows the bundle by
BUNDLE_FOLDER = "eval_bundle"  # the zip's top folder, unpacked into <data dir>/core-eval/
CONFIG_FILE = "core.yaml"
META_FILE = "eval_meta_data.csv"
ITEMS_FOLDER = "eval_data"
TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
SHUFFLE_SEED = 1337  # nanochat's: the order items are subsampled in
DEFAULT_DELIMITER = " "
# The fields each task type's items must have (nanochat's prompt templates read exactly these).
ITEM_FIELDS = {
    "multiple_choice": ("query", "choices", "gold"),
    "schema": ("context_options", "continuation", "gold"),
    "language_modeling": ("context", "continuation"),
}
GET_IT = f"get it with `nanogpt data download {CORE_DATASET}` (or pass --bundle DIR)"


@dataclass(frozen=True)
class CoreTask:
    """One task of the bundle, as core.yaml and eval_meta_data.csv describe it."""

    label: str
    task_type: str
    dataset_uri: str
    num_fewshot: int
    continuation_delimiter: str
    random_baseline: float  # percent: the accuracy of guessing (25 for four choices); CORE centres on it


@dataclass(frozen=True)
class CoreBundle:
    """A bundle folder (the one holding core.yaml) and its tasks, in core.yaml's order."""

    folder: Path
    tasks: tuple[CoreTask, ...]

    def items(self, task: CoreTask, max_per_task: int = -1) -> list[dict[str, Any]]:
        """The task's items, shuffled with nanochat's seed, the first `max_per_task` of them (all if <= 0)."""
        path = self.folder / ITEMS_FOLDER / task.dataset_uri
        items = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{path}:{number} is not JSON ({exc}); download the bundle again") from None
                _check_item(item, task, f"{path}:{number}")
                items.append(item)
        if not items:
            raise DataError(f"{path} holds no items; download the bundle again")
        random.Random(SHUFFLE_SEED).shuffle(items)
        return items[:max_per_task] if max_per_task > 0 else items


def bundle_locations(directory: str | Path | None = None) -> list[Path]:
    """Where a bundle is looked for: ours (<data dir>/core-eval/eval_bundle), then nanochat's own
    ($NANOCHAT_BASE_DIR or ~/.cache/nanochat, /eval_bundle), so a nanochat user's bundle is found as it is."""
    nanochat_base = Path(os.environ.get("NANOCHAT_BASE_DIR") or "~/.cache/nanochat").expanduser()
    return [data_dir(directory) / CORE_DATASET / BUNDLE_FOLDER, nanochat_base / BUNDLE_FOLDER]


def find_bundle(path: str | Path | None = None) -> Path:
    """The bundle folder: `path` (the folder with core.yaml, or one holding eval_bundle/), else the first of
    `bundle_locations()` that has one. DataError saying where it looked and how to get it otherwise."""
    if path is not None:
        given = Path(path).expanduser()
        for folder in (given, given / BUNDLE_FOLDER, given / CORE_DATASET / BUNDLE_FOLDER):
            if (folder / CONFIG_FILE).is_file():
                return folder
        raise DataError(f"no CORE eval bundle in {given} (no {CONFIG_FILE} there or in {given / BUNDLE_FOLDER}); "
                        f"{GET_IT}")
    looked = bundle_locations()
    for folder in looked:
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise DataError(f"no CORE eval bundle in {' or '.join(str(p) for p in looked)}; {GET_IT}")


def load_bundle(path: str | Path | None = None) -> CoreBundle:
    """Read core.yaml and the random baselines of the bundle `find_bundle(path)` finds; every task checked (its
    type, its item file present, its baseline known) before anything is evaluated."""
    folder = find_bundle(path)
    try:
        import yaml
    except ImportError:
        raise DataError("reading the CORE bundle's core.yaml needs PyYAML: pip install 'nanogpt[eval]'") from None
    config_path = folder / CONFIG_FILE
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{config_path} is not valid YAML ({str(exc).splitlines()[0]}); download the bundle "
                        f"again") from None
    entries = config.get("icl_tasks") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{config_path} has no `icl_tasks` list; download the bundle again")
    baselines = _random_baselines(folder / META_FILE)
    tasks = tuple(_task(entry, i, config_path, baselines, folder) for i, entry in enumerate(entries))
    return CoreBundle(folder, tasks)


def _task(entry: Any, index: int, config_path: Path, baselines: dict[str, float], folder: Path) -> CoreTask:
    where = f"{config_path}: icl_tasks[{index}]"
    if not isinstance(entry, dict) or not all(k in entry for k in ("label", "dataset_uri", "icl_task_type")):
        raise DataError(f"{where} needs label, dataset_uri and icl_task_type; download the bundle again")
    label, task_type = str(entry["label"]), entry["icl_task_type"]
    if task_type not in TASK_TYPES:
        raise DataError(f"{where} ({label}) has icl_task_type {task_type!r}; CORE knows {', '.join(TASK_TYPES)}")
    shots = entry.get("num_fewshot", [0])
    shots = shots[0] if isinstance(shots, list) and shots else shots  # core.yaml writes [N]; nanochat reads [0]
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise DataError(f"{where} ({label}) has num_fewshot {entry.get('num_fewshot')!r}; expected [N], N >= 0")
    uri = str(entry["dataset_uri"])
    parts = PurePosixPath(uri).parts
    if PurePosixPath(uri).is_absolute() or ".." in parts or "\\" in uri or not parts:
        raise DataError(f"{where} ({label}) has dataset_uri {uri!r}, which points outside {ITEMS_FOLDER}/")
    if not (folder / ITEMS_FOLDER / uri).is_file():
        raise DataError(f"the bundle lacks {folder / ITEMS_FOLDER / uri} ({label}); download it again")
    if label not in baselines:
        raise DataError(f"{folder / META_FILE} has no random baseline for {label}; download the bundle again")
    delimiter = entry.get("continuation_delimiter", DEFAULT_DELIMITER)
    return CoreTask(label, task_type, uri, shots, str(delimiter), baselines[label])


def _random_baselines(path: Path) -> dict[str, float]:
    """Task label -> random baseline (percent), from eval_meta_data.csv's "Eval Task" and "Random baseline"."""
    if not path.is_file():
        raise DataError(f"the bundle lacks {path}; download it again")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"Eval Task", "Random baseline"} <= set(reader.fieldnames):
            raise DataError(f"{path} has no `Eval Task` and `Random baseline` columns; download the bundle again")
        baselines = {}
        for row in reader:
            try:
                baselines[row["Eval Task"]] = float(row["Random baseline"])
            except (TypeError, ValueError):
                raise DataError(f"{path}: the random baseline of {row['Eval Task']} is "
                                f"{row['Random baseline']!r}, not a number") from None
    return baselines


def _check_item(item: Any, task: CoreTask, where: str) -> None:
    """An item with the fields its task type's prompt needs, and a gold answer that indexes its options."""
    fields = ITEM_FIELDS[task.task_type]
    if not isinstance(item, dict) or any(name not in item for name in fields):
        raise DataError(f"{where}: a {task.task_type} item needs {', '.join(fields)}; download the bundle again")
    if task.task_type == "language_modeling":
        return
    options = item["choices"] if task.task_type == "multiple_choice" else item["context_options"]
    count = len(options) if isinstance(options, list) else 0
    gold = item["gold"]
    if not count or not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < count:
        raise DataError(f"{where}: gold {gold!r} is not the index of one of its {count} options")
