"""A run that fills a wall-clock budget: `nanogpt train --time 5m` makes the best model it can in five minutes.

What is best depends on the machine and on the data, so the run finds out both before it builds its model:

1. **measure**: each candidate model size (nanochat's depths, smallest first) takes a few micro-steps and an
   optimizer step on this machine, now, in the precision the run will use (a throwaway copy; the run's own random
   numbers are left untouched);
2. **choose**: every candidate's step time says how many tokens it can train on in the time left. Each size has
   a target (`target_tokens`): 20 tokens per parameter (nanochat's ratio), but no more than 3 passes over the
   training text, past which a model learns a small text by heart (measured on tinyshakespeare). The size whose
   budget lands closest to its target wins, so a small corpus gets a model big enough to use the time without
   repeating the text too often, and a large one the model the time can train well. A tokenizer the run trains
   itself gets a vocabulary of about sqrt(characters) (`vocab_for_text`: 1,024 for tinyshakespeare);
3. **keep to it**: the step count is planned from the measured speed, then re-planned from the run's own step
   times (`Deadline`) while the learning rate is still flat, so a machine that turns out faster (compiled code) or
   slower (someone else's job) still ends on time: the warm-down and the last evaluation land before the budget
   is spent.

Every choice the user did not make on the command line is the plan's (`PLANNED`); flags given are kept
(`--depth 4 --time 5m` picks the steps and batch for depth 4). The choice and its reasons are printed, lines
starting with "Budget:". benchmarks/time_to_quality.py measures what the plan reaches on tinyshakespeare against
today's defaults; benchmarks/budget_grid.json holds the runs its constants come from.
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from nanogpt_core.device import autocast_context, available_memory, cpu_has_native_bf16, synchronize, uses_bf16
from nanogpt_core.errors import ConfigError
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.memory import fits, training_need
from nanogpt_core.train.sampling import SAMPLE_MAX_TOKENS, SAMPLE_PROMPTS
from nanogpt_core.train.schedule import lr_multiplier
from nanogpt_core.train.settings import MIN_BUDGET_S, TrainSettings, eval_steps, model_config

# What a plan chooses unless the command line fixed it
PLANNED = ("vocab_size", "depth", "total_batch_size", "num_iterations", "eval_every", "compile", "bf16",
           "warmdown_ratio")
MAX_DEPTH = 12
# The share of the steps the learning rate decays over. Longer than nanochat's 0.2 (its runs see each token once):
# over 3 passes of tinyshakespeare at depth 4, 0.2 gave 2.111 bits per byte held out, 0.5 2.083
# (benchmarks/budget_grid.json).
WARMDOWN_RATIO = 0.5
# nanochat's learning rates are kept: at the same size and passes, matrix lr 0.01 / 0.04 gave 2.133 / 2.090 against
# 2.083 at 0.02; embedding and head lrs doubled 2.134; AdamW weight decay 0.1 2.094.
CANDIDATE_STEPS = 3  # timed micro-steps of each candidate, after one warm-up
GENERATED_TOKENS = 4  # timed to price the samples printed at the end
END_FIXED_S = 2.0  # the last checkpoint and loss.png (matplotlib's first import), measured ~1-1.5 s on 2 CPU cores
MEASURE_SHARE = 0.08  # at most this share of the budget goes to measuring candidates
EVALS_PER_RUN = 8  # evaluations spread over the run (besides step 0): enough for a curve, ~1% of the time
REPLANS = 20  # the step count is re-planned this many times over the flat part of the schedule
EARLY_REPLANS = 5  # ... and at each of the first few boundaries, where the plan meets the run's real speed
RECENT_STEPS = 20  # the step time is the median of this many latest steps
MIN_PLANNED_STEPS = 10  # a plan starts with at least this many; a machine that slow is seen after two and cut short
COMPILE_MIN_BUDGET_S = 120.0  # torch.compile's warm-up (~15-30 s on a CPU) pays for itself above this

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"(?:{_NUMBER}[hms])+|{_NUMBER}")  # 1h30m, 90s, or plain seconds
_DURATION_PART = re.compile(rf"({_NUMBER})([hms]?)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(text: str) -> float:
    """'90s', '5m', '1h', '1h30m', '2.5m' or plain seconds ('300') -> seconds; ConfigError naming the form otherwise."""
    spec = str(text).strip().lower().replace(" ", "")
    if not _DURATION.fullmatch(spec):
        raise ConfigError(f"--time {text!r} is not a duration; write it as 90s, 5m, 1h or 1h30m.")
    total = sum(float(number) * _UNIT_S[unit] for number, unit in _DURATION_PART.findall(spec))
    if not math.isfinite(total) or total < MIN_BUDGET_S:
        raise ConfigError(f"--time {text!r} is {total:g} s, too short to measure and train anything; give at least "
                          f"{MIN_BUDGET_S:g}s, e.g. --time 5m.")
    return total


# --- the rule ----------------------------------------------------------------------------------------------------

# Each model size has a number of tokens it should see: TOKENS_PER_PARAM per parameter (nanochat's data:param ratio,
# Chinchilla's compute-optimal 20), but never more than BEST_EPOCHS passes over a corpus too small for that. On
# tinyshakespeare's first 90% (2 CPU cores, depth 4, batch 4,096, scored on the held-out last 10%;
# benchmarks/budget_grid.json) 2, 3 and 5 passes gave 2.185, 2.159 and 2.205 bits per byte: past ~3 passes the
# model learns the text by heart. A model that trains on more tokens than that only overfits; one that trains on
# fewer is under-trained. Among model sizes of equal passes the size mattered little (depth 4 and 6 at 3 passes:
# 2.159 and 2.155), so the plan takes the size whose budget comes closest (in ratio) to its target, ties to the
# larger one, and fills the budget with it.
TOKENS_PER_PARAM = 20.0
BEST_EPOCHS = 3.0


def target_tokens(params: float, unique: float) -> float:
    """The tokens a model of `params` parameters (all but the token embedding) should train on, from a training
    text of `unique` tokens (math.inf for streamed data, taken never to repeat)."""
    return min(TOKENS_PER_PARAM * params, BEST_EPOCHS * unique)


def misfit(tokens: float, params: float, unique: float) -> float:
    """How far `tokens` is from the model's target, as |log(tokens / target)|: 0 on target, log 2 at twice or
    half of it."""
    if params <= 0 or tokens <= 0:
        return math.inf
    return abs(math.log(tokens / target_tokens(params, unique)))


# Vocabulary: a tokenizer the run trains itself gets about sqrt(characters) tokens, a power of two. On the same
# 1M characters 512, 1,024, 2,048 and 4,096 tokens gave 2.145, 2.111, 2.123 and 2.159 bits per byte at 3 passes:
# a large vocabulary on a small text has many tokens seen too rarely to learn. nanochat's 65,536 is the ceiling.
MIN_PLANNED_VOCAB, MAX_PLANNED_VOCAB = 512, 65536


def vocab_for_text(chars: float) -> int:
    """The vocabulary size a --time run's own tokenizer gets for a training text of `chars` characters."""
    if not chars > 0 or not math.isfinite(chars):
        return MAX_PLANNED_VOCAB if chars == math.inf else MIN_PLANNED_VOCAB
    size = 2 ** round(math.log2(math.sqrt(chars)))
    return int(min(MAX_PLANNED_VOCAB, max(MIN_PLANNED_VOCAB, size)))


