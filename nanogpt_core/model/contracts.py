"""The contract of every component, in one place.

A component is one swappable piece of the GPT. Its contract says how the core calls it (signature), what the
tensors look like (shapes, dtypes), what it may assume and what it must guarantee. The docs, `nanogpt components`,
the contract checks, the student skeletons' messages and the `--debug` trace all read from here, so a shape is
written down once.

Adding a component is a few lines: append a `Component(...)` to `COMPONENTS` and call it from the assembly
(`nanogpt_core.model.assembly`). The top level is a component too (`gpt`): the core builds each layer for it and
mixes its own facilities (rotary table, KV cache, init/optimizer/generate calls) into the class.

Shapes use B = batch, T = tokens in this call, C = n_embd, H = n_head, Hkv = n_kv_head, D = head_dim = C // H.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["module", "functions", "function"]

PHASES = ("construction", "weight init", "forward", "optimizer", "generate")


@dataclass(frozen=True)
class Component:
    name: str
    phase: str  # the seed's implementation phase in which a run first meets this component
    kind: Kind  # "module": an nn.Module class; "functions": a class of static functions; "function": a function
    summary: str  # one line, shown by `nanogpt components`
    signature: str  # how the core builds or calls it
    shapes: str  # tensors in and out
    guarantees: str  # what the implementation must make true
    members: tuple[str, ...]  # what an implementation must provide (attributes checked at registration)
    entry: str  # the class or function a component file defines (`impls/<set>/<name>.py`), e.g. "RMSNorm"
    why: str = ""  # the design reason, in a sentence or two, for the learner
    injected: tuple[str, ...] = field(default=())  # other components this one receives instead of importing

    @property
    def is_module(self) -> bool:
        return self.kind == "module"


COMPONENTS: tuple[Component, ...] = (
    Component(
        name="norm",
        phase="construction",
        kind="module",
        summary="Normalisation of the last dimension (reference: RMSNorm without weights).",
        signature="Norm(dim: int) -> nn.Module;  norm(x) -> y",
        shapes="x: (..., dim) float  ->  y: (..., dim), same dtype and device",
        guarantees="normalises over the last dimension only; any parameters it owns must be trained (the optimizer "
        "component must put them in a group).",
        members=("__init__", "forward"),
        entry="RMSNorm",
        why="RMSNorm is LayerNorm without the mean and the affine weights: cheaper, and as good in practice. It is "
        "used five times per model: after the embedding, before attention and MLP in every block, on q and k "
        "(QK-norm), and before the head.",
    ),
    Component(
        name="rotary",
        phase="construction",
        kind="functions",
        summary="Rotary position embeddings: a cos/sin table and the rotation of q and k.",
        signature="precompute(seq_len, head_dim, base=10000, device=None) -> (cos, sin);  apply(x, cos, sin) -> x",
        shapes="cos, sin: (1, seq_len, 1, D/2) bfloat16;  x: (B, T, H, D) with cos/sin sliced to (1, T, 1, D/2) "
        "->  (B, T, H, D), x's dtype",
        guarantees="the dot product of a rotated q at position i and a rotated k at position j depends on i - j only.",
        members=("precompute", "apply"),
        entry="Rotary",
        why="Rotating pairs of channels by an angle proportional to the position makes attention scores depend "
        "on relative offsets, with no position parameters to learn and no limit but the table's length.",
    ),
    Component(
        name="attention",
        phase="construction",
        kind="module",
        summary="Causal self-attention with rotary, QK-norm, grouped-query heads and a KV cache.",
        signature="Attention(config, layer_idx, *, norm, rotary) -> nn.Module;  attn(x, cos_sin, kv_cache) -> y",
        shapes="x: (B, T, C); cos_sin: ((1, T, 1, D/2), (1, T, 1, D/2)); kv_cache: KVCache or None  ->  y: (B, T, C). "
        "Parameters c_q (H*D, C), c_k (Hkv*D, C), c_v (Hkv*D, C), c_proj (C, C), no biases.",
        guarantees="position t attends only to positions <= t; with a KV cache, decoding one token at a time gives "
        "the same outputs as one full forward.",
        members=("__init__", "forward"),
        entry="CausalSelfAttention",
        why="QK-norm keeps attention logits bounded so training stays stable; grouped-query heads share keys and "
        "values across query heads, shrinking the KV cache.",
        injected=("norm", "rotary"),
    ),
    Component(
        name="mlp",
        phase="construction",
        kind="module",
        summary="Feed-forward network: c_fc -> relu^2 -> c_proj.",
        signature="MLP(config) -> nn.Module;  mlp(x) -> y",
        shapes="x: (B, T, C)  ->  y: (B, T, C). Parameters c_fc (4C, C), c_proj (C, 4C), no biases.",
        guarantees="acts on each position independently.",
        members=("__init__", "forward"),
        entry="MLP",
        why="relu^2 is as cheap as relu and trains faster in the speedrun experiments nanochat inherits.",
    ),
    Component(
        name="block",
        phase="construction",
        kind="module",
        summary="One pre-norm residual transformer layer: x + attn(norm(x)), then x + mlp(norm(x)).",
        signature="Block(config, layer_idx, *, attn, mlp, norm) -> nn.Module;  block(x, cos_sin, kv_cache) -> x",
        shapes="x: (B, T, C)  ->  (B, T, C). Keeps the given modules as `self.attn` and `self.mlp`.",
        guarantees="the residual stream carries x through unchanged when attn and mlp output zeros.",
        members=("__init__", "forward"),
        entry="Block",
        why="Normalising the input of each sub-layer (pre-norm) and adding its output back keeps a clean gradient "
        "path from the loss to every layer.",
        injected=("attention", "mlp", "norm"),
    ),
    Component(
        name="gpt",
        phase="construction",
        kind="module",
        summary="The model's top level: token embedding, the blocks, final norm, head with logit softcap, the loss.",
        signature="GPT(config, *, make_block, norm) -> nn.Module;  gpt(idx, targets=None, kv_cache=None, "
        "loss_reduction='mean') -> logits or loss;  gpt.estimate_flops() -> int",
        shapes="idx: (B, T) int64; targets: (B, T) int64, -1 = no target  ->  logits (B, T, vocab) in (-15, 15), or "
        "with targets the fp32 cross-entropy: a scalar ('mean', 'sum') or (B*T,) ('none'). make_block(i) returns "
        "layer i ready-made; self.rotary_cos_sin(T0, T) the rotary table for positions T0.. (T0 = "
        "kv_cache.get_pos()). Modules transformer.wte (vocab, C), transformer.h (n_layer blocks), emb_norm, "
        "final_norm, lm_head (vocab, C) without bias.",
        guarantees="logits = 15 * tanh(z / 15) of the head's output z; the loss is computed in fp32 and skips targets "
        "equal to -1; wte and lm_head are two matrices; estimate_flops() is the matmul FLOPs per token of one "
        "forward and backward at sequence_len, as torch's FlopCounterMode counts them.",
        members=("__init__", "forward", "estimate_flops"),
        entry="GPT",
        why="The model is embeddings in, blocks in the middle, a readout at the end. Normalising the embedding and the "
        "last hidden state keeps every block's input at one scale; the softcap keeps logits bounded, so no single "
        "logit can run away early in training; the loss in fp32 keeps bf16 rounding out of the gradient's start.",
        injected=("block", "norm"),
    ),
    Component(
        name="init",
        phase="weight init",
        kind="function",
        summary="Weight initialisation of the assembled model (nanochat's scheme).",
        signature="init_weights(model) -> None  (in place)",
        shapes="Linear weights ~ N(0, std = 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in))); wte ~ N(0, 1); "
        "lm_head and every c_proj = 0.",
        guarantees="every parameter is set; a fresh model's first loss is ln(vocab_size) because lm_head starts at 0.",
        members=("__call__",),
        entry="init_weights",
        why="Zeroed output projections make every block start as the identity, so a deep model trains from step 0.",
    ),
    Component(
        name="optimizer",
        phase="optimizer",
        kind="function",
        summary="Optimizer setup: Muon for block matrices, AdamW for embedding and head.",
        signature="setup_optimizers(model, *, unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, "
        "weight_decay=0.0) -> list[torch.optim.Optimizer]",
        shapes="(no tensors)",
        guarantees="every trainable parameter is in exactly one group; each group records its 'initial_lr'; the Muon "
        "groups carry a 'momentum' the training loop warms up from 0.85 to 0.95.",
        members=("__call__",),
        entry="setup_optimizers",
        why="Muon orthogonalises the update of each weight matrix, which lets matrices take large steps; embeddings "
        "and the head are lookups and readouts, where AdamW works better.",
    ),
    Component(
        name="generate",
        phase="generate",
        kind="function",
        summary="Autoregressive sampling with temperature, top-k and a KV cache.",
        signature="generate(model, tokens: list[int], max_tokens, temperature=1.0, top_k=None, seed=42) "
        "-> Iterator[int]",
        shapes="yields one token id (int) at a time",
        guarantees="temperature 0 is greedy; the same seed gives the same tokens; with the cache, greedy output equals "
        "greedy output recomputing the whole prefix.",
        members=("__call__",),
        entry="generate",
        why="The KV cache keeps each layer's keys and values, so a new token costs one position of compute, not the "
        "whole prefix.",
    ),
)

COMPONENT_NAMES: tuple[str, ...] = tuple(c.name for c in COMPONENTS)
LOGIT_SOFTCAP = 15.0  # the gpt contract's softcap: logits = 15 * tanh(z / 15); the checks hold every gpt to it
BY_NAME: dict[str, Component] = {c.name: c for c in COMPONENTS}


def missing_members(component: str, implementation: object) -> list[str]:
    """The members the contract asks for that `implementation` lacks (`__call__`: it must be callable)."""
    return [m for m in BY_NAME[component].members
            if not (callable(implementation) if m == "__call__" else hasattr(implementation, m))]

