"""Experiment trackers: TensorBoard, Weights & Biases and trackio, each a `MetricSink` of the run log.

    nanogpt train --log tensorboard --log wandb        # or TrainSettings(log=["tensorboard", "wandb"])

nanochat, nanoGPT, litgpt and torchtitan log runs to wandb or TensorBoard, which people open to watch and compare
runs; these sinks give them what this run's folder holds, and nothing else:

- the run's config.json, once (TensorBoard: a text panel `config`; wandb and trackio: the run's config);
- every record of metrics.jsonl as scalars named `<type>/<field>` at the record's step: `train/loss`,
  `train/smooth_loss`, `train/lrm` (learning-rate multiplier), `train/tok_per_sec`, `train/mfu` (on CUDA),
  `train/dt_ms`, `train/grad_norm`, `eval/val_bpb`, and any StepHook's record under its own name;
- every batch of samples as text (TensorBoard: a text panel `samples`; wandb and trackio: a table `samples`).

Each tracker is an optional extra, imported when its sink is made (before any training), so a missing one is a
single line naming the pip command. Where each writes:

    tensorboard  RUN/tensorboard/  event files            tensorboard --logdir runs
    wandb        RUN/wandb/        online when logged in (or WANDB_MODE says so), else offline: wandb sync RUN/wandb/...
    trackio      trackio's local store (TRACKIO_DIR, default ~/.cache/huggingface/trackio)   trackio show

A resumed run continues its trackers where its checkpoint was: TensorBoard drops the events after that step (as
metrics.jsonl does), wandb and trackio continue the same run.
"""

from __future__ import annotations

import json
import netrc
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nanogpt_core.errors import ConfigError, TrainingError, require_extra
from nanogpt_core.files import write_text_atomic
from nanogpt_core.train.run_log import MetricSink

