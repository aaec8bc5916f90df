"""What decides a training run (`TrainSettings`), what it returns (`TrainResult`), the check of the settings that
runs before any work (`validate_settings`), and the arithmetic that follows from them: gradient accumulation,
evaluation batches, the model's shape, and the settings of a resumed run.

Names and meanings are nanochat's `base_train` flags, so the seed's command runs verbatim.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from nanogpt_core.data.tokenizer import DEFAULT_VOCAB_SIZE, MIN_VOCAB_SIZE
from nanogpt_core.device import available_memory
from nanogpt_core.errors import CheckpointError, ConfigError
from nanogpt_core.files import RUNS_DIR
from nanogpt_core.io.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, run_dir_of
from nanogpt_core.model import trace
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.memory import fits, memory_error, training_need
from nanogpt_core.model.use_spec import resolve_use

CONFIG_FILE = "config.json"  # the run folder's record of its model, settings and machine


@dataclass
class TrainSettings:
    """Everything that decides a run; saved in config.json and in every checkpoint.

    Names and meanings are nanochat's `base_train` flags. The defaults are the CPU demo: a depth-2 model that trains
    in about five minutes on two CPU cores and visibly learns (see the README for measured figures).
    """

    # model
    depth: int = 2
    max_seq_len: int = 256
    n_embd: int | None = None  # overrides of the sizes GPTConfig.from_depth derives
    n_head: int | None = None
    n_kv_head: int | None = None
    vocab_size: int | None = None  # for a tokenizer trained by this run; None: the tokenizer's default
    use: str | None = None
    # batch and horizon
    device_batch_size: int = 4  # x 256 x 4096 vocab: the logits stay under glibc's 32 MB mmap threshold on CPU
    total_batch_size: int = 4096
    num_iterations: int = 450  # ~0.55 s a step on 2 idle CPU cores (fp32 Muon): about 4-5 minutes in all
    # a wall-clock budget for the whole run (--time 5m): measured and planned by `train.budget`, which then
    # chooses the settings it names in PLANNED, except those in time_budget_fixed (the flags given)
    time_budget: float | None = None  # seconds
    time_budget_fixed: list[str] = field(default_factory=list)
    # optimisation (nanochat's defaults)
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    matrix_lr: float = 0.02
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_ratio: float = 0.0
    warmdown_ratio: float = 0.2
    final_lr_frac: float = 0.0
    # evaluation, samples, checkpoints
    eval_every: int = 50
    eval_tokens: int = 8192
    sample_every: int = -1
    save_every: int = -1
    core_metric_every: int = -1  # nanochat's CORE every N steps and at the end (-1: never); needs the eval bundle
    core_metric_max_per_task: int = 500  # items per CORE task during training (nanochat's default; -1: all)
    inspect_every: int = -1  # save the attention grid of inspect_prompt every N steps (and at 0 and the end)
    inspect_prompt: str | None = None  # None: nanogpt_core.inspection.report.DEFAULT_PROMPT
    # where and how
    data: str | None = None
    stream: bool | None = None  # read the data piece by piece (True) or into memory (False); None: stream above 64 MB
    shuffle: bool = True  # documents in a seeded new order every epoch (benchmarks/data_order.py measures why)
    tokenizer: str | None = None
    out: str | None = None
    device: str = "auto"
    seed: int = 42
    compile: bool = False
    bf16: bool | None = None  # the forward under bf16 autocast; None: on a CUDA GPU with bf16, else off
    debug: str | None = None  # a --debug mode: "flow", "stats", "inside" or "inside,stats"
    debug_layer: int | None = None  # --debug-layer N: the trace of layer N only (alone, it implies --debug)
    log: list[str] = field(default_factory=list)  # experiment trackers: "tensorboard", "wandb", "trackio"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def optimizer_lrs(self) -> dict[str, float]:
        """The keyword arguments of the optimizer component's `setup_optimizers`."""
        return {"embedding_lr": self.embedding_lr, "unembedding_lr": self.unembedding_lr,
                "matrix_lr": self.matrix_lr, "weight_decay": self.weight_decay}


# Settings a resumed run must share with its checkpoint: they fix the weights' shapes or the data the loader indexes.
RESUME_FIXED = ("depth", "max_seq_len", "n_embd", "n_head", "n_kv_head", "vocab_size", "data", "tokenizer", "stream",
                "shuffle")
