"""The training loop: nanochat's `base_train`, for a GPT assembled from any mix of implementations.

    settings = TrainSettings(depth=2, num_iterations=300)
    result = train(settings)             # -> TrainResult(run_dir, checkpoint, val_bpb, ...)

A run goes through five phases, one function each:

    _prepare   settings checked, run folder, data and tokenizer, model, optimizers, loader
    _restore   (when resuming) weights, optimizer state, loader position, RNG and loop counters
    _evaluate  val bits per byte at step 0, every eval_every steps and at the end
    _take_step one optimisation step (`nanogpt_core.train.step`), its bookkeeping and its log line
    _save      a checkpoint every save_every steps, at the end and on Ctrl-C

Greedy samples from fixed prompts are printed every sample_every steps and at the end. Other work at step
boundaries plugs in as a `StepHook`; the settings' own hooks are built here: nanochat's CORE metric every
core_metric_every steps (`evals`), attention grids every inspect_every steps (RUN/inspect/, `inspection`). Other
places for the numbers (experiment trackers) are `MetricSink`s of the run log (`train.run_log`); `settings.log`
names the trackers (`train.trackers`) whose sinks every run adds.

A run is a folder (default runs/<timestamp>): config.json, metrics.jsonl, samples.txt, loss.png, tokenizer/ and
checkpoints/. Resuming restores weights, optimizer state, the loader's position and the RNG, so on CPU a resumed run
reproduces the losses of an uninterrupted one exactly.

Real life, before and around the phases (docs/reliability.md): every setting, and the memory the model needs, is
checked before any work (`settings.validate_settings`, `settings.check_training_memory`); the folder is locked for
this run and left as it was found if the run stops before its first step (`files.RunFolder`); Ctrl-C and SIGTERM
stop at the next step boundary with a checkpoint (`_StopRequest`, exit 130 or 143); an OS error while writing is
one line naming the last good checkpoint.

Under `torchrun --nproc_per_node=N -m nanogpt_cli train` each process runs this loop as one rank of a data-parallel
job (`nanogpt_core.train.distributed`, docs/distributed.md): DDP averages the gradients, the loss and bpb are
combined over ranks, and rank 0 alone logs, samples and saves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shlex
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanogpt_core.data.loader import TokenLoader
from nanogpt_core.data.stream import StreamingLoader
from nanogpt_core.data.tokenizer import DEFAULT_VOCAB_SIZE, TOKENIZER_DIR, Tokenizer, has_tokenizer, tokenizer_folder
from nanogpt_core.data.training_data import TrainingData, open_training_data
from nanogpt_core.device import (
    autocast_context,
    check_bf16,
    configure_device,
    peak_flops,
    resolve_device,
    synchronize,
)
from nanogpt_core.errors import CheckpointError, ConfigError, DataError, NanoGPTError, TrainingError
from nanogpt_core.evals import evaluate_core, load_bundle
from nanogpt_core.files import WRITE_FIXES, RunFolder, os_error_of, timestamped_folder, write_json_atomic
from nanogpt_core.inspection.snapshots import INSPECT_DIR
from nanogpt_core.io.checkpoint import (
    CHECKPOINTS_DIR,
    Checkpoint,
    check_training_state,
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    load_optimizer_states,
    load_tokenizer,
    rng_state,
    run_dir_of,
    save_checkpoint,
    save_failure_message,
    set_rng_state,
)
from nanogpt_core.model import trace
from nanogpt_core.model.assembly import GPT, build_model, check_optimizer_coverage
from nanogpt_core.train.bpb import validation_bpb
from nanogpt_core.train.budget import Deadline, plan_run, vocab_for_text
from nanogpt_core.train.distributed import (
    Ranks,
    barrier,
    broadcast_from_main,
    check_every_parameter_used,
    data_parallel,
    gather_from_ranks,
    max_over_ranks,
    mean_over_ranks,
    process_group,
    rank_device,
    ranks_with_other_weights,
)
from nanogpt_core.train.inspect_hook import HOOK_NAME as INSPECT_HOOK
from nanogpt_core.train.inspect_hook import AttentionSnapshots
from nanogpt_core.train.plots import PLOT_FILE, plot_losses
from nanogpt_core.train.run_log import METRICS_FILE, SAMPLES_FILE, MetricSink, RunLog, read_metrics
from nanogpt_core.train.sampling import SAMPLE_MAX_TOKENS, SAMPLE_PROMPTS, complete
from nanogpt_core.train.settings import (
    CONFIG_FILE,
    TrainResult,
    TrainSettings,
    check_training_memory,
    eval_steps,
    grad_accum_steps,
    model_config,
    saved_settings,
    validate_settings,
)
from nanogpt_core.train.step import accumulate_gradients, optimizer_step
from nanogpt_core.train.trackers import TENSORBOARD_DIR, WANDB_DIR, tracker_sinks

SMOOTHING = 0.9  # EMA factor of the logged loss, as nanochat's
# What a run writes at the top of its folder (what a run that stops before its first step takes away again)
# what a run may add to its folder (removed again, in a folder it did not make, if it stops before its first step)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SAMPLES_FILE, PLOT_FILE, TOKENIZER_DIR, CHECKPOINTS_DIR, TENSORBOARD_DIR,
             WANDB_DIR, INSPECT_DIR)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the run saved a checkpoint at a step boundary (`checkpoint`, None if it could not
    or had not started training) and stopped. `exit_code` is the shell's 128 + the signal: 130 or 143."""

    def __init__(self, step: int, checkpoint: Path | None, signum: int = signal.SIGINT) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.step = step
        self.checkpoint = checkpoint
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; what SLURM, Kubernetes and `kill` send before SIGKILL


