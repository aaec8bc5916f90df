"""Graded hints for every method a skeleton leaves to the learner: the idea, then the torch API, then the shapes.

A learner stuck on a TODO needs a nudge, not the answer. `nanogpt hint student:attention.forward` shows one more
level per call (or `--level N`):

    1. the idea         why this step exists, what it is for in the model
    2. the torch API    which functions and modules to reach for
    3. the shape recipe the shape of every intermediate tensor, step by step

None of them is the solution: the tests check that no line of the reference's code appears in any hint. The hints
are written once per (component, method), here, beside the skeletons' TODO texts they expand on;
`tests/test_learner_hints.py` reads the skeletons and fails when a TODO has no hints (a new component's hints are
one more entry in `HINTS`) or a hint has no TODO. How many hints a learner took is kept in the workspace
(`nanogpt_core.learn.workspace.record_hint`) and shown by `nanogpt status`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nanogpt_core.errors import UseSpecError, WorkspaceError
from nanogpt_core.learn.status import LEARNING_PATH
from nanogpt_core.learn.workspace import (
    pristine_text,
    read_hint_log,
    record_hint,
    student_text,
    todo_methods,
)
from nanogpt_core.model.contracts import COMPONENT_NAMES

LEVELS = ("the idea", "the torch API", "the shape recipe")


@dataclass(frozen=True)
class Hint:
    idea: str  # level 1: why this step exists
    api: str  # level 2: the torch API to use
    shapes: str  # level 3: the shape recipe

    def level(self, n: int) -> str:
        return (self.idea, self.api, self.shapes)[n - 1]


HINTS: dict[tuple[str, str], Hint] = {
    ("norm", "forward"): Hint(
        idea="RMSNorm rescales every vector to a root-mean-square of 1, so the next layer sees inputs of the same "
             "scale whatever the layer before did. Unlike LayerNorm it subtracts no mean and (here) learns no "
             "weights; a tiny eps keeps an all-zero vector from dividing by zero.",
        api="torch.nn.functional.rms_norm(input, normalized_shape) is the whole computation in one call. By hand: "
            "x.pow(2).mean(dim=-1, keepdim=True), torch.rsqrt, and an eps such as torch.finfo(x.dtype).eps.",
        shapes="x (..., D) -> mean of the squares over the last dimension (..., 1) -> x times its inverse square "
               "root, broadcast over the last dimension -> (..., D), x's dtype. normalized_shape is the 1-tuple "
               "(D,): only the last dimension is normalised.",
    ),
    ("rotary", "precompute"): Hint(
        idea="Rotary turns each position into rotation angles, one per pair of channels, so that q·k later depends "
             "only on how far apart two positions are. The first pairs turn fast, the last ones slowly (a geometric "
             "range of frequencies, like the hands of a clock). The table is computed once for every position and "
             "sliced for each call.",
        api="torch.arange(start, end, step, dtype=torch.float32, device=device) for the even channel indices and "
            "for the positions; `base ** (...)` and a division for the inverse frequencies; torch.outer(positions, "
            "inv_freq); .cos() and .sin(); .bfloat16(); indexing with None (or .unsqueeze) to add size-1 dimensions.",
        shapes="even channel indices (D/2,) -> inverse frequencies (D/2,); positions (seq_len,); their outer "
               "product: angles (seq_len, D/2); cos and sin of it (seq_len, D/2) -> a batch dimension in front and "
               "a head dimension before the last -> (1, seq_len, 1, D/2) each, bfloat16, on `device`.",
    ),
    ("rotary", "apply"): Hint(
        idea="Read channel i of the first half and channel i of the second half as the two coordinates of a point, "
             "and rotate that point by the angle of this position and channel. A rotation keeps the vector's "
             "length, and the dot product of two rotated vectors depends only on the difference of their angles: "
             "the relative position.",
        api="slices of the last dimension, x[..., :d] and x[..., d:]; elementwise * and + (broadcasting lines cos "
            "and sin up with x); torch.cat([...], dim=3); .to(x.dtype), because the bfloat16 table would otherwise "
            "change the result's dtype.",
        shapes="x (B, T, H, D) -> halves x1, x2 (B, T, H, D/2); cos, sin (1, T, 1, D/2) broadcast over batch and "
               "heads; each rotated half (B, T, H, D/2); concatenated on the last dimension -> (B, T, H, D), in x's "
               "dtype. The first rotated half mixes x1*cos with x2*sin; the second mixes -x1*sin with x2*cos.",
    ),
    ("attention", "__init__"): Hint(
        idea="Attention learns four projections: queries, keys and values read from the residual stream, and an "
             "output projection back into it. Keys and values may have fewer heads than queries (grouped-query "
             "attention): several query heads share one key/value head, which shrinks the KV cache. QK-norm "
             "normalises each head's q and k so the attention logits stay bounded. The norm and rotary are handed "
             "to you: build with them, never import them.",
        api="nn.Linear(in_features, out_features, bias=False) for each projection; config.n_embd, config.n_head, "
            "config.n_kv_head; integer division // for the head size; norm(size) builds one norm module; keep "
            "rotary as a plain attribute (a namespace of functions, not a module).",
        shapes="D = head_dim = n_embd // n_head; C = n_embd = H * D. nn.Linear stores its weight as (out, in): c_q "
               "(H*D, C), c_k and c_v (Hkv*D, C), c_proj (C, C). The two QK-norms normalise vectors of length D "
               "(one head), not C.",
    ),
    ("attention", "forward"): Hint(
        idea="Each position asks a question (q), advertises what it holds (k) and what it passes on (v). Scores "
             "q·k/√D say how much each earlier position matters, and the causal mask hides the future, so the model "
             "never sees the token it must predict. Rotary goes on q and k only (position matters for matching, not "
             "for content), then QK-norm; with a KV cache, this call's keys and values join those of the tokens "
             "before.",
        api="self.c_q(x) (and c_k, c_v); .view(B, T, heads, D) to split the heads; self.rotary.apply(t, cos, sin); "
            "self.q_norm, self.k_norm; .transpose(1, 2); kv_cache.insert_kv(self.layer_idx, k, v) returns every key "
            "and value so far; torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=..., "
            "enable_gqa=...); .contiguous().view(...) to merge the heads back; self.c_proj.",
        shapes="x (B, T, C) -> c_q -> (B, T, H*D) -> view (B, T, H, D); c_k, c_v -> (B, T, Hkv, D). Rotary and "
               "QK-norm keep every shape. transpose(1, 2): q (B, H, T, D), k and v (B, Hkv, T, D); after a cache "
               "insert k and v are (B, Hkv, Tk, D). Attention output (B, H, T, D) -> transpose (B, T, H, D) -> "
               "(B, T, C) -> c_proj -> (B, T, C). Causal masking applies when q and k have the same length; a single "
               "decoded query (T = 1) may see every cached key.",
    ),
    ("mlp", "__init__"): Hint(
        idea="The MLP is where each position thinks on its own, after attention has mixed information between "
             "positions: widen the vector, apply a nonlinearity, project back. Nothing is shared across positions.",
        api="nn.Linear(in_features, out_features, bias=False), twice; config.n_embd.",
        shapes="c_fc maps C -> 4C (its weight is (4C, C)); c_proj maps 4C -> C (weight (C, 4C)). Those two names "
               "are the checkpoint keys (transformer.h.i.mlp.c_fc.weight).",
    ),
    ("mlp", "forward"): Hint(
        idea="Expand, squash, contract. relu² (relu, then square) costs what relu costs; squaring keeps negative "
             "inputs at zero, grows smoothly from zero and lets strong features stand out, and it trained faster in "
             "the speedrun experiments nanochat inherits.",
        api="self.c_fc, self.c_proj; torch.relu (or torch.nn.functional.relu); .square() (or ** 2).",
        shapes="x (B, T, C) -> c_fc -> (B, T, 4C) -> relu, then square: still (B, T, 4C) -> c_proj -> (B, T, C).",
    ),
    ("block", "__init__"): Hint(
        idea="A block is one residual layer: it keeps the attention and the MLP it is given (the core built them, "
             "so they are whatever --use chose) and puts one norm in front of each. Keeping them under the "
             "contract's names makes the checkpoint keys read transformer.h.i.attn... as nanochat's do.",
        api="assigning an nn.Module to an attribute registers it as a submodule; norm(config.n_embd) builds a norm "
            "module; keep layer_idx as an attribute too.",
        shapes="Both norms normalise vectors of length C = n_embd. The block adds no weights of its own beyond its "
               "norms' (nanochat's norm has none).",
    ),
    ("block", "forward"): Hint(
        idea="Pre-norm residual: each sub-layer reads a normalised copy of the stream and adds its output back. The "
             "stream itself is never normalised in place, so the gradient reaches every layer through the "
             "additions unchanged; that is what lets deep stacks train. A block whose sub-layers output zeros "
             "passes x through untouched.",
        api="self.attn_norm(x), then self.attn(that, cos_sin, kv_cache); self.mlp_norm, self.mlp; a plain "
            "`x = x + ...` (an in-place += would overwrite a tensor autograd still needs).",
        shapes="Every tensor here is (B, T, C): x -> norm (B, T, C) -> attention (B, T, C) -> added to x; then the "
               "same with the MLP. cos_sin and kv_cache go to the attention unchanged.",
    ),
    ("init", "init_weights"): Hint(
        idea="A fresh model must start where it can learn: weights small enough that activations neither explode "
             "nor vanish through the layers (a std that shrinks with the fan-in), and the output projections at "
             "zero, so every block starts as the identity and the first loss is exactly ln(vocab_size), a number "
             "you can check in the first log line.",
        api="model.modules() with isinstance(m, nn.Linear) / isinstance(m, nn.Embedding); m.weight.shape is "
            "(fan_out, fan_in); torch.nn.init.normal_(tensor, mean, std); math.sqrt; .zero_() (or "
            "torch.nn.init.zeros_); model.transformer.h.named_modules() to find every c_proj; in-place edits of "
            "parameters under torch.no_grad().",
        shapes="A Linear with weight (out, in) has fan_in = in, fan_out = out. c_q (C, C): std = 1/√C. c_fc (4C, C): "
               "fan_out > fan_in, so the min() keeps std = 1/√C. c_k (Hkv*D, C) with fewer KV heads: std = 1/√C · "
               "√(Hkv*D / C). wte (vocab, C) ~ N(0, 1). lm_head (vocab, C) and every c_proj: zeros, so the logits "
               "start at 0 and the first softmax is uniform.",
    ),
    ("optimizer", "setup_optimizers"): Hint(
        idea="Different parameters want different optimizers. The matrices inside the blocks get Muon, which "
             "orthogonalises each update so every direction of a matrix moves at a similar rate; the embedding (a "
             "lookup table) and the head (a readout) get AdamW. Every trainable parameter must sit in exactly one "
             "group, or it never trains (or trains twice); the schedule scales each group from its initial_lr.",
        api="model.transformer.h.parameters() filtered on p.ndim == 2; model.transformer.wte.parameters(), "
            "model.lm_head.parameters(); torch.optim.AdamW(list of dict(params=..., lr=...), betas=..., eps=..., "
            "weight_decay=...); torch.optim.Muon(params, lr=..., momentum=..., nesterov=True, weight_decay=0, "
            "adjust_lr_fn='original'); model.config.n_embd; then every group of opt.param_groups.",
        shapes="Muon takes 2-D tensors only: every matrix of the blocks (c_q, c_k, c_v, c_proj, c_fc). AdamW: "
               "lm_head (vocab, C) at unembedding_lr * s and wte (vocab, C) at embedding_lr * s, where "
               "s = (n_embd / 768) ** -0.5 (s ≈ 1.73 at n_embd = 256); anything else (a 1-D norm weight, a bias) "
               "goes to AdamW too. Return a list of the two optimizers.",
    ),
    ("gpt", "__init__"): Hint(
        idea="The top level owns what every GPT of this family shares: the embedding that turns ids into vectors, "
             "the stack of blocks (ready-made by make_block(i) from what --use chose), a norm before the head, and "
             "the head that reads one logit per vocabulary entry.",
        api="nn.Embedding(num_embeddings, embedding_dim); nn.ModuleDict({...}) and nn.ModuleList([...]) so the "
            "parts are registered under nanochat's checkpoint names; norm(size); nn.Linear(in, out, bias=False).",
        shapes="wte weight (vocab, C); h: n_layer blocks, each (B, T, C) -> (B, T, C); emb_norm, final_norm over "
               "C; lm_head weight (vocab, C), its own matrix, not wte's.",
    ),
    ("gpt", "forward"): Hint(
        idea="Ids in, one prediction per position out: embed, normalise, run every block over the residual stream, "
             "normalise, read out logits, cap them smoothly so none runs away, and with targets score them. With a "
             "KV cache this call's positions start where the cache ends, so the rotary table is sliced from there.",
        api="kv_cache.get_pos(); self.rotary_cos_sin(T0, T); a for loop over self.transformer.h; torch.tanh; "
            ".float() before the loss; torch.nn.functional.cross_entropy(input, target, ignore_index=-1, "
            "reduction=...).",
        shapes="idx (B, T) int64 -> (B, T, C) through every block -> lm_head (B, T, vocab), the softcap keeps it; "
               "for the loss flatten to (B*T, vocab) and (B*T,); 'mean' gives (), 'none' gives (B*T,).",
    ),
    ("gpt", "estimate_flops"): Hint(
        idea="The MFU in the training log needs the FLOPs one training token costs: 2 per weight it meets going "
             "forward, 4 going back; the embedding is a lookup, not a matmul; attention adds work that grows with "
             "the context.",
        api="p.numel() over self.parameters(); self.transformer.wte.weight.numel(); self.config's n_layer, n_head, "
            "head_dim, sequence_len; return an int.",
        shapes="N = all parameters minus vocab*C -> 6*N per token; attention per layer and head: scores and "
               "weighted sum, 2*D*T each forward, x3 with backward -> 12*n_layer*n_head*D*T.",
    ),
    ("generate", "generate"): Hint(
        idea="Generation runs the model in a loop: read the logits of the last position, choose the next token, "
             "feed it back, repeat. Temperature divides the logits (0 means always the most likely token), top-k "
             "keeps only the k best, and a seeded generator makes the same seed give the same text. With a KV cache "
             "the prompt is processed once and every new token costs one position.",
        api="torch.Generator(device=...) and .manual_seed(seed); model.new_kv_cache(batch_size=1, seq_len=...); "
            "model.get_device() says where the model lives; torch.tensor(..., dtype=torch.long, device=...); "
            "model(ids, kv_cache=cache); "
            "torch.argmax; torch.topk; torch.softmax; torch.multinomial(probs, num_samples=1, generator=rng); "
            ".gather; .item(); `yield`; @torch.inference_mode() so no autograd graph is built.",
        shapes="prompt ids (1, P) -> logits (1, P, vocab) -> the last position (1, vocab) -> next id (1, 1); every "
               "later step feeds that (1, 1) and gets logits (1, 1, vocab). With top-k: values and indices (1, k); "
               "sample a position among the k and map it back to a token id. The cache holds P + max_tokens "
               "positions.",
    ),
}


# --- which method a learner asks about -------------------------------------------------------------------------


def hinted_methods(component: str) -> list[str]:
    """The methods of `component` that have hints, in the order a run meets them."""
    ordered = [m for c, m in LEARNING_PATH if c == component and (c, m) in HINTS]
    return ordered + [m for c, m in HINTS if c == component and m not in ordered]


def hint_for(component: str, method: str) -> Hint:
    """The hints of component.method, or a one-line error naming the methods that have some."""
    hint = HINTS.get((component, method))
    if hint is not None:
        return hint
    methods = hinted_methods(component)
    if (component, method) not in todo_methods(pristine_text(component)) and method in _skeleton_methods(component):
        problem = f"{component}.{method} has no hints: the skeleton writes it for you, so there is nothing to fill in"
    else:
        problem = f"{component} has no method {method!r} to fill in"
    raise UseSpecError(f"{problem}; hints exist for {', '.join(f'{component}.{m}' for m in methods)}.")


def _skeleton_methods(component: str) -> list[str]:
    text = pristine_text(component)
    return [line.split("def ", 1)[1].split("(", 1)[0] for line in text.splitlines() if line.lstrip().startswith("def ")]


@dataclass(frozen=True)
class HintChoice:
    component: str
    method: str
    note: str = ""  # why this method, when the learner did not name it


def choose_method(component: str | None, method: str | None, directory: Path | None = None) -> HintChoice:
    """The method a `nanogpt hint` is about: the one named; else the first TODO still in the learner's file(s), in
    the order a run meets them; else (everything written) the first whose hints are not all taken."""
    if component is not None and method is not None:
        hint_for(component, method)
        return HintChoice(component, method)
    components = [component] if component is not None else list(COMPONENT_NAMES)
    todo = {c: todo_methods(student_text(c, directory)) for c in components}
    ordered = [(c, m) for c, m in LEARNING_PATH if c in components]
    ordered += [(c, m) for c in components for m in hinted_methods(c) if (c, m) not in ordered]
    for c, m in ordered:
        if (c, m) in todo[c] and (c, m) in HINTS:
            return HintChoice(c, m)
    if component is None:
        raise WorkspaceError("every skeleton TODO in your files is written, so there is no next hint to give; name "
                             "a method for its hints (nanogpt hint student:attention.forward), or run `nanogpt "
                             "status` to see what does not match the reference yet.")
    taken = read_hint_log(directory)
    methods = hinted_methods(component)
    chosen = next((m for m in methods if taken.get(f"{component}.{m}", 0) < len(LEVELS)), methods[0])
    others = ", ".join(f"student:{component}.{m}" for m in methods if m != chosen)
    return HintChoice(component, chosen, f"{component} has no TODO left, so this is {component}.{chosen}'s hint"
                      + (f"; name another method for its hints: {others}" if others else ""))


@dataclass(frozen=True)
class HintShown:
    component: str
    method: str
    level: int  # the level shown now (1..3)
    hint: Hint
    note: str = ""

    @property
    def last(self) -> bool:
        return self.level == len(LEVELS)


def take_hint(component: str | None = None, method: str | None = None, level: int | None = None,
              directory: Path | None = None) -> HintShown:
    """The next hint level for the chosen method (or `level`), recorded in the workspace's hint log."""
    if level is not None and not 1 <= level <= len(LEVELS):
        raise UseSpecError(f"--level {level}: hints have levels 1 to {len(LEVELS)} ({', '.join(LEVELS)}).")
    choice = choose_method(component, method, directory)
    hint = hint_for(choice.component, choice.method)
    if level is None:
        level = min(read_hint_log(directory).get(f"{choice.component}.{choice.method}", 0) + 1, len(LEVELS))
    record_hint(choice.component, choice.method, level, directory)
    return HintShown(choice.component, choice.method, level, hint, choice.note)