PATH_SETTINGS = ("data", "tokenizer", "out")


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path | None
    step: int
    val_bpb: float | None
    first_val_bpb: float | None
    losses: list[float] = field(default_factory=list)  # raw training loss of each step taken in this call
    samples: list[tuple[str, str]] = field(default_factory=list)
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    tokens_per_sec: float = 0.0
    num_params: int = 0
    peak_memory_mib: float | None = None  # CUDA: torch.cuda.max_memory_allocated of this rank; None elsewhere
    weights_digest: str | None = None  # sha256 of the final weights, checked equal on every rank


# --- checked before any work ------------------------------------------------------------------------------------

# Seeds go to torch.manual_seed, which takes an unsigned 64-bit number (and Python's random, which takes any).
MAX_SEED = 2**64 - 1
LEARNING_RATES = ("embedding_lr", "unembedding_lr", "matrix_lr")
FRACTIONS = ("warmup_ratio", "warmdown_ratio", "final_lr_frac")  # of the steps, or of the learning rate
EVERY = ("eval_every", "sample_every", "save_every", "core_metric_every", "inspect_every")  # N > 0: every N steps
# (0 or -1: only at the end, for eval/sample/save; never, for CORE and inspect)


def validate_settings(settings: TrainSettings, world_size: int = 1, start_step: int | None = None) -> GPTConfig:
    """Refuse, in one line naming the flag and a value that works, any setting the run could not use; returns the
    model's shape (with the vocabulary a tokenizer will most likely have). Runs before any work (no folder, no data,
    no tokenizer), so a typo costs nothing, and a NaN or an out-of-range ratio never reaches a component, where it
    would surface as that component's error.

    `start_step` is the step of the checkpoint a run resumes from: the run must have steps left to take.
    """
    defaults = TrainSettings()
    for name in LEARNING_RATES + ("weight_decay", "grad_clip"):
        value = getattr(settings, name)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"--{_dashed(name)} must be a finite number >= 0, got {value!r}; try "
                              f"--{_dashed(name)} {getattr(defaults, name)} (the default).")
    for name in FRACTIONS:
        value = getattr(settings, name)
        if not _is_number(value) or not 0 <= value <= 1:
            raise ConfigError(f"--{_dashed(name)} is a fraction and must be between 0 and 1, got {value!r}; try "
                              f"--{_dashed(name)} {getattr(defaults, name)} (the default).")
    for name, low in (("num_iterations", 0), ("eval_tokens", 1), ("max_seq_len", 1), ("device_batch_size", 1)):
        value = getattr(settings, name)
        if not _is_int(value) or value < low:
            raise ConfigError(f"--{_dashed(name)} must be an integer >= {low}, got {value!r}; try "
                              f"--{_dashed(name)} {getattr(defaults, name)} (the default).")
    for name in EVERY:
        value = getattr(settings, name)
        if not _is_int(value) or value < -1:
            raise ConfigError(f"--{_dashed(name)} must be a number of steps, or -1 for only at the end; got "
                              f"{value!r}.")
    check_seed(settings.seed)
    _check_time_budget(settings, start_step)
    if settings.vocab_size is not None and (not _is_int(settings.vocab_size) or settings.vocab_size < MIN_VOCAB_SIZE):
        raise ConfigError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte tokens + the special tokens), "
                          f"got {settings.vocab_size!r}; try --vocab-size {DEFAULT_VOCAB_SIZE}.")
    grad_accum_steps(settings.total_batch_size, settings.device_batch_size, settings.max_seq_len, world_size)
    if start_step is not None and settings.num_iterations <= start_step:
        finished = " (the run is finished)" if settings.num_iterations == start_step else ""
        run = shlex.quote(settings.out) if settings.out else "RUN"
        raise ConfigError(f"the checkpoint is at step {start_step} and --num-iterations is {settings.num_iterations}"
                          f"{finished}, so no step is left to train; train further with a larger --num-iterations, "
                          f"e.g. nanogpt train --resume {run} --num-iterations {2 * max(start_step, 1)}, or sample "
                          f"it with: nanogpt sample {run}")
    if settings.debug_layer is not None and not settings.debug:
        settings.debug = "flow"  # --debug-layer alone: the trace of that layer
    settings.debug = trace.normalize_mode(settings.debug)
    resolve_use(settings.use)
    config = model_config(settings, settings.vocab_size or DEFAULT_VOCAB_SIZE)
    trace.check_layer(settings.debug_layer, config.n_layer)
    return config


