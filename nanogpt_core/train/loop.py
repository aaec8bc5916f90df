"""The training loop: nanochat's `base_train`, for a GPT assembled from any mix of implementations.

    settings = TrainSettings(depth=2, num_iterations=300)
    result = train(settings)             # -> TrainResult(run_dir, checkpoint, val_bpb, ...)

One step: `grad_accum_steps` micro-batches of device_batch_size x max_seq_len tokens, each loss divided by
grad_accum_steps so the gradients add up to the mean over total_batch_size tokens; clip; set every group's lr to
initial_lr x the schedule's multiplier and Muon's momentum to its warm-up value; step every optimizer; zero grads.
Around the steps: val bits per byte at step 0, every eval_every steps and at the end; greedy samples from fixed
prompts every sample_every steps and at the end; checkpoints every save_every steps, at the end and on Ctrl-C.

A run is a folder (default runs/<timestamp>): config.json, metrics.jsonl, samples.txt, loss.png, tokenizer/ and
checkpoints/. Resuming restores weights, optimizer state, the loader's position and the RNG, so on CPU a resumed run
reproduces the losses of an uninterrupted one exactly.

Under `torchrun --nproc_per_node=N -m nanogpt_cli train` each process runs this loop as one rank of a data-parallel
job (nanogpt_core.train.distributed, docs/distributed.md): DDP averages the gradients, the loss and bpb are combined over
ranks, and rank 0 alone logs, samples and saves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from nanogpt_core.device import autocast_context, configure_device, peak_flops, resolve_device, synchronize
from nanogpt_core.errors import CheckpointError, ConfigError, TrainingError
from nanogpt_core.io.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    load_optimizer_states,
    load_tokenizer,
    resolve_checkpoint,
    rng_state,
    run_dir_of,
    save_checkpoint,
    set_rng_state,
)
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.train.distributed import (
    Ranks,
    any_rank,
    barrier,
    broadcast_from_main,
    check_every_parameter_used,
    data_parallel,
    mean_over_ranks,
    process_group,
    rank_device,
    ranks_with_other_weights,
)
from nanogpt_core.train.run_log import RunLog, read_metrics, truncate_metrics
from nanogpt_core.train.sampling import SAMPLE_MAX_TOKENS, SAMPLE_PROMPTS, complete
from nanogpt_core.train.schedule import lr_multiplier, muon_momentum

RUNS_DIR = "runs"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
SMOOTHING = 0.9  # EMA factor of the logged loss, as nanochat's


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


# Settings a resumed run must share with its checkpoint: they fix the weights' shapes or the data the loader indexes.
RESUME_FIXED = ("depth", "max_seq_len", "n_embd", "n_head", "n_kv_head", "vocab_size", "data", "tokenizer")
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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: the run saved a checkpoint at a step boundary (`checkpoint`, None if it could not) and stopped."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step
        self.checkpoint = checkpoint


# --- small pure pieces ------------------------------------------------------------------------------------------


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


def is_muon(optimizer: torch.optim.Optimizer) -> bool:
    return "muon" in type(optimizer).__name__.lower()


def apply_schedule(optimizers: list[torch.optim.Optimizer], step: int, settings: TrainSettings) -> float:
    """Set every group's lr (and Muon's momentum) for `step`; returns the lr multiplier."""
    lrm = lr_multiplier(step, settings.num_iterations, settings.warmup_ratio, settings.warmdown_ratio,
                        settings.final_lr_frac)
    momentum = muon_momentum(step)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if is_muon(opt) and "momentum" in group:
                group["momentum"] = momentum
    return lrm


def accumulate_gradients(model, loader, accum: int, autocast=None) -> float:
    """Forward and backward `accum` micro-batches; the gradients sum to those of the mean loss over all of them.

    Each micro-batch loss is divided by `accum` because backward() adds into .grad: the sum of accum means / accum
    is the mean over the whole batch (every micro-batch has the same number of tokens). Returns that mean loss
    (this rank's; the loop averages it over ranks).

    `model` may be wrapped in DistributedDataParallel: its backward then all-reduces (averages) the gradients over
    ranks. Doing that after every micro-batch would move the gradients accum times a step for nothing, so all but
    the last micro-batch run under `no_sync()` and only the last backward averages what has accumulated.
    """
    losses = []
    for i in range(accum):
        x, y = loader.next_batch()
        sync = i == accum - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            with autocast if autocast is not None else contextlib.nullcontext():
                loss = model(x, y)
            losses.append(loss.detach())
            (loss / accum).backward()
    return torch.stack(losses).mean().item()


def default_run_dir(root: str | Path = RUNS_DIR) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{stamp}-{n}"
    return path


def resolve_resume(resume: str | None, out: str | None) -> Path | None:
    """`--resume DIR` -> its checkpoint; `--resume auto` -> the --out run's latest (or the newest run under runs/),
    None when there is nothing to resume (auto then starts fresh)."""
    if not resume:
        return None
    if resume != "auto":
        return resolve_checkpoint(resume)
    if out is not None:
        return latest_checkpoint(out) if Path(out).is_dir() else None
    runs = [p for p in Path(RUNS_DIR).glob("*") if p.is_dir() and _latest_checkpoint_or_none(p) is not None]
    if not runs:
        return None
    newest = max(runs, key=lambda p: (p / "checkpoints" / "latest").stat().st_mtime)
    return latest_checkpoint(newest)


def _latest_checkpoint_or_none(run_dir: Path) -> Path | None:
    try:
        return latest_checkpoint(run_dir)
    except CheckpointError:
        return None


def resume_settings(checkpoint: str | Path, overrides: dict[str, Any]) -> TrainSettings:
    """The checkpoint's settings with the flags given on the command line on top (e.g. more --num-iterations).

    Flags that would change the weights' shapes or the data are refused: a resumed run continues the same model.
    """
    folder = resolve_checkpoint(checkpoint)
    try:
        saved = json.loads((folder / "state.json").read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder} has no training state (state.json with settings); it cannot be resumed.") \
            from exc
    settings = TrainSettings.from_dict(saved)
    for name, value in overrides.items():
        if name in RESUME_FIXED and _comparable(name, value) != _comparable(name, getattr(settings, name)):
            raise CheckpointError(f"--{name.replace('_', '-')} {value} differs from the checkpoint's "
                                  f"{getattr(settings, name)}; a resumed run keeps the model's shape and data "
                                  f"(drop the flag, or start a new run).")
        setattr(settings, name, value)
    if "out" not in overrides:
        settings.out = str(run_dir_of(folder))  # continue in the run's own folder, wherever it was started from
    if "debug" not in overrides:
        settings.debug = None  # the trace is for the run it was asked for, not for every resume of it
    return settings


def _comparable(name: str, value: Any) -> Any:
    """Paths compare by where they point, so `--data corpus.txt` matches the absolute path a checkpoint keeps."""
    if name in PATH_SETTINGS and value is not None:
        return str(Path(value).expanduser().resolve())
    return value


def _absolute_paths(settings: TrainSettings) -> dict[str, Any]:
    """Settings as saved: path settings made absolute, so a resume from another folder finds the same files."""
    saved = settings.to_dict()
    for name in PATH_SETTINGS:
        saved[name] = _comparable(name, saved[name])
    return saved


def _tokens_digest(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16]


def _trace_module():
    """The optional --debug trace (another part of nanogpt); None if this install has none."""
    try:
        from nanogpt_core.model import trace
    except ImportError:
        return None
    return trace


# --- the run ----------------------------------------------------------------------------------------------------


class _StopRequest:
    """Ctrl-C during training: the first asks to stop at the next step boundary (and save), the second stops now."""

    def __init__(self, log: RunLog) -> None:
        self.requested = False
        self._log = log
        self._previous = None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._log.note("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop now).")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(
    settings: TrainSettings,
    *,
    resume: str | Path | None = None,
    ranks: Ranks | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    stream=None,
    progress_bar: bool | None = None,
) -> TrainResult:
    """Run (or continue, with `resume` = a checkpoint or run folder) one training run. See the module docstring.

    `on_step(step, record)` is called after every step (tests use it to interrupt a run at a chosen step).
    Raises TrainingInterrupted (a KeyboardInterrupt) after saving on Ctrl-C, TrainingError when the loss diverges.

    Under torchrun (WORLD_SIZE > 1 in the environment, or `ranks` given) this is one rank of a data-parallel run:
    it joins the process group for the run and leaves it at the end or on any error (see nanogpt_core.train.distributed).
    """
    wall_start = time.time()
    ranks = ranks or Ranks.from_env()
    device = rank_device(resolve_device(settings.device), ranks)
    configure_device(device)
    with process_group(ranks, device):
        return _train(settings, resume, ranks, device, on_step, stream, progress_bar, wall_start)


def _train(settings: TrainSettings, resume, ranks: Ranks, device: torch.device, on_step, stream, progress_bar,
           wall_start: float) -> TrainResult:
    from nanogpt_core.data.loader import TokenLoader, tokenize_documents
    from nanogpt_core.model.assembly import build_model, check_optimizer_coverage
    from nanogpt_core.train.bpb import evaluate_bpb

    ckpt_path = resolve_checkpoint(resume) if resume is not None else None
    run_dir = Path(settings.out) if settings.out else (run_dir_of(ckpt_path) if ckpt_path else default_run_dir())
    run_dir = Path(broadcast_from_main(str(run_dir)))  # a timestamped default is rank 0's, not each rank's clock
    if ckpt_path is None and _latest_checkpoint_or_none(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds a run with checkpoints; continue it with --resume {run_dir} "
                          f"(or --resume auto), or choose another --out.")
    log = RunLog(run_dir, settings.num_iterations, enabled=ranks.is_main, stream=stream, progress_bar=progress_bar)
    if ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    accum = grad_accum_steps(settings.total_batch_size, settings.device_batch_size, settings.max_seq_len,
                             ranks.world_size)
    if settings.num_iterations < 0:
        raise ConfigError(f"--num-iterations must be >= 0, got {settings.num_iterations}.")
    if settings.debug is not None and _trace_module() is not None:
        settings.debug = _trace_module().normalize_mode(settings.debug)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    # --- data and tokenizer ------------------------------------------------------------------------------------
    from nanogpt_core.data.corpus import load_documents, split_documents

    docs = load_documents(settings.data)
    train_docs, val_docs = split_documents(docs)
    ckpt = load_checkpoint(ckpt_path, device=device) if ckpt_path else None
    if ckpt is not None:
        tokenizer = load_tokenizer(ckpt)
    else:  # rank 0 trains (or finds) and saves the tokenizer; the others then load the very files it wrote
        if ranks.is_main:
            tokenizer = _resolve_tokenizer(settings, run_dir, train_docs, log, ranks)
        barrier()
        if not ranks.is_main:
            tokenizer = _resolve_tokenizer(settings, run_dir, train_docs, log, ranks)
    train_tokens = tokenize_documents(train_docs, tokenizer)
    val_tokens = tokenize_documents(val_docs, tokenizer)
    source = settings.data or "built-in corpus (Python's documentation)"
    log.note(f"Data: {source}: {len(docs):,} documents, {len(train_tokens):,} train / {len(val_tokens):,} val tokens")

    # --- model and optimizers ----------------------------------------------------------------------------------
    config = model_config(settings, tokenizer.vocab_size)
    if ckpt is not None and ckpt.config != config:
        raise CheckpointError(f"the checkpoint's model {ckpt.config.to_dict()} is of another shape than these "
                              f"settings give ({config.to_dict()}).")
    trace = _trace_module() if settings.debug else None
    model = build_model(config, use=settings.use, device=device, trace=settings.debug)
    with trace.tracing(model, settings.debug) if trace else contextlib.nullcontext():
        model.init_weights()
        optimizers = model.setup_optimizers(embedding_lr=settings.embedding_lr,
                                            unembedding_lr=settings.unembedding_lr,
                                            matrix_lr=settings.matrix_lr, weight_decay=settings.weight_decay)
    check_optimizer_coverage(model, optimizers)  # a parameter in no group would silently never train
    train_loader = TokenLoader(train_tokens, settings.device_batch_size, settings.max_seq_len, rank=ranks.rank,
                               world_size=ranks.world_size, device=device)
    loop = {"smooth_loss": 0.0, "min_val_bpb": None, "train_time_s": 0.0, "val_bpb": None, "first_val_bpb": None}
    start_step = 0
    if ckpt is not None:
        load_model_state(model, ckpt.model_state)
        initial_lrs = [[g["initial_lr"] for g in opt.param_groups] for opt in optimizers]
        load_optimizer_states(optimizers, ckpt.optimizer_states)
        for opt, lrs in zip(optimizers, initial_lrs):  # this run's learning-rate flags win over the saved ones
            for group, lr in zip(opt.param_groups, lrs):
                group["initial_lr"] = lr
        train_loader.load_state_dict(ckpt.state["train_loader"])
        set_rng_state(ckpt.state["rng"])
        loop.update(ckpt.state.get("loop", {}))
        start_step = ckpt.step
        if ckpt.state.get("train_tokens_digest") not in (None, _tokens_digest(train_tokens)):
            log.note("Warning: the training tokens differ from the checkpoint's (data or Python version changed); "
                     "the loader position no longer points at the same text.")
        if ranks.is_main:
            truncate_metrics(run_dir, start_step)
        log.note(f"Resuming from {ckpt.path} at step {start_step}")
        del ckpt
    train_model = model
    if settings.compile:
        if settings.debug:
            log.note("--compile is skipped under --debug: the trace hooks would break the compiled graph.")
        else:
            train_model = torch.compile(model, dynamic=False)
    if ranks.is_distributed:
        # DDP wraps the (compiled) module, as nanoGPT does: it averages gradients over ranks during the last
        # micro-batch's backward (accumulate_gradients). `model` stays the plain GPT for eval, samples and saves.
        train_model = data_parallel(train_model, device)

    num_params = model.num_params()
    flops_per_token = model.estimate_flops()
    peak = peak_flops(device)
    if ranks.is_main:
        _write_config(run_dir, settings, model, tokenizer, accum, device, ranks.world_size)
    heads = f"{config.n_head} head{'s' if config.n_head > 1 else ''}"
    log.note(f"Model: {model.use_spec} | {num_params:,} parameters | depth {config.n_layer}, width {config.n_embd}, "
             f"{heads}, context {config.sequence_len}, vocab {config.vocab_size} | device {device}")
    log.note(f"Batch: {settings.device_batch_size} x {settings.max_seq_len} tokens x {accum} accumulation steps x "
             f"{ranks.world_size} rank(s) = {settings.total_batch_size:,} tokens/step | {settings.num_iterations} "
             f"steps | run folder {run_dir}")

    n_eval = eval_steps(settings.eval_tokens, settings.device_batch_size, settings.max_seq_len, ranks.world_size)
    token_bytes = tokenizer.token_bytes().to(device)
    autocast = autocast_context(device)

    def evaluate() -> float:
        val_loader = TokenLoader(val_tokens, settings.device_batch_size, settings.max_seq_len, rank=ranks.rank,
                                 world_size=ranks.world_size, device=device)  # fresh: every eval sees the same text
        model.eval()
        with autocast:
            bpb = evaluate_bpb(model, val_loader, n_eval, token_bytes)
        model.train()
        return bpb

    def save(step: int, train_loader_state: dict[str, int]) -> Path:
        state = {
            "settings": _absolute_paths(settings),
            "train_loader": train_loader_state,
            "val_loader": {"position": 0, "epoch": 0},  # rebuilt at every evaluation, so always at the start
            "rng": rng_state(device),
            "loop": loop,
            "train_tokens_digest": _tokens_digest(train_tokens),
            "world_size": ranks.world_size,
        }
        path = save_checkpoint(run_dir, step, model, optimizers, tokenizer, state)
        _plot(run_dir)
        return path

    result = TrainResult(run_dir, None, start_step, loop["val_bpb"], loop["first_val_bpb"], num_params=num_params)
    step = start_step
    step_times: list[float] = []
    boundary_loader_state = train_loader.state_dict()
    in_update = False  # True while optimizers step: a checkpoint then would hold half-updated weights
    log.start(start_step)
    try:
        with _StopRequest(log) as stop:
            while True:
                last_step = step == settings.num_iterations
                if any_rank(stop.requested, device):  # every rank stops at the same step boundary
                    raise KeyboardInterrupt
                # evaluate (every rank takes part), sample and save (rank 0), as nanochat's loop does
                if last_step or step == start_step == 0 or (settings.eval_every > 0 and
                                                            step % settings.eval_every == 0):
                    bpb = evaluate()
                    loop["val_bpb"] = bpb
                    if loop["first_val_bpb"] is None:
                        loop["first_val_bpb"] = bpb
                    loop["min_val_bpb"] = bpb if loop["min_val_bpb"] is None else min(loop["min_val_bpb"], bpb)
                    log.metrics({"type": "eval", "step": step, "val_bpb": bpb, "train_time_s": loop["train_time_s"]})
                    log.note(f"step {step:05d} | val bpb {bpb:.4f}")
                if ranks.is_main and (last_step or (settings.sample_every > 0 and step > 0 and
                                                    step % settings.sample_every == 0)):
                    with autocast:
                        samples = [(p, complete(model, tokenizer, p, SAMPLE_MAX_TOKENS)) for p in SAMPLE_PROMPTS]
                    result.samples = samples
                    log.samples(step, samples)
                if ranks.is_main and (last_step or (settings.save_every > 0 and step > 0 and step != start_step
                                                    and step % settings.save_every == 0)):
                    result.checkpoint = save(step, boundary_loader_state)
                if last_step:
                    break

                # one optimisation step
                synchronize(device)
                t0 = time.time()
                first = step == start_step
                with trace.tracing(model, settings.debug) if (trace and first) else contextlib.nullcontext():
                    # an interrupt in here leaves weights and optimizer as they were at the step boundary
                    train_loss = accumulate_gradients(train_model, train_loader, accum, autocast)
                if first and ranks.is_distributed:
                    check_every_parameter_used(model)  # DDP would fail cryptically on the next step otherwise
                train_loss = mean_over_ranks(train_loss, device)  # so every rank agrees on divergence, too
                if not math.isfinite(train_loss):
                    raise TrainingError(_divergence_message(step, train_loss, result, settings, ckpt_path))
                grad_norm = None
                if settings.grad_clip > 0:
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip).item()
                lrm = apply_schedule(optimizers, step, settings)
                in_update = True
                for opt in optimizers:
                    opt.step()
                in_update = False
                model.zero_grad(set_to_none=True)
                synchronize(device)
                dt_s = time.time() - t0

                # bookkeeping and the step's log line
                loop["smooth_loss"] = SMOOTHING * loop["smooth_loss"] + (1 - SMOOTHING) * train_loss
                smooth = loop["smooth_loss"] / (1 - SMOOTHING ** (step + 1))
                loop["train_time_s"] += dt_s
                step_times.append(dt_s)
                timed = step_times[1:] or step_times  # the first step includes warm-up (allocations, compile)
                eta = (settings.num_iterations - step - 1) * sum(timed) / len(timed)
                tok_per_sec = settings.total_batch_size / dt_s
                mfu = None if peak is None else 100 * flops_per_token * tok_per_sec / (peak * ranks.world_size)
                record = {"type": "train", "step": step, "loss": train_loss, "smooth_loss": smooth, "lrm": lrm,
                          "dt_ms": 1000 * dt_s, "tok_per_sec": tok_per_sec, "mfu": mfu, "eta_s": eta,
                          "grad_norm": grad_norm, "tokens": (step + 1) * settings.total_batch_size,
                          "epoch": train_loader.state_dict().get("epoch")}
                log.step(record)
                result.losses.append(train_loss)
                step += 1
                boundary_loader_state = train_loader.state_dict()
                if on_step is not None:
                    on_step(step - 1, record)
    except KeyboardInterrupt as exc:
        log.stop()
        path = None
        if ranks.is_main and not in_update:
            # micro-steps of an unfinished step leave weights and optimizer untouched: save the boundary state
            model.zero_grad(set_to_none=True)
            path = save(step, boundary_loader_state)
            log.note(f"Interrupted at step {step}: checkpoint saved to {path}")
            log.note(f"Continue with: {_launcher(ranks)} train --resume {run_dir}")
        raise TrainingInterrupted(step, path) from exc
    finally:
        log.stop()

    if ranks.is_distributed:
        result.weights_digest, drifted = ranks_with_other_weights(model, device)
        if drifted:
            log.note(f"Warning: the weights of rank(s) {drifted} differ from rank 0's at the end; data-parallel "
                     f"replicas drifted apart (non-deterministic kernels, or an optimizer that steps on local "
                     f"gradients). The checkpoint holds rank 0's.")
        else:
            log.note(f"Weights identical on all {ranks.world_size} ranks (sha256 {result.weights_digest[:16]})")
    if device.type == "cuda":
        result.peak_memory_mib = torch.cuda.max_memory_allocated(device) / 2**20
        log.note(f"Peak GPU memory: {result.peak_memory_mib:,.0f} MiB (torch.cuda.max_memory_allocated, rank 0)")
    result.step = step
    result.val_bpb = loop["val_bpb"]
    result.first_val_bpb = loop["first_val_bpb"]
    result.train_time_s = sum(step_times)
    result.wall_time_s = time.time() - wall_start
    steps_taken = len(step_times)
    if steps_taken:
        result.tokens_per_sec = steps_taken * settings.total_batch_size / result.train_time_s
    return result


def _launcher(ranks: Ranks) -> str:
    """The command that started this run: plain `nanogpt`, or torchrun with as many processes per node."""
    if not ranks.is_distributed:
        return "nanogpt"
    local = os.environ.get("LOCAL_WORLD_SIZE", str(ranks.world_size))
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", 1) or 1)
    multi = f" --nnodes={nodes} ..." if nodes > 1 else ""
    return f"torchrun --nproc_per_node={local}{multi} -m nanogpt_cli"


def _divergence_message(step: int, loss: float, result: TrainResult, settings: TrainSettings,
                        resumed_from: Path | None = None) -> str:
    last_good = result.checkpoint or resumed_from  # a resumed run's starting checkpoint is still good
    where = f"{last_good}" if last_good else "none was written in this run"
    if not result.losses:
        cause = ("the very first loss is not finite, so a component's forward produces NaN/Inf: run with "
                 "--debug=stats to see the first one")
    else:
        cause = (f"the last finite loss was {result.losses[-1]:.4f}; training diverged: lower the learning rates "
                 f"(e.g. --matrix-lr {settings.matrix_lr / 2:g} --embedding-lr {settings.embedding_lr / 2:g}) or "
                 f"keep --grad-clip on")
    return f"loss became {loss} at step {step}; {cause}. Last good checkpoint: {where}."


def _load_tokenizer_of_size(folder: Path, vocab_size: int | None, alternative: str):
    """The tokenizer in `folder`, refusing one whose size contradicts an explicit --vocab-size."""
    from nanogpt_core.data.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(folder)
    if vocab_size is not None and vocab_size != tokenizer.vocab_size:
        raise ConfigError(f"{folder} has a {tokenizer.vocab_size}-token tokenizer but --vocab-size is "
                          f"{vocab_size}; drop --vocab-size or {alternative}.")
    return tokenizer


def _resolve_tokenizer(settings: TrainSettings, run_dir: Path, train_docs: list[str], log: RunLog, ranks: Ranks):
    """--tokenizer DIR, else the run folder's own, else one trained now on the training documents and saved."""
    from nanogpt_core.data.tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer

    if settings.tokenizer:
        folder = Path(settings.tokenizer)
        if not (folder / "tokenizer.json").is_file() and (folder / TOKENIZER_DIR / "tokenizer.json").is_file():
            folder = folder / TOKENIZER_DIR  # a run or checkpoint folder: use the tokenizer inside it
        tokenizer = _load_tokenizer_of_size(folder, settings.vocab_size, "pass a tokenizer of that size")
        log.note(f"Tokenizer: {folder} (vocab {tokenizer.vocab_size})")
        return tokenizer
    own = run_dir / TOKENIZER_DIR
    if (own / "tokenizer.json").is_file():
        tokenizer = _load_tokenizer_of_size(own, settings.vocab_size, "use another --out")
        log.note(f"Tokenizer: reusing {own} (vocab {tokenizer.vocab_size})")
        return tokenizer
    vocab_size = settings.vocab_size or DEFAULT_VOCAB_SIZE
    t0 = time.time()
    tokenizer = Tokenizer.train(train_docs, vocab_size)  # deterministic, so every rank trains the same one
    if ranks.is_main:
        tokenizer.save(own)
    log.note(f"Tokenizer: trained {tokenizer.vocab_size} tokens on the training text in {time.time() - t0:.1f}s "
             f"-> {own}")
    return tokenizer


def _write_config(run_dir: Path, settings: TrainSettings, model, tokenizer, accum: int, device,
                  world_size: int = 1) -> None:
    config = {
        "model": model.config.to_dict(),
        "training": settings.to_dict(),
        "use": dict(model.use),
        "use_spec": model.use_spec,
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "fingerprint": tokenizer.fingerprint},
        "num_params": model.num_params(),
        "flops_per_token": model.estimate_flops(),
        "grad_accum_steps": accum,
        "world_size": world_size,
        "device": str(device),
        "torch": torch.__version__,
    }
    path = run_dir / CONFIG_FILE
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _plot(run_dir: Path) -> None:
    from nanogpt_core.train.plots import PLOT_FILE, plot_losses

    plot_losses(read_metrics(run_dir), run_dir / PLOT_FILE)