TRACKERS = ("tensorboard", "wandb", "trackio")
PROJECT = "nanogpt"  # the wandb / trackio project unless WANDB_PROJECT / TRACKIO_PROJECT name another
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
WANDB_ID_FILE = "nanogpt-run-id"  # inside RUN/wandb/: a resumed run logs to the same wandb run


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics record as tracker scalars: every number under `<type>/<field>` (None, e.g. MFU on CPU, is left out)."""
    kind = record.get("type", "train")
    return {f"{kind}/{key}": float(value) for key, value in record.items()
            if key not in ("type", "step") and isinstance(value, (int, float)) and not isinstance(value, bool)}


def samples_markdown(samples: list[tuple[str, str]]) -> str:
    """Samples as a markdown table (what TensorBoard's text panel renders): prompt | completion."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "↵")

    return "| prompt | completion |\n|---|---|\n" + "".join(f"| {cell(p)} | {cell(c)} |\n" for p, c in samples)


def tracker_sinks(names: Sequence[str] | None, run_dir: str | Path, *, resuming: bool = False) -> list[MetricSink]:
    """One sink per tracker named (each once, in order); ConfigError for an unknown name, MissingExtraError for a
    tracker whose package is not installed. Nothing is written until the run's config arrives."""
    sinks: list[MetricSink] = []
    for name in dict.fromkeys(names or ()):
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker {name!r} in --log; choose from {', '.join(TRACKERS)}.")
        sinks.append(_SINKS[name](Path(run_dir), resuming=resuming))
    return sinks


class TensorBoardSink:
    """Event files in RUN/tensorboard/, written with torch's SummaryWriter."""

    def __init__(self, run_dir: Path, *, resuming: bool = False) -> None:
        require_extra("tensorboard", "tensorboard", "--log tensorboard")
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package checked above

        self._writer_class = SummaryWriter
        self.log_dir = run_dir / TENSORBOARD_DIR
        self._writer = None
        self._config: dict[str, Any] | None = None

    def _open(self, step: int):
        """The writer, made at the first number: `purge_step` hides events a crashed run logged after the step it
        resumes from (TensorBoard's own way), so the plots hold each step once, as metrics.jsonl does."""
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(self.log_dir), purge_step=step)
            if self._config is not None:
                text = "```json\n" + json.dumps(self._config, indent=2, sort_keys=True, default=str) + "\n```"
                self._writer.add_text("config", text, global_step=step)
        return self._writer

    def start(self, config: dict[str, Any]) -> None:
        self._config = config

    def record(self, record: dict[str, Any]) -> None:
        writer = self._open(record["step"])
        for tag, value in scalars(record).items():
            writer.add_scalar(tag, value, global_step=record["step"])

    def samples(self, step: int, samples: list[tuple[str, str]]) -> None:
        self._open(step).add_text("samples", samples_markdown(samples), global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _HostedRun:
    """What the wandb and trackio sinks share: a run object whose `log(numbers, step=)` also takes a `Table`."""

    def __init__(self, module, run_dir: Path, resuming: bool) -> None:
        self._module = module
        self.run_dir = run_dir
        self.resuming = resuming
        self._run = None

    def record(self, record: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.log(scalars(record), step=record["step"])

    def samples(self, step: int, samples: list[tuple[str, str]]) -> None:
        if self._run is not None:
            table = self._module.Table(columns=["prompt", "completion"], data=[list(s) for s in samples])
            self._run.log({"samples": table}, step=step)

    def close(self) -> None:
        if self._run is not None:
            self._finish()
            self._run = None

    def _finish(self) -> None:
        self._run.finish()


class WandbSink(_HostedRun):
    """A Weights & Biases run in RUN/wandb/: online when there are credentials, offline otherwise (never a prompt)."""

    def __init__(self, run_dir: Path, *, resuming: bool = False) -> None:
        super().__init__(require_extra("wandb", "wandb", "--log wandb"), run_dir, resuming)

    def start(self, config: dict[str, Any]) -> None:
        folder = self.run_dir / WANDB_DIR
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / WANDB_ID_FILE
        if self.resuming and id_file.is_file():
            run_id = id_file.read_text(encoding="utf-8").strip()
        else:
            run_id = secrets.token_hex(6)  # wandb run ids are short lowercase alphanumerics
            write_text_atomic(id_file, run_id + "\n")
        # WANDB_MODE, when set, is wandb's own choice; otherwise offline unless someone logged in, so a run never
        # stops at a login prompt. Offline runs upload later with `wandb sync`.
        mode = None if os.environ.get("WANDB_MODE") else ("online" if wandb_credentials() else "offline")
        try:
            self._run = self._module.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=self.run_dir.name,
                                          id=run_id, resume="allow", dir=str(self.run_dir), config=config, mode=mode)
        except Exception as exc:  # wandb's errors are its own classes; the run has not started, nothing is lost
            raise TrainingError(f"--log wandb could not start a run ({type(exc).__name__}: {exc}); run "
                                f"`wandb login`, or set WANDB_MODE=offline.") from exc


def wandb_credentials() -> bool:
    """An API key in the environment, or one `wandb login` saved in ~/.netrc for the configured host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class TrackioSink(_HostedRun):
    """A trackio run in its local store (TRACKIO_DIR); `trackio show` opens the dashboard."""

    def __init__(self, run_dir: Path, *, resuming: bool = False) -> None:
        super().__init__(require_extra("trackio", "trackio", "--log trackio"), run_dir, resuming)

    def start(self, config: dict[str, Any]) -> None:
        try:
            self._run = self._module.init(project=os.environ.get("TRACKIO_PROJECT", PROJECT),
                                          name=self.run_dir.name, config=config,
                                          resume="allow" if self.resuming else "never", embed=False)
        except Exception as exc:  # trackio's errors are its own classes; the run has not started, nothing is lost
            raise TrainingError(f"--log trackio could not start a run ({type(exc).__name__}: {exc}).") from exc

    def _finish(self) -> None:
        self._module.finish()  # trackio.finish also forgets the run: its exit hook will not finish it twice


_SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "trackio": TrackioSink}
