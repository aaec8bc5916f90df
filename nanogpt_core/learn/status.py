"""Where a learner stands: the state of every component of an implementation set, and the next thing to do.

States, from least to most done:

    not started        the file is byte-for-byte the pristine skeleton (student set only)
    raises TODO        a smoke run hits the skeleton's NotImplementedError
    raises an error    a smoke run fails inside it (a bug) — or its file does not import
    implemented        the smoke run passes (no TODO left), but the contract checks fail
    passes contract    every contract check passes (`nanogpt check`)
    matches reference  and its outputs/gradients equal the reference's on the same weights (`nanogpt compare`)

The smoke run is what `nanogpt train` does, on a tiny model: build (construction), `init_weights`, one forward and
backward, optimizer setup and step, `estimate_flops`, three generated tokens — in the seed's order. Each component is
smoked alone, the others reference, so one unfinished piece never hides the state of another, and an error that
surfaces in another component's code (a norm whose output breaks attention's matmul) is still its own. The next thing
to do is the first component, in the order a run meets them, that raises or fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanogpt_core.checks import matches_reference, run_checks
from nanogpt_core.errors import ComponentImportError
from nanogpt_core.files import display_path
from nanogpt_core.learn.diagnose import TODO_PREFIX, diagnose
from nanogpt_core.learn.workspace import hints_taken, is_pristine
from nanogpt_core.model.assembly import build_model
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import COMPONENT_NAMES
from nanogpt_core.model.registry import STUDENT_SET, registrations
from nanogpt_core.model.use_spec import known_set
from nanogpt_core.model.workspace_location import locate_student_set

DONE = "matches reference"
# The seed's training command, for the quickest loop: one step of a depth-4 model.
QUICK_TRAIN_FLAGS = ("--depth=4 --max_seq_len=512 --device_batch_size=1 --eval_tokens=512 --core_metric_every=-1 "
                     "--total_batch_size=512 --num_iterations=1")
# The order a run from pristine skeletons meets each TODO (component, method); tests/test_learner_skeletons.py
# rebuilds it by running the skeletons, so this list cannot drift from what a learner sees.
LEARNING_PATH: tuple[tuple[str, str], ...] = (
    ("gpt", "__init__"),  # construction: the model's top level asks for each layer
    ("attention", "__init__"),
    ("mlp", "__init__"),
    ("block", "__init__"),
    ("rotary", "precompute"),  # the core's rotary table, once the model is built
    ("init", "init_weights"),  # weight init
    ("gpt", "forward"),  # forward: the model's own forward runs first, then each part it calls
    ("norm", "forward"),
    ("block", "forward"),
    ("attention", "forward"),
    ("rotary", "apply"),
    ("mlp", "forward"),
    ("optimizer", "setup_optimizers"),  # optimizer
    ("gpt", "estimate_flops"),  # the seed's "FLOPs estimation (optional)", for the MFU the training log prints
    ("generate", "generate"),  # generate
)
COMPONENT_ORDER: tuple[str, ...] = tuple(dict.fromkeys(c for c, _ in LEARNING_PATH))


def smoke_config() -> GPTConfig:
    """Tiny, with grouped-query heads (2 query heads share 1 KV head)."""
    return GPTConfig(sequence_len=16, vocab_size=64, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)


def smoke_run(use: str | dict[str, str] | None, config: GPTConfig | None = None,
              wrap: Callable[[Any], Any] | None = None) -> str:
    """Run a tiny model through every phase `nanogpt train` uses, in the seed's order; raise what it raises.

    Returns the name of the last phase reached ("generate" when all pass). A non-finite loss raises
    FloatingPointError, as training would be meaningless."""
    config = config or smoke_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(config, use=use)  # construction
        model.init_weights()  # weight init
        x = torch.randint(0, config.vocab_size, (2, config.sequence_len))
        loss = model(x, targets=torch.roll(x, -1, dims=1))  # forward
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss.item()} (NaN/Inf) after one forward")
        loss.backward()
        optimizers = model.setup_optimizers()  # optimizer
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        flops = model.estimate_flops()  # training asks for it before its first step, for the MFU
        if not isinstance(flops, int | float) or flops <= 0:
            raise ValueError(f"estimate_flops() returned {flops!r}; expected a positive number of FLOPs per token")
        tokens = list(model.generate([1, 2, 3], 3, temperature=0.0))  # generate
        if len(tokens) != 3 or not all(isinstance(t, int) for t in tokens):
            raise ValueError(f"generate yielded {tokens!r}; expected 3 ints")
    return "generate"


@dataclass
class ComponentStatus:
    component: str
    state: str
    method: str | None = None  # the method that raised, for "raises TODO" / "raises an error"
    message: str = ""  # the TODO text, the error, or the failing checks
    checks_passed: int | None = None
    checks_total: int | None = None
    hints_taken: int = 0  # hint levels seen over the component's methods (`nanogpt hint`; the learner's set only)

    @property
    def done(self) -> bool:
        return self.state == DONE


@dataclass
class NextStep:
    component: str | None
    method: str | None
    message: str
    command: str
    check_command: str | None = None


@dataclass
class StatusReport:
    impl_set: str
    components: list[ComponentStatus] = field(default_factory=list)
    next: NextStep | None = None
    checked: bool = True  # False with --no-checks: no component can be past "implemented"
    workspace: str | None = None  # the learner's folder as the user can open it (the student set, or `directory`)
    found_by: str = ""  # how it was found: "NANOGPT_STUDENT_DIR", "my-gpt/nanogpt.toml", "the source checkout"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _failure(component: str, exc: BaseException, use: dict[str, str]) -> ComponentStatus:
    d = diagnose(exc, use)
    if isinstance(exc, NotImplementedError) and TODO_PREFIX in str(exc):
        return ComponentStatus(component, "raises TODO", d.method if d else None, str(exc))
    if d is not None and d.component == component:
        return ComponentStatus(component, "raises an error", d.method, f"{type(exc).__name__}: {exc}")
    surfaced = f"{d.where} ({d.impl_set})" if d is not None and d.component else "the core"
    return ComponentStatus(component, "raises an error", None, f"{type(exc).__name__}: {exc} — raised in {surfaced}, "
                           f"so check what your {component} returns against its contract")


def component_status(impl_set: str, component: str, directory: Path | None = None,
                     with_checks: bool = True) -> ComponentStatus:
    """The state of one component of `impl_set` (see the module docstring)."""
    use = {component: impl_set}
    try:
        smoke_run(use)
    except ComponentImportError as exc:
        return ComponentStatus(component, "raises an error", None, str(exc))
    except Exception as exc:
        status = _failure(component, exc, use)
        has_workspace = directory is not None or impl_set == STUDENT_SET
        if status.state == "raises TODO" and has_workspace and is_pristine(component, directory):
            status.state = "not started"
        return status
    if not with_checks:
        return ComponentStatus(component, "implemented")
    results = run_checks(impl_set, [component])
    ran = [r for r in results if r.passed is not None]
    failed = [r for r in ran if not r.passed]
    status = ComponentStatus(component, "implemented", checks_passed=len(ran) - len(failed), checks_total=len(ran))
    if failed:
        status.message = "; ".join(f"{r.name}: {r.diagnosis or r.detail}" for r in failed[:3])
        if failed[0].where:
            status.message += f" (at {failed[0].where})"
        return status
    status.state = "passes contract"
    match = matches_reference(impl_set, component)
    if match.passed:
        status.state = DONE
    else:
        status.message = f"differs from reference: {match.diagnosis or match.detail}" + (
            f" (at {match.where})" if match.where else "")
    return status


RAISES = ("not started", "raises TODO", "raises an error")


def next_step(impl_set: str, statuses: list[ComponentStatus]) -> NextStep:
    """The first component, in the order a run meets them, that raises or fails: each was smoked alone (the others
    reference), so the blame is its own even when the error surfaces in another component's code. When every
    component is done alone, what a run with the whole set stops at; else train and compare the whole set."""
    # a component that raises, or whose checks ran and failed, is a definite next step; one that runs but was not
    # checked (--no-checks) may well be done, so it comes only after those
    failing = [s for s in statuses if s.state in RAISES or (s.checks_total is not None and not s.done)]
    for s in failing or [s for s in statuses if not s.done][:1]:
        if s.state in RAISES:
            message = s.message if s.state != "raises an error" or not s.method else f"fix {s.component}." \
                f"{s.method}: {s.message}"
            return NextStep(s.component, s.method, message,
                            f"nanogpt train --use {impl_set}:{s.component} {QUICK_TRAIN_FLAGS}",
                            f"nanogpt check {impl_set}:{s.component}")
        message = f"{s.component} runs but is not done ({s.state}): {s.message}".strip()
        return NextStep(s.component, None, message, f"nanogpt check {impl_set}:{s.component}",
                        f"nanogpt compare --use {impl_set}:{s.component}")
    use = {s.component: impl_set for s in statuses}
    try:
        smoke_run(use)
    except Exception as exc:
        d = diagnose(exc, use)
        if d is not None and d.component is not None:
            return NextStep(d.component, d.method, f"each component passes alone, but together {d.component}."
                            f"{d.method} raises: {type(exc).__name__}: {exc}",
                            f"nanogpt train --use {impl_set} {QUICK_TRAIN_FLAGS} --debug",
                            f"nanogpt compare --use {impl_set}")
        return NextStep(None, None, f"a run with the whole set fails: {type(exc).__name__}: {exc}",
                        f"nanogpt train --use {impl_set} {QUICK_TRAIN_FLAGS} --debug")
    return NextStep(None, None, "every component matches the reference: train your whole set and compare the loss "
                    "curves.", f"nanogpt train --use {impl_set}", f"nanogpt compare --use {impl_set}")


def learner_status(impl_set: str = STUDENT_SET, directory: Path | None = None,
                   with_checks: bool = True) -> StatusReport:
    """The state of every component `impl_set` provides, in the order a run meets them, and the next step."""
    known_set(impl_set)
    workspace, found_by = None, ""
    if directory is not None:
        workspace = display_path(directory)
    elif impl_set == STUDENT_SET:
        location = locate_student_set()
        workspace, found_by = display_path(location.require()), location.found_by
    regs = registrations()
    order = [c for c in COMPONENT_ORDER if c in COMPONENT_NAMES] + [c for c in COMPONENT_NAMES
                                                                   if c not in COMPONENT_ORDER]
    statuses = [component_status(impl_set, c, directory, with_checks) for c in order if (impl_set, c) in regs]
    if directory is not None or impl_set == STUDENT_SET:
        for s in statuses:
            s.hints_taken = hints_taken(s.component, directory)
    return StatusReport(impl_set, statuses, next_step(impl_set, statuses), with_checks, workspace, found_by)