MIN_BUDGET_S = 10.0  # --time: less leaves nothing to train after measuring the machine


def _check_time_budget(settings: TrainSettings, start_step: int | None) -> None:
    """--time is a positive number of seconds that plans a new run; the number of steps is then the plan's."""
    if settings.time_budget is None:
        return
    if not _is_number(settings.time_budget) or not settings.time_budget >= MIN_BUDGET_S:
        raise ConfigError(f"--time must be at least {MIN_BUDGET_S:g} seconds, got {settings.time_budget!r}; try "
                          f"--time 5m.")
    unknown = sorted(set(settings.time_budget_fixed) - {f.name for f in fields(TrainSettings)})
    if unknown:
        raise ConfigError(f"time_budget_fixed lists settings given explicitly; {unknown} are not settings.")
    if "num_iterations" in settings.time_budget_fixed:
        raise ConfigError("--time chooses the number of steps itself; give --time or --num-iterations, not both.")


def check_training_memory(settings: TrainSettings, config: GPTConfig, device: torch.device, copies: int = 1,
                          resuming: bool = False) -> None:
    """Refuse a run whose model, gradients, optimizer state and activations cannot fit in the device's free memory
    (`model.memory`), with the figure and the largest setting that fits, before anything is allocated.
    `copies`: processes of this run sharing the memory (CPU ranks on one machine)."""
    free = available_memory(device)
    need = training_need(config, settings.device_batch_size, device)
    if fits(need, free, copies):
        return
    smaller = [b for b in range(settings.device_batch_size - 1, 0, -1) if settings.device_batch_size % b == 0]
    batch = next((b for b in smaller if fits(training_need(config, b, device), free, copies)), None)
    if batch is not None:
        fix = (f"use --device-batch-size {batch} (gradient accumulation keeps the total batch of "
               f"{settings.total_batch_size:,} tokens)")
    elif resuming:
        fix = "this checkpoint's model needs a device with more memory (or train a smaller model)"
    else:
        depth = next((d for d in range(min(settings.depth, config.n_layer) - 1, 0, -1)
                      if _fits_at_depth(settings, config, d, device, free, copies)), None)
        fix = f"use a smaller model, e.g. --depth {depth}" if depth else "use a device with more memory"
    shape = f"depth {config.n_layer}, width {config.n_embd}, context {config.sequence_len}, vocab {config.vocab_size}"
    raise memory_error(need, free, f"training this model ({shape}, {settings.device_batch_size} sequences a "
                                   f"micro-batch)", fix, copies)


def _fits_at_depth(settings: TrainSettings, config: GPTConfig, depth: int, device: torch.device,
                   free: tuple[int, str] | None, copies: int) -> bool:
    """Whether the same run fits at another depth (never where explicit --n-head etc. do not divide its width)."""
    try:
        smaller = model_config(TrainSettings.from_dict({**settings.to_dict(), "depth": depth}), config.vocab_size)
    except ConfigError:
        return False
    return fits(training_need(smaller, settings.device_batch_size, device), free, copies)


