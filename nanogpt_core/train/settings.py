"""What decides a training run (`TrainSettings`), what it returns (`TrainResult`), and the arithmetic that follows
from the settings: gradient accumulation, evaluation batches, the model's shape, and the settings of a resumed run.

Names and meanings are nanochat's `base_train` flags, so the seed's command runs verbatim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nanogpt_core.errors import CheckpointError, ConfigError
from nanogpt_core.files import RUNS_DIR
from nanogpt_core.io.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, run_dir_of
from nanogpt_core.model.config import GPTConfig

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
    # where and how
    data: str | None = None
    stream: bool | None = None  # read the data piece by piece (True) or into memory (False); None: stream above 64 MB
    shuffle: bool = True  # documents in a seeded new order every epoch (benchmarks/data_order.py measures why)
    tokenizer: str | None = None
    out: str | None = None
    device: str = "auto"
    seed: int = 42
    compile: bool = False
    debug: str | None = None

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
    for name, value in overrides.items():
        if name in RESUME_FIXED and comparable(name, value) != comparable(name, getattr(settings, name)):
            raise CheckpointError(f"--{name.replace('_', '-')} {value} differs from the checkpoint's "
                                  f"{getattr(settings, name)}; a resumed run keeps the model's shape and data "
                                  f"(drop the flag, or start a new run).")
        setattr(settings, name, value)
    if "out" not in overrides:
        settings.out = str(run_dir_of(ckpt.path))  # continue in the run's own folder, wherever it was started from
    if "debug" not in overrides:
        settings.debug = None  # the trace is for the run it was asked for, not for every resume of it
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
