"""The reference implementation set: nanochat's `gpt.py`, one component per file."""

from nanogpt_core.model.hookspecs import hookimpl
from nanogpt_impls.reference.attention import CausalSelfAttention
from nanogpt_impls.reference.block import Block
from nanogpt_impls.reference.generate import generate
from nanogpt_impls.reference.init import init_weights
from nanogpt_impls.reference.mlp import MLP
from nanogpt_impls.reference.norm import RMSNorm
from nanogpt_impls.reference.optimizer import setup_optimizers
from nanogpt_impls.reference.rotary import Rotary


@hookimpl
def register_components(register):
    register("reference", "norm", RMSNorm)
    register("reference", "rotary", Rotary)
    register("reference", "attention", CausalSelfAttention)
    register("reference", "mlp", MLP)
    register("reference", "block", Block)
    register("reference", "init", init_weights)
    register("reference", "optimizer", setup_optimizers)
    register("reference", "generate", generate)
