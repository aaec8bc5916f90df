"""The reference implementation set: nanochat's `gpt.py`, one component per file."""

from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_core.model.registry import REFERENCE_SET
from nanogpt_impls.reference.attention import CausalSelfAttention
from nanogpt_impls.reference.block import Block
from nanogpt_impls.reference.generate import generate
from nanogpt_impls.reference.gpt import GPT
from nanogpt_impls.reference.init import init_weights
from nanogpt_impls.reference.mlp import MLP
from nanogpt_impls.reference.norm import RMSNorm
from nanogpt_impls.reference.optimizer import setup_optimizers
from nanogpt_impls.reference.rotary import Rotary


@hookimpl
def register_components(register):
    register(REFERENCE_SET, "norm", RMSNorm)
    register(REFERENCE_SET, "rotary", Rotary)
    register(REFERENCE_SET, "attention", CausalSelfAttention)
    register(REFERENCE_SET, "mlp", MLP)
    register(REFERENCE_SET, "block", Block)
    register(REFERENCE_SET, "gpt", GPT)
    register(REFERENCE_SET, "init", init_weights)
    register(REFERENCE_SET, "optimizer", setup_optimizers)
    register(REFERENCE_SET, "generate", generate)