class _StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM during a run. Before training starts there is nothing to save, so a signal stops
    at once; once the loop is `deferring`, the first signal asks to stop at the next step boundary (and save), and
    a second one stops now. The signal's number decides the exit code (130 or 143)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self.log: RunLog | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if not self.deferring:
            raise TrainingInterrupted(0, None, signum)
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        if self.log is not None:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            self.log.note(f"{name}: stopping after this step and saving a checkpoint ({name} again to stop now).")

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


@dataclass
class Run:
    """Everything one run holds between its phases (and what a StepHook gets to work with)."""

    settings: TrainSettings
    ranks: Ranks
    device: torch.device
    run_dir: Path
    log: RunLog
    tokenizer: Tokenizer
    train_tokens: torch.Tensor | None  # the training part when it is read into memory; None when streamed
    val_tokens: torch.Tensor
    model: GPT
    optimizers: list[torch.optim.Optimizer]
    train_loader: TokenLoader | StreamingLoader
    accum: int
    resumed_from: Path | None = None
    folder: RunFolder | None = None  # rank 0's lock on the run folder (None on the other ranks)
    config_record: dict[str, Any] | None = None  # config.json, written once the run has something to keep
    data: TrainingData | None = None
    train_model: torch.nn.Module | None = None  # the model the steps run: compiled and/or DDP-wrapped
    start_step: int = 0
    # counters a checkpoint keeps, so a resumed run continues its smoothing, timing and best bpb
    loop: dict[str, Any] = field(default_factory=lambda: {"smooth_loss": 0.0, "min_val_bpb": None,
                                                           "train_time_s": 0.0, "val_bpb": None,
                                                           "first_val_bpb": None})
    step_times: list[float] = field(default_factory=list)
    flops_per_token: int = 0  # for MFU, against the device's peak (None where MFU means nothing)
    peak_flops: float | None = None
    token_bytes: torch.Tensor | None = None  # bytes per token id, for bits per byte
    deadline: Deadline | None = None  # --time: re-plans the step count so the run ends on time

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.device, self.settings.bf16)


@dataclass(frozen=True)
class StepHook:
    """Extra work at step boundaries, beside evaluation, samples and checkpoints (an evaluation suite, snapshots of
    the model): `call(run, step)` runs every `every` steps after step 0 and at the last step (also at step 0 with
    `at_start`), on the plain model in eval mode; on every rank when `all_ranks` (work that itself talks to the
    other ranks), else on rank 0 only. It returns metrics to log as a record of type `name`, or None."""

    name: str
    every: int
    call: Callable[[Run, int], dict[str, Any] | None]
    all_ranks: bool = False
    at_start: bool = False

    def due(self, step: int, last_step: bool, start_step: int) -> bool:
        if last_step:
            return True
        if step == start_step:
            return self.at_start and step == 0
        return self.every > 0 and step % self.every == 0


def train(
    settings: TrainSettings,
    *,
    resume: Checkpoint | str | Path | None = None,
    ranks: Ranks | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    stream=None,
    progress_bar: bool | None = None,
    hooks: Sequence[StepHook] = (),
    sinks: Sequence[MetricSink] = (),
) -> TrainResult:
    """Run (or continue, with `resume` = a loaded checkpoint, or a checkpoint or run folder) one training run. See
    the module docstring. `hooks` add work at step boundaries; `sinks` receive every metrics record.

    `on_step(step, record)` is called after every step (tests use it to interrupt a run at a chosen step).
    Raises TrainingInterrupted (a KeyboardInterrupt) after saving on Ctrl-C, TrainingError when the loss diverges.

    Under torchrun (WORLD_SIZE > 1 in the environment, or `ranks` given) this is one rank of a data-parallel run:
    it joins the process group for the run and leaves it at the end or on any error (`train.distributed`).
    """
    wall_start, started = time.time(), time.perf_counter()
    ranks = ranks or Ranks.from_env()
    ckpt = resume if isinstance(resume, Checkpoint) or resume is None else load_checkpoint(resume)
    if ckpt is not None:
        check_training_state(ckpt)
    # every flag checked, and the memory the model needs, before any folder, data, tokenizer or tensor
    config = validate_settings(settings, ranks.world_size, None if ckpt is None else ckpt.step)
    device = rank_device(resolve_device(settings.device), ranks)
    if settings.bf16:
        check_bf16(device)
    check_training_memory(settings, config if ckpt is None else ckpt.config, device, _processes_sharing(device, ranks),
                          resuming=ckpt is not None)
    configure_device(device)
    with _StopRequest() as stop, process_group(ranks, device), _claim_run_folder(settings, ckpt, ranks) as folder:
        run = _prepare(settings, ckpt, folder, ranks, device, stream, progress_bar, sinks, started)
        stop.log = run.log
        try:
            if ckpt is not None:
                _restore(run, ckpt)
                del ckpt
            result = _loop(run, stop, on_step, [*_settings_hooks(run), *hooks])
        except Exception as exc:
            failure = _write_failure(exc, run)
            if failure is None:
                raise
            raise failure from exc
        finally:
            run.train_loader.close()  # a streaming loader's tokenizer thread
            run.log.close()
    result.wall_time_s = time.time() - wall_start
    return result


