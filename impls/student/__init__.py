"""Your implementation set. Fill in one component at a time; `nanogpt train --use student:<component>` runs it.

Every method starts as `raise NotImplementedError("TODO: ...")`; the message says what to write and where the
reference lives. `nanogpt status` shows how far you are, `nanogpt check student:<component>` tests a piece, and
`nanogpt reset student:<component>` restores a pristine skeleton (your file is backed up first).
"""

from nanogpt_core.hookspecs import hookimpl
from nanogpt_impls.student.attention import CausalSelfAttention
from nanogpt_impls.student.block import Block
from nanogpt_impls.student.generate import generate
from nanogpt_impls.student.init import init_weights
from nanogpt_impls.student.mlp import MLP
from nanogpt_impls.student.norm import RMSNorm
from nanogpt_impls.student.optimizer import setup_optimizers
from nanogpt_impls.student.rotary import Rotary


@hookimpl
def register_components(register):
    register("student", "norm", RMSNorm)
    register("student", "rotary", Rotary)
    register("student", "attention", CausalSelfAttention)
    register("student", "mlp", MLP)
    register("student", "block", Block)
    register("student", "init", init_weights)
    register("student", "optimizer", setup_optimizers)
    register("student", "generate", generate)
