"""Experiments: train several variants of the GPT on the same data, batches and seeds, and compare the outcomes.

    result = run_experiment({"base": "reference", "swiglu": "swiglu:mlp"}, steps=200, seeds=3, out="runs/exp")
    result.summaries[1].val_bpb_mean       # final validation bits per byte, mean over seeds
    result.write("runs/exp")               # results.json, results.md, loss_curves.png

Each (variant, seed) is one ordinary training run (`nanogpt_core.train.loop.train`) in OUT/runs/<variant>/seed<k>,
so every run has its own metrics, samples and checkpoint. What is shared is what makes the comparison fair: every
run reads the same documents through the same tokenizer (trained once, by the first run) in the same order, takes
the same number of steps with the same batch size and schedule, and the k-th seed is the same number for every
variant. Only the components differ.

A variant is a name and a `--use` spec ("reference", "swiglu:mlp", "swiglu,layernorm"); the first one is the
baseline the table's delta column is measured against. This compares *designs*: there is no pass/fail verdict, only
the numbers (see `nanogpt compare` for "does my component equal the reference").
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanogpt_core.compare.run import design_checks
from nanogpt_core.data.tokenizer import TOKENIZER_DIR
from nanogpt_core.device import resolve_device
from nanogpt_core.errors import ConfigError, TrainingError
from nanogpt_core.files import RUNS_DIR, save_figure, timestamped_folder, write_text_atomic
from nanogpt_core.model.registry import REFERENCE_SET
from nanogpt_core.model.use_spec import format_use, resolve_use
from nanogpt_core.train.loop import train
from nanogpt_core.train.run_log import read_metrics
from nanogpt_core.train.settings import CONFIG_FILE, TrainResult, TrainSettings

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PLOT_FILE = "loss_curves.png"
LOG_FILE = "train.log"  # each run's console output, in its own folder
DEFAULT_SEEDS = 3

Progress = Callable[[str], None]


@dataclass
class RunRecord:
    """One training run: one variant, one seed."""

    variant: str
    use: str
    seed: int
    losses: list[float]  # training loss of every step
    val_bpb: float | None  # at the last step
    first_val_bpb: float | None  # at step 0
    tokens_per_sec: float
    num_params: int
    peak_memory_bytes: int | None  # CUDA's peak allocated memory during the run; None on CPU and MPS
    train_time_s: float
    run_dir: str
    diverged: str | None = None  # the TrainingError's message when the loss became NaN/Inf; the run stopped there


@dataclass
class VariantSummary:
    """One variant over all seeds. `*_std` is the sample standard deviation (0 with a single seed); the val bpb is
    over the runs that finished, the loss curve at each step over the runs that reached it with a finite loss."""

    name: str
    use: str
    seeds: list[int]
    val_bpb_mean: float | None
    val_bpb_std: float | None
    tokens_per_sec_mean: float
    num_params: int
    peak_memory_bytes: int | None  # the largest over seeds
    mean_losses: list[float]
    std_losses: list[float]
    diverged: int = 0  # runs that stopped on a NaN/Inf loss


@dataclass
class ExperimentResult:
    variants: dict[str, str]  # name -> use spec, in the order given (the first is the baseline)
    steps: int
    seeds: list[int]
    settings: dict[str, Any]  # the TrainSettings every run shares (use, seed and out differ per run)
    device: str
    runs: list[RunRecord] = field(default_factory=list)
    summaries: list[VariantSummary] = field(default_factory=list)
    out_dir: str | None = None
    checks: dict[str, int] = field(default_factory=dict)  # variant -> design checks passed (non-reference, if asked)

    @property
    def baseline(self) -> VariantSummary:
        return self.summaries[0]

    def summary(self, name: str) -> VariantSummary:
        return next(s for s in self.summaries if s.name == name)

    def delta_bpb(self, name: str) -> float | None:
        """The variant's mean final val bpb minus the baseline's: negative is better."""
        a, b = self.summary(name).val_bpb_mean, self.baseline.val_bpb_mean
        return None if a is None or b is None else a - b

    def rows(self) -> list[dict[str, str]]:
        """The table as text cells, one row per variant (the same cells in the terminal and in results.md)."""
        rows = []
        for s in self.summaries:
            delta = self.delta_bpb(s.name)
            rows.append({
                "variant": s.name,
                "use": s.use,
                "val bpb": _bpb_cell(s),
                "Δ bpb": "" if s is self.baseline or delta is None else f"{delta:+.4f}",
                "tok/s": f"{s.tokens_per_sec_mean:,.0f}",
                "params": f"{s.num_params:,}",
                "peak memory": format_bytes(s.peak_memory_bytes),
                **({"checks": f"{self.checks[s.name]} pass" if s.name in self.checks else REFERENCE_SET}
                   if self.checks else {}),
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (a diverged run's NaN losses become the string "nan")."""
        return {"variants": self.variants, "steps": self.steps, "seeds": self.seeds, "device": self.device,
                "settings": self.settings, "summaries": [_finite(asdict(s)) for s in self.summaries],
                "runs": [_finite(asdict(r)) for r in self.runs], "checks": self.checks, "out_dir": self.out_dir}

    @classmethod
    def load(cls, out_dir: str | Path) -> ExperimentResult:
        """Read an experiment's results.json back (a notebook comparing sweeps run earlier)."""
        path = Path(out_dir) / RESULTS_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is missing or not valid JSON ({exc}); is {out_dir} an experiment folder?") \
                from exc
        return cls(data["variants"], data["steps"], data["seeds"], data["settings"], data["device"],
                   runs=[RunRecord(**_nan(r)) for r in data["runs"]],
                   summaries=[VariantSummary(**_nan(s)) for s in data["summaries"]],
                   out_dir=data["out_dir"], checks=data.get("checks", {}))

    def markdown(self) -> str:
        rows = self.rows()
        header = list(rows[0]) if rows else []
        lines = [f"# Experiment: {len(self.summaries)} variants x {len(self.seeds)} seeds, {self.steps} steps",
                 "",
                 f"Seeds {', '.join(map(str, self.seeds))} on {self.device}; final validation bits per byte as mean "
                 f"± sample std over seeds; Δ against `{self.baseline.name}`; tok/s is the mean training "
                 f"throughput; peak memory is CUDA's peak allocation (n/a on CPU)"
                 + ("; checks: the contract checks that apply to a different design, all passed before training."
                    if self.checks else "."),
                 "",
                 "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
        lines += [f"\n{r.variant} seed {r.seed} diverged: {r.diverged}" for r in self.runs if r.diverged]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """results.json, results.md and loss_curves.png in `out_dir`; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / RESULTS_JSON, "markdown": out / RESULTS_MD, "plot": out / PLOT_FILE}
        write_text_atomic(paths["json"], json.dumps(self.to_dict(), indent=2) + "\n")
        write_text_atomic(paths["markdown"], self.markdown())
        plot_loss_curves(self, paths["plot"])
        return paths


def _bpb_cell(s: VariantSummary) -> str:
    text = "n/a" if s.val_bpb_mean is None else f"{s.val_bpb_mean:.4f} ± {s.val_bpb_std:.4f}"
    return text + (f" ({s.diverged}/{len(s.seeds)} diverged)" if s.diverged else "")


# --- parsing ----------------------------------------------------------------------------------------------------


def parse_variants(items: Sequence[str]) -> dict[str, str]:
    """["base=reference", "swiglu=swiglu:mlp"] -> {"base": "reference", "swiglu": "swiglu:mlp"}, checked now so a
    typo fails before any training. A bare set name ("swiglu") is named after itself."""
    variants: dict[str, str] = {}
    for item in items:
        name, sep, spec = (part.strip() for part in item.partition("="))
        if not sep:
            spec = name  # "--variant swiglu": the set's name names the variant
        if not name or not spec:
            raise ConfigError(f"--variant {item!r} is incomplete; write NAME=USE, e.g. swiglu=swiglu:mlp.")
        if not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ConfigError(f"--variant name {name!r} may use letters, digits and - _ . only (it names a folder); "
                              f"write NAME=USE, e.g. swiglu=swiglu:mlp.")
        if name in variants:
            raise ConfigError(f"--variant name {name!r} is given twice; give each variant its own name.")
        variants[name] = spec
    return variants


def _check_variants(variants: Mapping[str, Any]) -> dict[str, str]:
    if len(variants) < 1:
        raise ConfigError("an experiment needs at least one --variant (e.g. --variant base=reference).")
    checked = {}
    for name, spec in variants.items():
        checked[name] = format_use(resolve_use(spec))  # raises UseSpecError naming the bad set or component
    return checked


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}.")
        return list(range(seeds))
    seed_list = [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds must be distinct and at least one, got {seed_list}.")
    return seed_list


# --- running ----------------------------------------------------------------------------------------------------


def run_experiment(
    variants: Mapping[str, Any],
    steps: int,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    *,
    out: str | Path | None = None,
    check: bool = False,
    progress: Progress | None = None,
    **settings: Any,
) -> ExperimentResult:
    """Train every variant once per seed (see the module docstring) and write the results into `out`.

    `variants`: {name: use spec}, the first is the baseline. `seeds`: a count (seeds 0..n-1) or the seeds
    themselves. `check`: first run the contract checks that apply to a different design on every variant
    (`nanogpt_core.compare.design_checks`) and refuse to train one that breaks them (a non-causal attention would
    "win" by reading the future). Other keyword arguments are `TrainSettings` fields shared by every run (depth,
    device, data, tokenizer, device_batch_size, total_batch_size, max_seq_len, eval_tokens, ...); `num_iterations`
    is `steps`.
    """
    say = progress or (lambda message: None)
    chosen = _check_variants(variants)
    seed_list = _seed_list(seeds)
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}.")
    for reserved in ("use", "seed", "out", "num_iterations", "debug"):
        if reserved in settings:
            raise ConfigError(f"run_experiment sets {reserved!r} itself for every run; do not pass it.")
    unknown = sorted(set(settings) - set(TrainSettings().to_dict()))
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; see nanogpt_core.train.settings."
                          f"TrainSettings.")
    base = TrainSettings(num_iterations=steps, **{"eval_every": -1, "save_every": -1, **settings})
    out_dir = Path(out) if out is not None else timestamped_folder(RUNS_DIR, prefix="experiment-")
    if (out_dir / "runs").is_dir() and any((out_dir / "runs").iterdir()):
        raise ConfigError(f"{out_dir} already holds an experiment's runs; choose another --out (or delete it).")
    device = str(resolve_device(base.device))  # "auto" resolved once, so the table says where it ran
    result = ExperimentResult(chosen, steps, seed_list, base.to_dict(), device, out_dir=str(out_dir))
    if check:
        result.checks = check_variants(chosen, say)
    tokenizer = base.tokenizer
    total, done = len(chosen) * len(seed_list), 0
    for name, spec in chosen.items():
        for seed in seed_list:
            done += 1
            say(f"[{done}/{total}] {name} ({spec}), seed {seed}")
            run_dir = out_dir / "runs" / name / f"seed{seed}"
            run_settings = TrainSettings.from_dict({**base.to_dict(), "use": spec, "seed": seed,
                                                    "out": str(run_dir), "tokenizer": tokenizer})
            record = _train_quietly(name, spec, run_settings)
            if tokenizer is None:  # the first run trained one: every later run reads the same tokens
                tokenizer = str(run_dir / TOKENIZER_DIR)
            result.runs.append(record)
            say(f"      val bpb {_fmt(record.val_bpb)}, {record.tokens_per_sec:,.0f} tok/s"
                + (" (diverged)" if record.diverged else ""))
    result.summaries = [summarize(name, spec, [r for r in result.runs if r.variant == name])
                        for name, spec in chosen.items()]
    result.write(out_dir)
    return result


def check_variants(variants: Mapping[str, str], say: Progress) -> dict[str, int]:
    """The design checks of every variant: {name: checks passed}; ConfigError naming every failure otherwise."""
    passed, problems = {}, []
    for name, spec in variants.items():
        if spec == REFERENCE_SET:
            continue  # the reference is what the checks are measured against
        say(f"checking {name} ({spec})")
        results = design_checks(spec)
        failed = [r for r in results if r.passed is not True]
        problems += [f"{name}: {r.component} {r.name}: {r.diagnosis or r.status}" for r in failed]
        passed[name] = len(results) - len(failed)
    if problems:
        raise ConfigError("a variant breaks the component contracts, so its numbers would mean nothing ("
                          + "; ".join(problems) + "); fix it, or run without the checks (--no-check).")
    return passed


def _train_quietly(name: str, spec: str, settings: TrainSettings) -> RunRecord:
    """One training run, its console output in RUN/train.log instead of the experiment's. A run whose loss becomes
    NaN/Inf is a result too (a variant that diverges at this learning rate): it is recorded from its metrics file,
    and the experiment goes on."""
    device = resolve_device(settings.device)
    run_dir = Path(settings.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with open(run_dir / LOG_FILE, "w", encoding="utf-8") as log:
        try:
            trained = train(settings, stream=log, progress_bar=False)
        except TrainingError as exc:
            log.write(f"Error: {exc}\n")
            trained, diverged = _diverged_result(run_dir), str(exc)
        else:
            diverged = None
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return RunRecord(name, spec, settings.seed, list(trained.losses), trained.val_bpb, trained.first_val_bpb,
                     trained.tokens_per_sec, trained.num_params, peak, trained.train_time_s, str(run_dir), diverged)


def _diverged_result(run_dir: Path) -> TrainResult:
    """What a run that stopped on a non-finite loss got to: its finite losses from metrics.jsonl, then NaN."""
    records = [r for r in read_metrics(run_dir) if r.get("type") == "train"]
    config = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    evals = [r for r in read_metrics(run_dir) if r.get("type") == "eval"]
    train_time = sum(r["dt_ms"] for r in records) / 1000
    tokens = len(records) * config["training"]["total_batch_size"]
    return TrainResult(run_dir, None, len(records), None, evals[0]["val_bpb"] if evals else None,
                       losses=[r["loss"] for r in records] + [float("nan")], train_time_s=train_time,
                       tokens_per_sec=tokens / train_time if train_time else 0.0, num_params=config["num_params"])


def summarize(name: str, spec: str, runs: list[RunRecord]) -> VariantSummary:
    """Mean and sample std over seeds of the final val bpb and of the loss at every step."""
    bpbs = [r.val_bpb for r in runs if r.val_bpb is not None and not r.diverged]
    steps = max((len(r.losses) for r in runs), default=0)
    by_step = [[r.losses[i] for r in runs if i < len(r.losses) and math.isfinite(r.losses[i])] for i in range(steps)]
    by_step = by_step[: next((i for i, v in enumerate(by_step) if not v), steps)]  # until no run has a finite loss
    peaks = [r.peak_memory_bytes for r in runs if r.peak_memory_bytes is not None]
    return VariantSummary(
        name=name, use=spec, seeds=[r.seed for r in runs],
        val_bpb_mean=statistics.fmean(bpbs) if bpbs else None,
        val_bpb_std=_std(bpbs) if bpbs else None,
        tokens_per_sec_mean=statistics.fmean(r.tokens_per_sec for r in runs) if runs else 0.0,
        num_params=runs[0].num_params if runs else 0,
        peak_memory_bytes=max(peaks) if peaks else None,
        mean_losses=[statistics.fmean(v) for v in by_step],
        std_losses=[_std(v) for v in by_step],
        diverged=sum(1 for r in runs if r.diverged),
    )


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


# --- output -----------------------------------------------------------------------------------------------------


def format_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _finite(data: Any) -> Any:
    """JSON has no NaN/Inf: a diverged run's losses are written as strings."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    return data


def _nan(data: Any) -> Any:
    """The inverse of `_finite`: "nan"/"inf" strings in number lists back to floats."""
    if isinstance(data, dict):
        return {k: _nan(v) for k, v in data.items()}
    if isinstance(data, list):
        return [float(v) if v in ("nan", "inf", "-inf") else _nan(v) for v in data]
    return data


def plot_loss_curves(result: ExperimentResult, out_path: str | Path) -> Path:
    """One axis, one line per variant: the mean training loss over seeds, with a band of ± one std."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for s in result.summaries:
        steps = range(1, len(s.mean_losses) + 1)
        mean = s.mean_losses
        line, = ax.plot(steps, mean, linewidth=1.8, label=f"{s.name} ({s.use})")
        if len(s.seeds) > 1:
            lo = [m - d for m, d in zip(mean, s.std_losses)]
            hi = [m + d for m, d in zip(mean, s.std_losses)]
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(title=f"training loss, mean ± std over {len(result.seeds)} seed(s)", xlabel="step",
           ylabel="cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out_path)