def _processes_sharing(device: torch.device, ranks: Ranks) -> int:
    """How many processes of this run share the device's memory: each GPU has one rank, CPU ranks share the RAM."""
    if device.type == "cuda":
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world_size) or 1)


def _claim_run_folder(settings: TrainSettings, ckpt: Checkpoint | None, ranks: Ranks):
    """The run folder, locked for this run (rank 0 alone writes it): --out, the resumed run's, or a new
    runs/<timestamp>."""
    if not ranks.is_main:
        return contextlib.nullcontext(None)
    writes = RUN_FILES
    if settings.out:
        return RunFolder(settings.out, writes=writes)
    if ckpt is not None:
        return RunFolder(run_dir_of(ckpt.path), writes=writes)
    return RunFolder(timestamped_folder(), fresh=True, writes=writes)


def _write_failure(exc: Exception, run: Run) -> CheckpointError | None:
    """A full disk (or a quota, a file-size limit, a read-only disk) met while writing the run's logs, plot or
    config: one CheckpointError naming the last good checkpoint. None for any other error."""
    error = None if isinstance(exc, NanoGPTError) else os_error_of(exc)
    if error is None or error.errno not in WRITE_FIXES:
        return None
    return CheckpointError(save_failure_message(error, f"writing the run's files in {run.run_dir}", run.run_dir,
                                                _resume_command(run)))


# --- preparing ---------------------------------------------------------------------------------------------------


def _prepare(settings: TrainSettings, ckpt: Checkpoint | None, folder: RunFolder | None, ranks: Ranks,
             device: torch.device, stream, progress_bar: bool | None, sinks: Sequence[MetricSink] = (),
             started: float | None = None) -> Run:
    """The run folder, the data and the tokenizer, the plan of a --time run (from `started`, the perf_counter at
    which the run began), the model and optimizers (the settings are checked already)."""
    resumed_from = ckpt.path if ckpt is not None else None
    run_dir = Path(broadcast_from_main(str(folder.path) if folder is not None else ""))  # rank 0's folder everywhere
    if ckpt is None and _has_checkpoint(run_dir):
        raise ConfigError(f"{run_dir} already holds a run with checkpoints; continue it with --resume "
                          f"{shlex.quote(str(run_dir))} (or --resume auto), or choose another --out.")
    trackers = tracker_sinks(settings.log, run_dir, resuming=ckpt is not None) if ranks.is_main else []
    log = RunLog(run_dir, settings.num_iterations, enabled=ranks.is_main, stream=stream, progress_bar=progress_bar,
                 sinks=[*sinks, *trackers])
    if ckpt is None and folder is not None:  # an earlier run here stopped before its first checkpoint
        aside = folder.set_aside([CONFIG_FILE, METRICS_FILE, SAMPLES_FILE, PLOT_FILE])  # its tokenizer is reused
        if aside is not None:
            log.note(f"Note: {run_dir} held the files of an earlier run that saved no checkpoint; moved them to "
                     f"{aside}, so this run starts clean.")
    accum = grad_accum_steps(settings.total_batch_size, settings.device_batch_size, settings.max_seq_len,
                             ranks.world_size)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    # a resumed run reads its data the way the checkpoint's loader did (in memory or streamed), whatever the size
    saved_kind = _saved_loader_kind(ckpt, ranks)
    data = open_training_data(settings.data, stream=settings.stream if ckpt is None else saved_kind == "stream")
    if ckpt is not None:
        tokenizer = load_tokenizer(ckpt)
    else:  # rank 0 trains (or finds) and saves the tokenizer; the others then load the very files it wrote
        if ranks.is_main:
            tokenizer = _choose_tokenizer(settings, run_dir, data, log, ranks)
        barrier()
        if not ranks.is_main:
            tokenizer = _choose_tokenizer(settings, run_dir, data, log, ranks)
    train_loader = data.train_loader(tokenizer, settings.device_batch_size, settings.max_seq_len, rank=ranks.rank,
                                     world_size=ranks.world_size, device=device,
                                     shuffle_seed=settings.seed if settings.shuffle else None)
    deadline = None
    if settings.time_budget is not None and ckpt is None:  # a resumed run finishes the steps it planned
        # the plan keeps the micro-batch (so this loader) and chooses how many make a step; streamed data is taken
        # to be large enough that a budget run never repeats it
        unique = len(data.train_tokens) if data.train_tokens is not None else math.inf
        settings, deadline = _plan_budget(settings, unique, tokenizer.vocab_size, device, ranks, log,
                                          time.perf_counter() if started is None else started)
        accum = grad_accum_steps(settings.total_batch_size, settings.device_batch_size, settings.max_seq_len,
                                 ranks.world_size)
    n_eval = eval_steps(settings.eval_tokens, settings.device_batch_size, settings.max_seq_len, ranks.world_size)
    val_tokens = data.val_tokens(tokenizer, n_eval * ranks.world_size * settings.device_batch_size
                                 * settings.max_seq_len + 1)  # streamed data: read what the evaluations use
    log.note(f"Data: {data.describe()}")

    config = model_config(settings, tokenizer.vocab_size)
    if ckpt is not None and ckpt.config != config:
        raise CheckpointError(f"the checkpoint's model {ckpt.config.to_dict()} is of another shape than these "
                              f"settings give ({config.to_dict()}).")
    check_training_memory(settings, config, device, _processes_sharing(device, ranks), resuming=ckpt is not None)
    model = build_model(config, use=settings.use, device=device, trace=settings.debug,
                        trace_layer=settings.debug_layer)
    with trace.tracing(model, settings.debug, layer=settings.debug_layer):
        model.init_weights()
        optimizers = model.setup_optimizers(**settings.optimizer_lrs())
    check_optimizer_coverage(model, optimizers)  # a parameter in no group would silently never train
    return Run(settings, ranks, device, run_dir, log, tokenizer, data.train_tokens, val_tokens, model, optimizers,
               train_loader, accum, resumed_from, folder=folder, data=data, deadline=deadline)