# --- measuring ---------------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One model size, as measured on this machine, and what it would do with the budget."""

    depth: int
    config: GPTConfig
    params: int  # all but the token embedding: what the scaling rule counts
    micro_s: float  # forward + backward of one micro-batch
    optimizer_s: float  # every optimizer's step
    forward_s: float  # a forward alone, as an evaluation batch costs
    token_s: float  # one generated token, as the samples at the end cost
    accum: int = 1
    steps: int = 0
    tokens: int = 0
    misfit: float = math.inf  # |log(tokens / target tokens)|: the plan takes the least

    @property
    def step_s(self) -> float:
        return self.accum * self.micro_s + self.optimizer_s


def measure_candidate(config: GPTConfig, settings: TrainSettings, device: torch.device, bf16: bool) -> Candidate:
    """Time a throwaway model of this shape (built with the run's --use): a warm-up micro-step, then CANDIDATE_STEPS
    forward + backward passes, an optimizer step and a forward on random tokens."""
    model = build_model(config, use=settings.use, device=device)
    model.init_weights()
    optimizers = model.setup_optimizers(**settings.optimizer_lrs())
    x = torch.randint(0, config.vocab_size, (settings.device_batch_size, config.sequence_len), device=device)

    def micro_step() -> None:
        with autocast_context(device, bf16):
            loss = model(x, x)
        loss.backward()

    def optimizer_step() -> None:
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad(), autocast_context(device, bf16):
            model(x, x)

    def generate() -> None:
        with autocast_context(device, bf16):
            list(model.generate(x[0, :8].tolist(), GENERATED_TOKENS, temperature=0.0))

    micro_step()
    optimizer_step()
    # the least of the timings: on a machine shared with other work the fastest run is the least disturbed, and the
    # run's own step times correct the plan as it goes (Deadline)
    micro_s = min(_timed(micro_step, device) for _ in range(CANDIDATE_STEPS))
    optimizer_s = _timed(optimizer_step, device)
    forward_s = _timed(forward, device)
    token_s = _timed(generate, device) / GENERATED_TOKENS
    params = sum(p.numel() for p in model.parameters()) - model.transformer.wte.weight.numel()
    return Candidate(config.n_layer, config, params, micro_s, optimizer_s, forward_s, token_s)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