def check_seed(seed: Any) -> None:
    """A seed torch's generator takes (Python's random takes any), or a ConfigError saying which do."""
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer from 0 to 2**64 - 1 (what torch's generator takes), got "
                          f"{seed!r}; try --seed 42.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dashed(name: str) -> str:
    return name.replace("_", "-")


# --- arithmetic of the settings -----------------------------------------------------------------------------------


def grad_accum_steps(total_batch_size: int, device_batch_size: int, max_seq_len: int, world_size: int = 1) -> int:
    """How many micro-batches make one step of total_batch_size tokens (ConfigError with the fix otherwise)."""
    per_fwdbwd = device_batch_size * max_seq_len * world_size
    if device_batch_size < 1 or max_seq_len < 1:
        raise ConfigError("--device-batch-size and --max-seq-len must be positive.")
    if total_batch_size < per_fwdbwd or total_batch_size % per_fwdbwd:
        lower = max(per_fwdbwd, total_batch_size // per_fwdbwd * per_fwdbwd)
        raise ConfigError(
            f"--total-batch-size {total_batch_size} must be a multiple of device_batch_size x max_seq_len x "
            f"world_size = {device_batch_size} x {max_seq_len} x {world_size} = {per_fwdbwd}; "
            f"use --total-batch-size {lower} (or {lower + per_fwdbwd})."
        )
    return total_batch_size // per_fwdbwd


def eval_steps(eval_tokens: int, device_batch_size: int, max_seq_len: int, world_size: int = 1) -> int:
    """nanochat's eval_tokens // tokens per forward, but never 0 (the seed's --eval_tokens=512 still evaluates)."""
    return max(1, eval_tokens // (device_batch_size * max_seq_len * world_size))


def model_config(settings: TrainSettings, vocab_size: int) -> GPTConfig:
    return GPTConfig.from_depth(settings.depth, sequence_len=settings.max_seq_len, vocab_size=vocab_size,
                                n_embd=settings.n_embd, n_head=settings.n_head, n_kv_head=settings.n_kv_head)


# --- resuming ------------------------------------------------------------------------------------------------------


def find_resume_checkpoint(resume: str | Path | None, out: str | None,
                           runs_dir: str | Path = RUNS_DIR) -> Checkpoint | None:
    """`--resume DIR` -> its checkpoint; `--resume auto` -> the --out run's latest (or the newest run under
    `runs_dir`); None when there is nothing to resume (auto then starts fresh). Loaded once, on the CPU: the
    training loop copies the tensors to its device."""
    if not resume:
        return None
    if str(resume) != "auto":
        return load_checkpoint(resume)
    if out is not None:
        found = latest_checkpoint(out) if Path(out).is_dir() else None
        return load_checkpoint(found) if found is not None else None
    runs = [p for p in Path(runs_dir).glob("*") if p.is_dir() and _latest_or_none(p) is not None]
    if not runs:
        return None
    newest = max(runs, key=lambda p: (p / "checkpoints" / "latest").stat().st_mtime)
    return load_checkpoint(latest_checkpoint(newest))


def _latest_or_none(run_dir: Path) -> Path | None:
    try:
        return latest_checkpoint(run_dir)
    except CheckpointError:
        return None


def resume_settings(checkpoint: Checkpoint | str | Path, overrides: dict[str, Any]) -> TrainSettings:
    """The checkpoint's settings with the flags given on the command line on top (e.g. more --num-iterations).

    Flags that would change the weights' shapes or the data are refused: a resumed run continues the same model.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, load_optimizer=False)
    saved = ckpt.state.get("settings")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{ckpt.path} has no training state (state.json with settings); it cannot be resumed.")
    settings = TrainSettings.from_dict(saved)
    if overrides.get("time_budget") is not None:
        raise CheckpointError("--time plans a new run; a resumed run trains the steps its checkpoint planned (drop "
                              "--time, or train further with a larger --num-iterations).")
    for name, value in overrides.items():
        if name in RESUME_FIXED and comparable(name, value) != comparable(name, getattr(settings, name)):
            raise CheckpointError(f"--{name.replace('_', '-')} {value} differs from the checkpoint's "
                                  f"{getattr(settings, name)}; a resumed run keeps the model's shape and data "
                                  f"(drop the flag, or start a new run).")
        setattr(settings, name, value)
    if "out" not in overrides:
        settings.out = str(run_dir_of(ckpt.path))  # continue in the run's own folder, wherever it was started from
    for name in ("debug", "debug_layer"):
        if name not in overrides:
            setattr(settings, name, None)  # the trace is for the run it was asked for, not for every resume of it
    return settings


def comparable(name: str, value: Any) -> Any:
    """Paths compare by where they point, so `--data corpus.txt` matches the absolute path a checkpoint keeps."""
    if name in PATH_SETTINGS and value is not None:
        return str(Path(value).expanduser().resolve())
    return value


def saved_settings(settings: TrainSettings) -> dict[str, Any]:
    """Settings as saved: path settings made absolute, so a resume from another folder finds the same files."""
    saved = settings.to_dict()
    for name in PATH_SETTINGS:
        saved[name] = comparable(name, saved[name])
    return saved