def _plan_budget(settings: TrainSettings, unique_tokens: float, vocab_size: int, device: torch.device, ranks: Ranks,
                 log: RunLog, started: float) -> tuple[TrainSettings, Deadline]:
    """--time: rank 0 measures and plans (`train.budget`), every rank trains by its plan, and the Deadline keeps
    the run to the budget counted from `started`."""
    end = started + settings.time_budget
    text = ""
    if ranks.is_main:
        plan = plan_run(settings, unique_tokens, vocab_size, device, end - time.perf_counter(),
                        _processes_sharing(device, ranks))
        for line in plan.lines:
            log.note(line)
        text = json.dumps({"settings": plan.settings.to_dict(), "end_reserve_s": plan.end_reserve_s})
    planned = json.loads(broadcast_from_main(text))
    settings = TrainSettings.from_dict(planned["settings"])
    log.num_iterations = settings.num_iterations
    agree = (lambda n: int(broadcast_from_main(str(n)))) if ranks.is_distributed else None
    return settings, Deadline(settings, end, planned["end_reserve_s"], agree=agree)


def _settings_hooks(run: Run) -> list[StepHook]:
    """The step hooks the settings ask for: the CORE metric (--core-metric-every) and attention grids
    (--inspect-every)."""
    return [*_core_hooks(run), *_inspect_hooks(run)]


def _inspect_hooks(run: Run) -> list[StepHook]:
    """The StepHook `--inspect-every N` asks for: the attention grid of `--inspect-prompt` saved at those steps."""
    s = run.settings
    if s.inspect_every <= 0:
        if s.inspect_prompt:
            raise ConfigError("--inspect-prompt needs --inspect-every N (how often to save the attention grid), "
                              "e.g. --inspect-every 50.")
        return []
    snapshots = AttentionSnapshots(run.tokenizer, s.inspect_prompt, run.model.config.sequence_len)
    return [StepHook(INSPECT_HOOK, s.inspect_every, snapshots, at_start=True)]


def _has_checkpoint(run_dir: Path) -> bool:
    try:
        return latest_checkpoint(run_dir) is not None
    except CheckpointError:
        return False


