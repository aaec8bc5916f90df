"""nanogpt-variants: five well-known alternatives to nanochat's components, as one nanogpt plugin.

Each variant is its own implementation set, so a bare set name picks exactly the components of one variant:

    --use swiglu          the SwiGLU MLP            (same as --use swiglu:mlp)
    --use gelu            the GELU MLP              (same as --use gelu:mlp)
    --use layernorm       LayerNorm with weights    (same as --use layernorm:norm), everywhere a norm is used
    --use window          sliding-window attention  (same as --use window:attention)
    --use tied            tied embeddings: the model's top level and its init (same as --use tied:gpt,tied:init)
    --use swiglu,layernorm,window   several at once: they provide different components

One set per variant (rather than one `variants` set) because a set can hold one implementation per component:
two MLPs in one set could not both be named on the command line.
"""

from nanogpt_core import hookimpl

from nanogpt_variants.gelu import GeluMLP
from nanogpt_variants.layernorm import LayerNorm
from nanogpt_variants.sliding_window import SlidingWindowAttention
from nanogpt_variants.swiglu import SwiGLU
from nanogpt_variants.tied import TiedGPT, init_tied_weights

__all__ = ["GeluMLP", "LayerNorm", "SlidingWindowAttention", "SwiGLU", "TiedGPT", "init_tied_weights",
           "register_components"]


@hookimpl
def register_components(register):
    register("swiglu", "mlp", SwiGLU)
    register("gelu", "mlp", GeluMLP)
    register("layernorm", "norm", LayerNorm)
    register("window", "attention", SlidingWindowAttention)
    register("tied", "gpt", TiedGPT)
    register("tied", "init", init_tied_weights)