# --- planning ----------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """The settings a budget chose, the candidates it weighed and why (the lines the run prints)."""

    settings: TrainSettings
    candidates: list[Candidate]
    chosen: Candidate
    end_reserve_s: float  # what the end of the run takes: the last evaluation, samples, checkpoint and plot
    lines: list[str] = field(default_factory=list)


def plan_run(settings: TrainSettings, unique_tokens: float, vocab_size: int, device: torch.device,
             time_left_s: float, copies: int = 1) -> Plan:
    """The settings that should reach the lowest validation loss in `time_left_s` seconds on `unique_tokens` tokens
    of training text (see the module docstring). `settings` is left unchanged; `Plan.settings` is the run's."""
    fixed = set(settings.time_budget_fixed)
    bf16 = settings.bf16 if "bf16" in fixed else _bf16_by_default(device)
    compile_ = settings.compile if "compile" in fixed else _compiles_by_default(device, settings, time_left_s)
    started = time.perf_counter()
    candidates: list[Candidate] = []
    depths = [settings.depth] if "depth" in fixed else range(1, MAX_DEPTH + 1)
    free = available_memory(device)
    best: Candidate | None = None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for depth in depths:
            config = _config_at(settings, depth, vocab_size)
            if config is None or not fits(training_need(config, settings.device_batch_size, device), free, copies):
                continue
            spent = time.perf_counter() - started
            if candidates and spent > MEASURE_SHARE * time_left_s:
                break  # measuring longer would eat the time it is meant to use well
            candidate = measure_candidate(config, settings, device, bf16)
            _fill_candidate(candidate, settings, fixed, unique_tokens, time_left_s - spent)
            candidates.append(candidate)
            if best is not None and candidate.steps < MIN_STEPS:
                break  # too few steps to optimise in (and bigger models take fewer)
            if best is None or candidate.misfit <= best.misfit:
                best = candidate
            elif candidate.tokens < target_tokens(candidate.params, unique_tokens):
                break  # past the best, and under-trained: bigger models only fall further short
    if best is None:
        raise ConfigError("--time: no model size fits this device's memory; try a smaller --device-batch-size.")
    measured_s = time.perf_counter() - started
    _fill_candidate(best, settings, fixed, unique_tokens, time_left_s - measured_s)
    planned = TrainSettings.from_dict(settings.to_dict())
    planned.depth = best.depth
    planned.total_batch_size = best.accum * settings.device_batch_size * settings.max_seq_len
    planned.num_iterations = best.steps
    planned.compile, planned.bf16 = compile_, bf16
    if "warmdown_ratio" not in fixed:
        planned.warmdown_ratio = WARMDOWN_RATIO
    if "eval_every" not in fixed:
        planned.eval_every = max(1, math.ceil(best.steps / EVALS_PER_RUN))
    lines = _explain(candidates, best, unique_tokens, time_left_s, measured_s, planned, fixed, device)
    eval_s = eval_steps(settings.eval_tokens, settings.device_batch_size, settings.max_seq_len) * best.forward_s
    samples_s = len(SAMPLE_PROMPTS) * (SAMPLE_MAX_TOKENS + 8) * best.token_s
    return Plan(planned, candidates, best, eval_s + samples_s + END_FIXED_S, lines)