def _choose_tokenizer(settings: TrainSettings, run_dir: Path, data: TrainingData, log: RunLog,
                      ranks: Ranks) -> Tokenizer:
    """--tokenizer DIR, else the one pre-tokenized data was made with, else the run folder's own, else one trained
    now on the training text and saved."""
    given = settings.tokenizer or data.tokenizer_dir
    if given:
        folder = tokenizer_folder(given)
        tokenizer = _tokenizer_of_size(folder, settings.vocab_size, "pass a tokenizer of that size")
        log.note(f"Tokenizer: {folder} (vocab {tokenizer.vocab_size})")
        return tokenizer
    own = run_dir / TOKENIZER_DIR
    if has_tokenizer(own):
        tokenizer = _tokenizer_of_size(own, settings.vocab_size, "use another --out")
        log.note(f"Tokenizer: reusing {own} (vocab {tokenizer.vocab_size})")
        return tokenizer
    vocab_size = settings.vocab_size or DEFAULT_VOCAB_SIZE
    if settings.vocab_size is None and settings.time_budget is not None:  # --time sizes the tokenizer to the text
        chars = data.train_chars()
        vocab_size = vocab_for_text(chars)
        log.note(f"Budget: a tokenizer of {vocab_size:,} tokens for ~{chars:,.0f} characters of training text (about "
                 f"their square root: a small text has few tokens worth a vocabulary entry).")
    t0 = time.time()
    tokenizer = Tokenizer.train(data.tokenizer_texts(), vocab_size)  # deterministic: every rank trains the same
    if ranks.is_main:
        tokenizer.save(own)
    log.note(f"Tokenizer: trained {tokenizer.vocab_size} tokens on the training text in {time.time() - t0:.1f}s "
             f"-> {own}")
    return tokenizer


def _tokenizer_of_size(folder: Path, vocab_size: int | None, alternative: str) -> Tokenizer:
    """The tokenizer in `folder`, refusing one whose size contradicts an explicit --vocab-size."""
    tokenizer = Tokenizer.load(folder)
    if vocab_size is not None and vocab_size != tokenizer.vocab_size:
        raise ConfigError(f"{folder} has a {tokenizer.vocab_size}-token tokenizer but --vocab-size is "
                          f"{vocab_size}; drop --vocab-size or {alternative}.")
    return tokenizer


def _restore(run: Run, ckpt: Checkpoint) -> None:
    """Continue from a checkpoint: weights, optimizer state (this run's learning-rate flags win), the loader's
    position, the RNG and the loop's counters; metrics of steps after the checkpoint are cut from metrics.jsonl
    (at the run's first write, so a resume that fails before it leaves the file as it was)."""
    load_model_state(run.model, ckpt.model_state)
    initial_lrs = [[g["initial_lr"] for g in opt.param_groups] for opt in run.optimizers]
    load_optimizer_states(run.optimizers, ckpt.optimizer_states)
    for opt, lrs in zip(run.optimizers, initial_lrs):
        for group, lr in zip(opt.param_groups, lrs):
            group["initial_lr"] = lr
    _restore_loader(run, ckpt.state["train_loader"])
    set_rng_state(ckpt.state["rng"])
    run.loop.update(ckpt.state["loop"])
    run.start_step = ckpt.step
    if ckpt.state.get("train_tokens_digest") not in (None, run.data.digest()):
        run.log.note("Warning: the training tokens differ from the checkpoint's (data or Python version changed); "
                     "the loader position no longer points at the same text.")
    # metrics.jsonl loses what this run writes again, at its first write
    run.log.resume_at(run.start_step, redone=["eval"] if _evaluates_at(run, run.start_step) else [])
    run.log.note(f"Resuming from {ckpt.path} at step {run.start_step}")


def _loader_state(run: Run) -> dict[str, Any]:
    """The training loader's state at a step boundary, as a checkpoint keeps it. In memory it is one global
    position, the same on every rank; streamed, every rank is somewhere else in its own share of the data, so
    every rank's position is gathered (each rank, not only rank 0, may be the one that saves on Ctrl-C)."""
    state = run.train_loader.state_dict()
    if isinstance(run.train_loader, StreamingLoader):
        return {"kind": state["kind"], "ranks": gather_from_ranks(state)}
    return state


def _saved_loader_kind(ckpt: Checkpoint | None, ranks: Ranks) -> str | None:
    """How the checkpoint's loader read its data ("stream", else in memory); refused before anything is touched
    when streamed data was shared out over another number of ranks than this run has."""
    state = ckpt.state.get("train_loader", {}) if ckpt is not None else {}
    if state.get("kind") == "stream" and len(state.get("ranks") or []) != ranks.world_size:
        n = len(state.get("ranks") or [])
        raise ConfigError(f"the checkpoint streamed its data with {n} process(es), each reading its own share; "
                          f"resume it with as many (torchrun --nproc_per_node={n}), not {ranks.world_size}.")
    return state.get("kind")


def _restore_loader(run: Run, state: dict[str, Any]) -> None:
    """The inverse of `_loader_state`: this rank's position back into its loader."""
    if state.get("kind") == "stream":
        state = state["ranks"][run.ranks.rank]  # as many as ranks: checked by _saved_loader_kind
    run.train_loader.load_state_dict(state)


