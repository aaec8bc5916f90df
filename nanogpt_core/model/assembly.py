"""The GPT assembly: one implementation per component, each handed the parts it uses.

What is *not* a component lives here, because it is the same in every GPT of this family: the token embedding,
the head, the logit softcap and the loss. Everything else is looked up in the registry and injected:

    norm       -> every normalisation: after the embedding, in each block, QK-norm inside attention, before the head
    rotary     -> the cos/sin table built here, and the rotation attention applies to q and k
    attention, mlp -> built per layer and handed to `block`
    init, optimizer, generate -> called with the assembled model

The module tree and state-dict keys are nanochat's (`transformer.wte.weight`, `transformer.h.0.attn.c_q.weight`, ...,
`lm_head.weight`), so checkpoints move between the two.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt_core.errors import ComponentError, ConfigError
from nanogpt_core.model.config import GPTConfig
from nanogpt_core.model.contracts import BY_NAME, COMPONENT_NAMES
from nanogpt_core.model.kv_cache import KVCache
from nanogpt_core.model.registry import get_implementation
from nanogpt_core.model.trace import print_config_banner, trace_construction
from nanogpt_core.model.use_spec import UseSpec, format_use, resolve_use

LOGIT_SOFTCAP = 15.0  # logits = 15 * tanh(z / 15): bounded, so no single logit can run away early in training
ROTARY_TABLE_FACTOR = 10  # the cos/sin table covers 10x the training context, as nanochat's does
ROTARY_BASE = 10000


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, use: dict[str, str], parts: dict[str, Any]) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.use = dict(use)  # {component: impl_set}, recorded in checkpoints
        self.parts = dict(parts)  # {component: implementation}
        Norm, rotary = parts["norm"], parts["rotary"]
        Attention, MLP, Block = parts["attention"], parts["mlp"], parts["block"]
        self.rotary = rotary

        # Construction follows the order a learner meets the components in: norm, rotary, then each layer's
        # attention and MLP, which the block receives ready-made.
        self.emb_norm = Norm(config.n_embd)
        self.rotary_seq_len = config.sequence_len * ROTARY_TABLE_FACTOR
        cos, sin = rotary.precompute(self.rotary_seq_len, config.head_dim, base=ROTARY_BASE, device=_current_device())
        check_rotary_table(cos, sin, self.rotary_seq_len, config.head_dim, use["rotary"])
        # non-persistent: derived from the config, so never stored in a checkpoint
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        blocks = []
        for layer_idx in range(config.n_layer):
            attn = Attention(config, layer_idx, norm=Norm, rotary=rotary)
            mlp = MLP(config)
            blocks.append(Block(config, layer_idx, attn=attn, mlp=mlp, norm=Norm))
        self.transformer = nn.ModuleDict(
            {"wte": nn.Embedding(config.vocab_size, config.n_embd), "h": nn.ModuleList(blocks)}
        )
        self.final_norm = Norm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    # --- the parts every GPT of this family shares -------------------------------------------------------------

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        loss_reduction: str = "mean",
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab) softcapped; with targets (B, T) -> the cross-entropy loss.

        Targets equal to -1 are ignored. `loss_reduction="none"` gives per-token losses (B*T,) for bits-per-byte.
        """
        B, T = idx.shape
        T0 = 0 if kv_cache is None else kv_cache.get_pos()
        if T0 + T > self.cos.size(1):
            raise ConfigError(
                f"positions {T0}..{T0 + T - 1} exceed the rotary table of {self.cos.size(1)} positions "
                f"(10 x sequence_len); use a shorter input or a larger sequence_len."
            )
        cos_sin = self.cos[:, T0 : T0 + T], self.sin[:, T0 : T0 + T]
        x = self.transformer.wte(idx)
        x = self.emb_norm(x)
        for block in self.transformer.h:
            x = block(x, cos_sin, kv_cache)
        x = self.final_norm(x)
        logits = self.lm_head(x)
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        logits = logits.float()  # the loss in fp32 even under bf16 autocast
        return F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1, reduction=loss_reduction
        )

    # --- components called with the whole model ---------------------------------------------------------------

    def init_weights(self) -> None:
        """Initialise every parameter with the `init` component (the model is built uninitialised on purpose)."""
        self.parts["init"](self)
        if self.cos.is_meta:  # built on the meta device: materialise the rotary table now
            cos, sin = self.rotary.precompute(self.rotary_seq_len, self.config.head_dim, base=ROTARY_BASE,
                                              device=self.get_device())
            self.cos, self.sin = cos, sin

    def setup_optimizers(self, **lrs: float) -> list[torch.optim.Optimizer]:
        return self.parts["optimizer"](self, **lrs)

    def generate(
        self, tokens: list[int], max_tokens: int, temperature: float = 1.0, top_k: int | None = None, seed: int = 42
    ) -> Iterator[int]:
        return self.parts["generate"](self, tokens, max_tokens, temperature=temperature, top_k=top_k, seed=seed)

    # --- facts about the model ---------------------------------------------------------------------------------

    def new_kv_cache(self, batch_size: int, seq_len: int) -> KVCache:
        c = self.config
        return KVCache(batch_size, c.n_kv_head, seq_len, c.head_dim, c.n_layer)

    def get_device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self) -> int:
        """Training FLOPs per token, nanochat's formula: 6 per non-embedding parameter plus attention's 12*L*H*D*T."""
        c = self.config
        nparams_embedding = self.transformer.wte.weight.numel()
        return 6 * (self.num_params() - nparams_embedding) + 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len

    @property
    def use_spec(self) -> str:
        return format_use(self.use)