def _config_at(settings: TrainSettings, depth: int, vocab_size: int) -> GPTConfig | None:
    """nanochat's shape at this depth, or None where it has no valid one (depth 5: width 320 in heads of 128)."""
    try:
        return model_config(TrainSettings.from_dict({**settings.to_dict(), "depth": depth}), vocab_size)
    except ConfigError:
        return None


def _fill_candidate(c: Candidate, settings: TrainSettings, fixed: set[str], unique_tokens: float,
                    time_left_s: float) -> None:
    """The batch, steps and tokens this candidate gets in the time left, and the loss the rule expects of them."""
    micro_tokens = settings.device_batch_size * settings.max_seq_len
    if "total_batch_size" in fixed:
        c.accum = max(1, settings.total_batch_size // micro_tokens)
    else:
        c.accum = batch_accumulation(micro_tokens)
    eval_batches = eval_steps(settings.eval_tokens, settings.device_batch_size, settings.max_seq_len)
    evals_s = (EVALS_PER_RUN + 2) * eval_batches * c.forward_s  # step 0, the spread ones, the last
    c.steps = max(MIN_PLANNED_STEPS, int((time_left_s - evals_s) / c.step_s))
    c.tokens = c.steps * c.accum * micro_tokens
    c.misfit = misfit(c.tokens, c.params, unique_tokens)


# The batch, in tokens. Measured on tinyshakespeare (depth 4, 3 passes): 4,096 tokens 2.111 bpb, 2,048 2.129; and
# doubling it to keep Muon's fixed cost a small share of the step halves the steps, which did worse (depth 7 at
# 8,192 tokens, 121 steps: 2.139; depth 6 at 4,096, 349 steps: 2.079).
BATCH_TOKENS = 4096
MIN_STEPS = 250  # a plan gives its model at least this many optimizer steps: bigger models with fewer did worse


def batch_accumulation(micro_tokens: int) -> int:
    """Micro-batches a step: the fewest that make BATCH_TOKENS."""
    return max(1, math.ceil(BATCH_TOKENS / micro_tokens))


def _bf16_by_default(device: torch.device) -> bool:
    """bf16 where it is native: a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX (measured ~1.6-1.9x faster
    steps, compiled, at depths 2-6: benchmarks/cpu_speed.py)."""
    return uses_bf16(device) or (device.type == "cpu" and cpu_has_native_bf16())


def _compiles_by_default(device: torch.device, settings: TrainSettings, time_left_s: float) -> bool:
    """torch.compile when its warm-up pays off: a budget of at least COMPILE_MIN_BUDGET_S, no --debug trace, and on
    a CPU a C++ compiler for inductor's kernels."""
    if settings.debug or time_left_s < COMPILE_MIN_BUDGET_S:
        return False
    return device.type == "cuda" or (device.type == "cpu" and shutil.which("g++") is not None)


def _explain(candidates: Sequence[Candidate], best: Candidate, unique_tokens: float, time_left_s: float,
             measured_s: float, planned: TrainSettings, fixed: set[str], device: torch.device) -> list[str]:
    precision = "bf16" if planned.bf16 else "fp32"
    lines = [f"Budget: {_duration(time_left_s)} left for training; measured {len(candidates)} model size(s) on this "
             f"{device.type} in {measured_s:.1f} s ({precision}, eager); the training text is "
             f"{_corpus_size(unique_tokens)}."]
    for c in candidates:
        mark = "  <- chosen" if c is best else ""
        lines.append(f"Budget:   depth {c.depth}: {c.params / 1e6:5.2f}M params, {1000 * c.step_s:6.0f} ms/step -> "
                     f"{c.steps:,} steps x {c.accum * planned.device_batch_size * planned.max_seq_len:,} tokens = "
                     f"{c.tokens / 1e6:.2f}M tokens ({_epochs(c.tokens, unique_tokens)}); its target "
                     f"{target_tokens(c.params, unique_tokens) / 1e6:.2f}M{mark}")
    why = "given" if "depth" in fixed else (
        f"its tokens closest to its target: min({TOKENS_PER_PARAM:g} per parameter, {BEST_EPOCHS:g} passes over the "
        f"text)")
    extras = [f"compile {'on' if planned.compile else 'off'}", f"bf16 {'on' if planned.bf16 else 'off'}",
              f"eval every {planned.eval_every} steps",
              f"warm-down over the last {planned.warmdown_ratio:.0%} of the steps"]
    lines.append(f"Budget: depth {best.depth} ({why}), {planned.num_iterations:,} steps x "
                 f"{planned.total_batch_size:,} tokens; {', '.join(extras)}. The steps are re-planned from the "
                 f"run's own step times while the learning rate is flat.")
    return lines


def _corpus_size(unique_tokens: float) -> str:
    return f"{unique_tokens:,} tokens" if math.isfinite(unique_tokens) else "streamed (taken to be never repeated)"


def _epochs(tokens: float, unique_tokens: float) -> str:
    return f"{tokens / unique_tokens:.1f} epochs" if math.isfinite(unique_tokens) else "streamed"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# --- keeping to the budget ----------------------------------------------------------------------------------------


class Deadline:
    """Re-plans `settings.num_iterations` at step boundaries from the run's measured step and evaluation times, so
    the run ends at `end` (a `time.perf_counter()` value) with `end_reserve_s` left for its last evaluation, samples
    and checkpoint. Only while the learning rate is flat: a step count changed there changes no update already made
    (the flat part's multiplier is 1 whatever the count, and Muon's momentum warm-up counts steps from 0), so the
    schedule stays nanochat's, only longer or shorter. Once the warm-down has begun the count is kept.

    `agree` makes every rank of a data-parallel run take rank 0's count (each measures its own times)."""

    def __init__(self, settings: TrainSettings, end: float, end_reserve_s: float,
                 agree: Callable[[int], int] | None = None) -> None:
        self.settings = settings
        self.end = end
        self.end_reserve_s = end_reserve_s
        self.agree = agree
        self.planned = self.said = settings.num_iterations
        self.every = max(1, settings.num_iterations // REPLANS)
        self.step_times: list[float] = []  # boundary to boundary, evaluations taken out
        self.eval_times: list[float] = []
        self.step_s = 0.0  # the latest estimate of a step's time
        self.frozen = False
        self._last: float | None = None
        self._eval_since = 0.0

    def observe_eval(self, seconds: float) -> None:
        self.eval_times.append(seconds)
        self._eval_since += seconds

    def boundary(self, step: int, now: float | None = None) -> int | None:
        """At the boundary before `step`: record the time since the last one, and return the new step count if
        it changed (None otherwise)."""
        now = time.perf_counter() if now is None else now
        if self._last is not None:
            self.step_times.append(now - self._last - self._eval_since)
        self._last, self._eval_since = now, 0.0
        s = self.settings
        # from the second step on (the first includes the warm-up: compilation, first allocations), at every
        # boundary for the first few, then REPLANS times over the run
        if self.frozen or len(self.step_times) < 2 or (step > EARLY_REPLANS and step % self.every):
            return None
        if lr_multiplier(step, s.num_iterations, s.warmup_ratio, s.warmdown_ratio, s.final_lr_frac) < 1.0:
            self.frozen = True  # in the warm-down: the count is what its slope was made for
            return None
        self.step_s = statistics.median(self.step_times[1:][-RECENT_STEPS:])
        eval_s = statistics.median(self.eval_times) if self.eval_times else 0.0
        left = self.end - now - self.end_reserve_s - eval_s  # the last evaluation comes after the last step
        per_step = self.step_s + (eval_s / s.eval_every if s.eval_every > 0 else 0.0)  # evaluations to come
        new = step + max(1, int(left / per_step))
        if self.agree is not None:
            new = self.agree(new)
        if new - round(s.warmdown_ratio * new) < step:  # late already: warm down from here, overrunning the least
            new = max(step + 1, math.ceil(step / max(1e-9, 1 - s.warmdown_ratio)))
            self.frozen = True
        if new == s.num_iterations:
            return None
        s.num_iterations = new
        return new