def _wrap_for_training(run: Run) -> torch.nn.Module:
    """The model the steps run: torch.compile'd when asked, DDP-wrapped under torchrun. `run.model` stays the plain
    GPT for evaluation, samples and saves."""
    model: torch.nn.Module = run.model
    if run.settings.compile:
        if run.settings.debug:
            run.log.note("--compile is skipped under --debug: the trace hooks would break the compiled graph.")
        else:
            model = torch.compile(model, dynamic=False)
    if run.ranks.is_distributed:
        # DDP wraps the (compiled) module, as nanoGPT does: it averages gradients over ranks during the last
        # micro-batch's backward (accumulate_gradients).
        model = data_parallel(model, run.device)
    return model


# --- evaluating, saving, stepping ------------------------------------------------------------------------------


def _evaluate(run: Run) -> float:
    """Val bits per byte over a fresh loader, so every evaluation sees the same text (every rank takes part)."""
    bpb = validation_bpb(run.model, run.val_tokens, run.settings, run.ranks, run.device, run.token_bytes)
    loop = run.loop
    loop["val_bpb"] = bpb
    if loop["first_val_bpb"] is None:
        loop["first_val_bpb"] = bpb
    loop["min_val_bpb"] = bpb if loop["min_val_bpb"] is None else min(loop["min_val_bpb"], bpb)
    return bpb


def _save(run: Run, step: int, train_loader_state: dict[str, Any]) -> Path:
    """A checkpoint of the step boundary `step` (rank 0 only), then the loss plot."""
    state = {
        "settings": saved_settings(run.settings),
        "train_loader": train_loader_state,
        "val_loader": {"position": 0, "epoch": 0},  # rebuilt at every evaluation, so always at the start
        "rng": rng_state(run.device),
        "loop": run.loop,
        "train_tokens_digest": run.data.digest(),
        "world_size": run.ranks.world_size,
    }
    path = save_checkpoint(run.run_dir, step, run.model, run.optimizers, run.tokenizer, state,
                           resume_command=_resume_command(run))
    _keep(run)  # from now on the folder holds a checkpoint
    plot_losses(read_metrics(run.run_dir), run.run_dir / PLOT_FILE)
    return path


def _keep(run: Run) -> None:
    """The run has something worth keeping (a step, a checkpoint): the folder is never undone from now on, and
    config.json describes this run. (Until then a resumed run that fails leaves its folder as it was, the earlier
    config.json included.)"""
    if run.folder is None or run.config_record is None:
        return
    run.folder.keep()
    write_json_atomic(run.run_dir / CONFIG_FILE, run.config_record)
    run.config_record = None


def _take_step(run: Run, step: int, result: TrainResult, in_update: list[bool]) -> dict[str, Any]:
    """One optimisation step and its bookkeeping; returns the step's metrics record.

    `in_update[0]` is True while the optimizers step: a checkpoint then would hold half-updated weights."""
    s = run.settings
    synchronize(run.device)
    t0 = time.time()
    first = step == run.start_step
    # an interrupt in here leaves weights and optimizer as they were at the step boundary
    train_loss = accumulate_gradients(run.train_model, run.train_loader, run.accum, run.autocast)
    if first and run.ranks.is_distributed:
        check_every_parameter_used(run.model)  # DDP would fail cryptically on the next step otherwise
    train_loss = mean_over_ranks(train_loss, run.device)  # so every rank agrees on divergence, too
    if not math.isfinite(train_loss):
        raise TrainingError(_divergence_message(step, train_loss, result, s, run.resumed_from))
    in_update[0] = True
    lrm, grad_norm = optimizer_step(run.model, run.optimizers, step, s)
    in_update[0] = False
    synchronize(run.device)
    dt_s = time.time() - t0

    loop = run.loop
    loop["smooth_loss"] = SMOOTHING * loop["smooth_loss"] + (1 - SMOOTHING) * train_loss
    smooth = loop["smooth_loss"] / (1 - SMOOTHING ** (step + 1))
    loop["train_time_s"] += dt_s
    run.step_times.append(dt_s)
    timed = run.step_times[1:] or run.step_times  # the first step includes warm-up (allocations, compile)
    eta = (s.num_iterations - step - 1) * sum(timed) / len(timed)
    tok_per_sec = s.total_batch_size / dt_s
    mfu = None if run.peak_flops is None else (100 * run.flops_per_token * tok_per_sec
                                               / (run.peak_flops * run.ranks.world_size))
    result.losses.append(train_loss)
    return {"type": "train", "step": step, "loss": train_loss, "smooth_loss": smooth, "lrm": lrm,
            "dt_ms": 1000 * dt_s, "tok_per_sec": tok_per_sec, "mfu": mfu, "eta_s": eta, "grad_norm": grad_norm,
            "tokens": (step + 1) * s.total_batch_size, "epoch": run.train_loader.state_dict().get("epoch")}


# --- the loop ----------------------------------------------------------------------------------------------------