def _current_device() -> torch.device:
    """The device tensors are created on right now (honours `with torch.device(...)`)."""
    return torch.empty(0).device


def build_model(
    config: GPTConfig, use: UseSpec = None, device: str | torch.device | None = None, trace: str | None = None
) -> GPT:
    """Assemble a GPT from the implementations `use` picks (default: all reference). Weights are uninitialised:
    call `model.init_weights()` (or load a checkpoint) next.

    `trace` ("flow" or "stats", as `--debug`) prints the seed's config banner and one line per component constructed
    (see `nanogpt_core.model.trace`)."""
    chosen = resolve_use(use)
    parts = {component: get_implementation(chosen[component], component) for component in COMPONENT_NAMES}
    if trace:
        print_config_banner(config)
    with trace_construction(parts, chosen, trace), torch.device(device) if device is not None else nullcontext():
        model = GPT(config, chosen, parts)
    check_tensors_registered(model)
    return model


# --- mistakes that would otherwise train silently wrong ----------------------------------------------------------


def check_rotary_table(cos: Any, sin: Any, seq_len: int, head_dim: int, impl_set: str) -> None:
    """The table's shape is the contract's, or a ComponentError that blames rotary: a (seq_len, D/2) table would
    otherwise fail later, in the core's position check or in attention's broadcasting, naming neither."""
    expected = (1, seq_len, 1, head_dim // 2)
    for name, table in (("cos", cos), ("sin", sin)):
        shape = tuple(getattr(table, "shape", ()))
        if shape != expected:
            raise ComponentError(
                f"rotary ({impl_set}).precompute returned {name} of shape {shape}; the contract says (1, seq_len, 1, "
                f"head_dim // 2) = {expected}: return {name}[None, :, None, :] so it broadcasts over batch and heads "
                f"(nanogpt check {impl_set}:rotary).", component="rotary")



def _owner(model: GPT, module_name: str) -> str:
    """`mlp (student)`: the component whose instance holds `module_name` (the nearest one up the module tree)."""
    modules = dict(model.named_modules())
    parts = module_name.split(".") if module_name else []
    for cut in range(len(parts), -1, -1):
        module = modules[".".join(parts[:cut])]
        for component in ("attention", "mlp", "block", "norm"):
            impl = model.parts[component]
            if isinstance(impl, type) and isinstance(module, impl):
                return f"{component} ({model.use[component]})"
    return "the model"


def check_tensors_registered(model: GPT) -> None:
    """Refuse tensors a component keeps as plain attributes, and attention/MLP modules without any parameters.

    A plain `self.w = torch.randn(...)` is not trained (the optimizer never sees it), not saved in a checkpoint and
    not moved by `.to(device)`; on a CPU it runs, so the mistake would show only as a model that does not learn, or
    as a device error on the first GPU. Caught here, it is one line naming the attribute and the fix.
    """
    for name, module in model.named_modules():
        plain = [attr for attr, value in vars(module).items() if isinstance(value, torch.Tensor)]
        if plain:
            attr = plain[0]
            raise ComponentError(
                f"{_owner(model, name)} keeps self.{attr} ({type(module).__name__}) as a plain tensor, so it is "
                f"not trained, not saved and not moved with the model; make a weight nn.Parameter(...) or register "
                f"a constant with self.register_buffer({attr!r}, ...)."
            )
    for component in ("attention", "mlp"):
        impl = model.parts[component]
        expected = re.search(r"Parameters (.*?)\.?$", BY_NAME[component].shapes)
        instances = [m for m in model.modules() if isinstance(impl, type) and isinstance(m, impl)]
        if expected and instances and not any(p.numel() for m in instances for p in m.parameters()):
            raise ComponentError(
                f"{component} ({model.use[component]}) has no parameters, but its contract expects "
                f"{expected.group(1)}; create them in __init__ (nn.Linear or nn.Parameter) so they are trained."
            )


def optimizer_coverage(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> tuple[list[str], list[str]]:
    """(trainable parameters in no optimizer group, those in more than one), by name."""
    count: dict[int, int] = {}
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                count[id(p)] = count.get(id(p), 0) + 1
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return ([n for n, p in trainable if count.get(id(p), 0) == 0],
            [n for n, p in trainable if count.get(id(p), 0) > 1])


def check_optimizer_coverage(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Every trainable parameter in exactly one optimizer group, or a ComponentError naming the first that is not.

    A parameter left out never changes (training runs, the loss just stalls); one in two groups is updated twice per
    step. Neither raises anywhere in torch, so the training loop asks before its first step.
    """
    missing, twice = optimizer_coverage(model, optimizers)
    impl_set = getattr(model, "use", {}).get("optimizer", "?")
    if missing:
        problem = f"leaves {missing[0]} out of every parameter group, so it would never train"
    elif twice:
        problem = f"puts {twice[0]} in more than one parameter group, so it would be updated twice a step"
    else:
        return
    raise ComponentError(f"optimizer ({impl_set}) {problem}; put every trainable parameter in "
                         f"exactly one group (nanogpt check {impl_set}:optimizer).")
