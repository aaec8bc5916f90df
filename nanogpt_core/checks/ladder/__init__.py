"""The diagnosis ladder: when a component fails, which one cause explains it?

A failing check says *that* something is wrong (the output differs, a later token leaks into an earlier one); the
ladder says *what*. Each component has a table of probes, run in order after any failure; each probe sets up one
experiment that isolates one class of mistake (two identical calls differ: randomness; the output holds the
reference's numbers in other places: a layout error; the fitted softmax scale is 1 instead of 1/sqrt(D): the
scale) and returns a failed CheckResult whose diagnosis names it, with the measured number in the detail, or a
passed one. The first probe that finds its cause is what the verdict says first.

Probes of structure come before probes of numbers, and a probe comes before any whose experiment it would confuse
(the values probe runs before the attention-weight readout, which needs untouched values). A new component's
ladder is one more entry in LADDERS (docs/diagnoses.md lists every probe and its threshold).
"""

from nanogpt_core.checks.ladder import attention, block, generate, init, mlp, norm, optimizer, rotary
from nanogpt_core.checks.modules import Check
from nanogpt_core.checks.top_level import GPT_CHECKS

LADDERS: dict[str, tuple[Check, ...]] = {
    "norm": norm.PROBES,
    "rotary": rotary.PROBES,
    "attention": attention.PROBES,
    "mlp": mlp.PROBES,
    "block": block.PROBES,
    "init": init.PROBES,
    "optimizer": optimizer.PROBES,
    "generate": generate.PROBES,
    # the top level's contract checks each isolate one mistake (softcap, a norm, the loss's dtype, ...) already
    "gpt": tuple(GPT_CHECKS),
}