def _loop(run: Run, stop: _StopRequest, on_step: Callable[[int, dict[str, Any]], None] | None,
          hooks: Sequence[StepHook] = ()) -> TrainResult:
    s, ranks, log, loop = run.settings, run.ranks, run.log, run.loop
    run.train_model = _wrap_for_training(run)
    run.flops_per_token, run.peak_flops = run.model.estimate_flops(), peak_flops(run.device)
    run.token_bytes = run.tokenizer.token_bytes().to(run.device)
    if ranks.is_main:
        run.config_record = _config_record(run)
        log.config(run.config_record)
    config = run.model.config
    heads = f"{config.n_head} head{'s' if config.n_head > 1 else ''}"
    log.note(f"Model: {run.model.use_spec} | {run.model.num_params():,} parameters | depth {config.n_layer}, width "
             f"{config.n_embd}, {heads}, context {config.sequence_len}, vocab {config.vocab_size} | "
             f"device {run.device}")
    for opt in run.optimizers:  # a choice the optimizer made for this machine (e.g. Muon's Newton-Schulz dtype)
        if getattr(opt, "setup_note", None):
            log.note(opt.setup_note)
    log.note(f"Batch: {s.device_batch_size} x {s.max_seq_len} tokens x {run.accum} accumulation steps x "
             f"{ranks.world_size} rank(s) = {s.total_batch_size:,} tokens/step | {s.num_iterations} "
             f"steps | run folder {run.run_dir}")

    result = TrainResult(run.run_dir, None, run.start_step, loop["val_bpb"], loop["first_val_bpb"],
                         num_params=run.model.num_params())
    step = run.start_step
    boundary_loader_state = _loader_state(run)
    in_update = [False]
    log.start(run.start_step)
    stop.deferring = True  # from here a signal stops at the next step boundary, with a checkpoint
    signum = None
    try:
        with contextlib.ExitStack() as first_forward:
            # --debug traces the run's first forward, wherever it is: the step-0 evaluation's, or the first step's
            # (a component that fails in its forward fails there first, and its trace is what the learner needs)
            first_forward.enter_context(trace.tracing(run.model, s.debug, layer=s.debug_layer))
            while True:
                if run.deadline is not None:
                    _keep_to_deadline(run, step)
                last_step = step == s.num_iterations
                signum = max_over_ranks(stop.signum or 0, run.device)  # every rank stops at the same step boundary
                if signum:
                    raise KeyboardInterrupt
                # evaluate (every rank takes part), sample and save (rank 0), as nanochat's loop does
                if _evaluates_at(run, step):
                    t0 = time.perf_counter()
                    bpb = _evaluate(run)
                    if run.deadline is not None:
                        run.deadline.observe_eval(time.perf_counter() - t0)
                    log.metrics({"type": "eval", "step": step, "val_bpb": bpb, "train_time_s": loop["train_time_s"]})
                    log.note(f"step {step:05d} | val bpb {bpb:.4f}")
                if ranks.is_main and (last_step or (s.sample_every > 0 and step > 0 and step % s.sample_every == 0)):
                    with run.autocast:
                        result.samples = [(p, complete(run.model, run.tokenizer, p, SAMPLE_MAX_TOKENS))
                                          for p in SAMPLE_PROMPTS]
                    log.samples(step, result.samples)
                for hook in hooks:
                    if (ranks.is_main or hook.all_ranks) and hook.due(step, last_step, run.start_step):
                        _run_hook(run, hook, step)
                if ranks.is_main and (last_step or (s.save_every > 0 and step > 0 and step != run.start_step
                                                    and step % s.save_every == 0)):
                    result.checkpoint = _save(run, step, boundary_loader_state)
                if last_step:
                    break
                record = _take_step(run, step, result, in_update)
                first_forward.close()
                log.step(record)
                _keep(run)  # a step taken: the folder's metrics are worth keeping even without a checkpoint
                step += 1
                boundary_loader_state = _loader_state(run)
                if on_step is not None:
                    on_step(step - 1, record)
    except KeyboardInterrupt as exc:
        log.stop()
        signum = signum or stop.signum or signal.SIGINT
        path = None
        if ranks.is_main and not in_update[0]:
            # micro-steps of an unfinished step leave weights and optimizer untouched: save the boundary state
            run.model.zero_grad(set_to_none=True)
            path = _save(run, step, boundary_loader_state)
            why = "Interrupted" if signum == signal.SIGINT else f"Stopped by {signal.Signals(signum).name}"
            log.note(f"{why} at step {step}: checkpoint saved to {path}")
            log.note(f"Continue with: {_resume_command(run)}")
        raise TrainingInterrupted(step, path, signum) from exc
    finally:
        log.stop()
    _finish(run, result, step)
    return result


def _keep_to_deadline(run: Run, step: int) -> None:
    """--time: at a step boundary, the step count re-planned from the run's own speed (said when it moves by 5% or
    more since it was last said)."""
    new = run.deadline.boundary(step)
    if new is None:
        return
    run.log.num_iterations = new
    said = run.deadline.said
    if abs(new - said) >= 0.05 * said:
        run.deadline.said = new
        run.log.note(f"Budget: {new:,} steps instead of {said:,}, at {1000 * run.deadline.step_s:.0f} ms a step "
                     f"(measured over the last steps) to end on time.")


def _core_hooks(run: Run) -> list[StepHook]:
    """The CORE metric with --core-metric-every N > 0 (and the eval bundle)."""
    s = run.settings
    if s.core_metric_every <= 0:
        return []
    try:
        bundle = load_bundle()
    except DataError as exc:  # a run asked to log CORE still trains without the bundle, and says how to get it
        run.log.note(f"CORE metric off for this run: {exc}")
        return []
    batch_tokens = s.device_batch_size * s.max_seq_len  # what a training micro-batch forwards, so it fits memory
    per_task = "all" if s.core_metric_max_per_task <= 0 else f"up to {s.core_metric_max_per_task}"
    run.log.note(f"CORE metric: every {s.core_metric_every} steps and at the end, {len(bundle.tasks)} tasks of "
                 f"{bundle.folder}, {per_task} items each")

    def core_metric(run: Run, step: int) -> dict[str, Any]:
        t0 = time.time()
        result = evaluate_core(run.model, run.tokenizer, bundle, max_per_task=s.core_metric_max_per_task,
                               batch_tokens=batch_tokens)
        run.log.note(f"step {step:05d} | CORE {result.core:.4f} ({len(result.tasks)} tasks in "
                     f"{time.time() - t0:.1f}s)")
        return {"core": result.core, "centered": {t.label: t.centered for t in result.tasks},
                "accuracy": {t.label: t.accuracy for t in result.tasks}}

    return [StepHook("core", s.core_metric_every, core_metric, all_ranks=True)]


def _evaluates_at(run: Run, step: int) -> bool:
    """Val bpb at step 0, every eval_every steps and at the end."""
    s = run.settings
    return step == s.num_iterations or step == run.start_step == 0 or (s.eval_every > 0 and step % s.eval_every == 0)


def _run_hook(run: Run, hook: StepHook, step: int) -> None:
    """One hook at one step boundary, on the plain model in eval mode; its metrics go to the log."""
    was_training = run.model.training
    run.model.eval()
    try:
        with run.autocast:
            numbers = hook.call(run, step)
    finally:
        run.model.train(was_training)
    if numbers:
        run.log.metrics({"type": hook.name, "step": step, **numbers})


def _finish(run: Run, result: TrainResult, step: int) -> None:
    """The run's closing facts: weights equal on every rank, peak GPU memory, throughput."""
    if run.ranks.is_distributed:
        result.weights_digest, drifted = ranks_with_other_weights(run.model, run.device)
        if drifted:
            run.log.note(f"Warning: the weights of rank(s) {drifted} differ from rank 0's at the end; data-parallel "
                         f"replicas drifted apart (non-deterministic kernels, or an optimizer that steps on local "
                         f"gradients). The checkpoint holds rank 0's.")
        else:
            run.log.note(f"Weights identical on all {run.ranks.world_size} ranks (sha256 "
                         f"{result.weights_digest[:16]})")
    if run.device.type == "cuda":
        result.peak_memory_mib = torch.cuda.max_memory_allocated(run.device) / 2**20
        run.log.note(f"Peak GPU memory: {result.peak_memory_mib:,.0f} MiB (torch.cuda.max_memory_allocated, "
                     f"rank 0)")
    if run.deadline is not None and run.ranks.is_main:  # config.json: the step count the run re-planned and took
        write_json_atomic(run.run_dir / CONFIG_FILE, _config_record(run))
    result.step = step
    result.val_bpb = run.loop["val_bpb"]
    result.first_val_bpb = run.loop["first_val_bpb"]
    result.train_time_s = sum(run.step_times)
    if run.step_times:
        result.tokens_per_sec = len(run.step_times) * run.settings.total_batch_size / result.train_time_s


def _resume_command(run: Run) -> str:
    """The command that continues this run, quoted so that it can be pasted into a shell as it is printed."""
    return f"{_launcher(run.ranks)} train --resume {shlex.quote(str(run.run_dir))}"


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


def _config_record(run: Run) -> dict[str, Any]:
    """What config.json holds: the model, the settings and the machine (the run log's sinks get the same)."""
    model = run.model
    config = {
        "model": model.config.to_dict(),
        "training": run.settings.to_dict(),
        "use": dict(model.use),
        "use_spec": model.use_spec,
        "tokenizer": {"vocab_size": run.tokenizer.vocab_size, "fingerprint": run.tokenizer.fingerprint},
        "num_params": model.num_params(),
        "flops_per_token": model.estimate_flops(),
        "grad_accum_steps": run.accum,
        "world_size": run.ranks.world_size,
        "device": str(run.device),
        "torch": torch.__version__,
    }
    return config

