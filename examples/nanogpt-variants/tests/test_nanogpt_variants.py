"""Tests of the variants: each against an independent computation, each through nanogpt's contract checks, and the
extra parameters (LayerNorm's) through the reference optimizer and init.

Run with the package installed (`pip install -e examples/nanogpt-variants`): `pytest examples/nanogpt-variants/tests`.
"""

from __future__ import annotations

import math

import pytest
import torch
from nanogpt_core import GPTConfig, build_model
from nanogpt_core.checks import run_checks
from nanogpt_core.model.assembly import ROTARY_BASE
from nanogpt_core.model.kv_cache import KVCache
from nanogpt_core.model.registry import get_implementation, registrations

from nanogpt_variants import GeluMLP, LayerNorm, SlidingWindowAttention, SwiGLU, TiedGPT
from nanogpt_variants.swiglu import swiglu_hidden

CONFIG = GPTConfig(sequence_len=32, vocab_size=97, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)

# set -> (component, the contract checks that pin the reference's design and must fail for this one, and why)
VARIANTS = {
    "swiglu": ("mlp", {"parameters", "relu² activation"}),  # a third matrix and a gate instead of relu²
    "gelu": ("mlp", {"relu² activation"}),  # the reference's weights, another activation
    "layernorm": ("norm", set()),
    "window": ("attention", set()),
}


@pytest.fixture(autouse=True)
def _seeded_one_thread():
    """Seeded, and on one thread: tiny models run fastest that way (and test machines are often shared)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_plugin_registers_one_set_per_variant():
    regs = registrations()
    for impl_set, (component, _) in VARIANTS.items():
        assert regs[(impl_set, component)].plugin in ("variants", "nanogpt_variants")
    assert get_implementation("swiglu", "mlp") is SwiGLU and get_implementation("window", "attention") is \
        SlidingWindowAttention
    # one component per set: a bare `--use swiglu` cannot swap anything but the MLP
    assert sorted(c for s, c in regs if s in VARIANTS) == ["attention", "mlp", "mlp", "norm"]


@pytest.mark.parametrize("impl_set", sorted(VARIANTS))
def test_variant_passes_every_contract_check_that_does_not_pin_the_reference_design(impl_set):
    component, pinned = VARIANTS[impl_set]
    results = run_checks(impl_set, [component], config=CONFIG)
    assert results and all(r.passed is not None for r in results)
    failed = {r.name for r in results if not r.passed}
    assert failed == pinned, [(r.name, r.detail) for r in results if not r.passed]
    names = {r.name for r in results}
    assert {"model causal", "model gradients", "model KV cache past the training length"} <= names


# --- SwiGLU ---------------------------------------------------------------------------------------------------------


def test_swiglu_matches_the_formula_and_keeps_the_parameter_budget():
    mlp = SwiGLU(CONFIG)
    x = torch.randn(2, 5, 64)
    gate, value = x @ mlp.c_gate.weight.T, x @ mlp.c_fc.weight.T
    expected = (gate / (1 + torch.exp(-gate)) * value) @ mlp.c_proj.weight.T  # silu(a) = a * sigmoid(a)
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
    assert swiglu_hidden(64) == 176 and swiglu_hidden(768) == 2048  # ceil(8C/3) rounded up to a multiple of 8
    relu2_params = 2 * 4 * 64 * 64
    assert abs(sum(p.numel() for p in mlp.parameters()) / relu2_params - 1) < 0.05


# --- GELU -----------------------------------------------------------------------------------------------------------


def test_gelu_mlp_matches_the_tanh_formula():
    mlp = GeluMLP(CONFIG)
    x = torch.randn(2, 5, 64)
    h = x @ mlp.c_fc.weight.T
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp(x), gelu @ mlp.c_proj.weight.T, rtol=1e-5, atol=1e-6)


def test_a_relu2_checkpoint_loads_into_the_gelu_mlp_and_the_window_attention():
    """Same parameter names and shapes as the reference: the state dict moves across unchanged."""
    reference = build_model(CONFIG)
    reference.init_weights()
    for use in ("gelu:mlp", "window:attention"):
        model = build_model(CONFIG, use=use)
        model.load_state_dict(reference.state_dict())  # strict: raises on any key or shape difference


# --- LayerNorm ------------------------------------------------------------------------------------------------------


def test_layernorm_matches_the_formula_with_learned_weight_and_bias():
    norm = LayerNorm(64)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 7, 64) * 5 + 2
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as LayerNorm uses
    expected = (x - mean) / torch.sqrt(var + torch.finfo(torch.float32).eps) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_layernorm_weights_are_reset_by_the_reference_init():
    model = build_model(CONFIG, use="layernorm")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    model.init_weights()
    norms = [m for m in model.modules() if isinstance(m, LayerNorm)]
    assert len(norms) == 2 + CONFIG.n_layer * 4  # embedding + final, and per block: 2 sub-layer norms + QK-norm
    assert all(torch.equal(m.weight, torch.ones(m.dim)) and torch.equal(m.bias, torch.zeros(m.dim)) for m in norms)


def test_layernorm_parameters_go_to_adamw_once_and_train():
    model = build_model(CONFIG, use="layernorm")
    model.init_weights()
    adamw, muon = model.setup_optimizers()
    groups = {id(p): [] for p in model.parameters()}
    for opt in (adamw, muon):
        for group in opt.param_groups:
            for p in group["params"]:
                groups[id(p)].append(type(opt).__name__)
    norm_params = [(n, p) for n, p in model.named_parameters() if n.endswith((".weight", ".bias")) and p.ndim == 1]
    assert len(norm_params) == 2 * (2 + CONFIG.n_layer * 4)
    assert all(len(g) == 1 for g in groups.values())  # every parameter in exactly one group
    assert all(groups[id(p)] == ["AdamW"] for _, p in norm_params)  # vectors: AdamW, never Muon
    before = {n: p.detach().clone() for n, p in norm_params}
    idx = torch.randint(0, CONFIG.vocab_size, (2, 16))
    for _ in range(3):  # the zeroed head blocks gradients to the norms on step 1; later steps reach them
        model(idx, idx.roll(-1, 1)).backward()
        for opt in (adamw, muon):
            opt.step()
        model.zero_grad(set_to_none=True)
    unchanged = [n for n, p in norm_params if torch.equal(p.detach(), before[n])]
    assert not unchanged


# --- sliding-window attention ---------------------------------------------------------------------------------------


def naive_window_attention(attn: SlidingWindowAttention, x: torch.Tensor, cos, sin) -> torch.Tensor:
    """The same computation written out with loops: explicit scores, window mask and softmax, kv head h // group."""
    B, T, C = x.shape
    H, Hkv, D = attn.n_head, attn.n_kv_head, attn.head_dim
    q = attn.rotary.apply((x @ attn.c_q.weight.T).view(B, T, H, D), cos, sin)
    k = attn.rotary.apply((x @ attn.c_k.weight.T).view(B, T, Hkv, D), cos, sin)
    v = (x @ attn.c_v.weight.T).view(B, T, Hkv, D)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = torch.zeros(B, T, H, D)
    for h in range(H):
        kv = h // (H // Hkv)
        for t in range(T):
            lo = max(0, t - attn.window_size + 1)
            scores = (q[:, t, h, None, :] * k[:, lo : t + 1, kv]).sum(-1) / math.sqrt(D)  # (B, keys)
            out[:, t, h] = (scores.softmax(-1)[..., None] * v[:, lo : t + 1, kv]).sum(1)
    return out.reshape(B, T, C) @ attn.c_proj.weight.T


def _attention(window: int | None = None) -> SlidingWindowAttention:
    cls = SlidingWindowAttention if window is None else SlidingWindowAttention.with_window(window)
    attn = cls(CONFIG, 0, norm=get_implementation("reference", "norm"), rotary=get_implementation("reference",
                                                                                                   "rotary"))
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn


def _cos_sin(T: int):
    return get_implementation("reference", "rotary").precompute(T, CONFIG.head_dim, base=ROTARY_BASE)


@pytest.mark.parametrize("window", [None, 3, 1, 64])
def test_window_attention_matches_the_naive_computation(window):
    attn = _attention(window)
    assert attn.window_size == (window or CONFIG.sequence_len // 4)
    x = torch.randn(2, 20, 64)
    cos, sin = _cos_sin(20)
    torch.testing.assert_close(attn(x, (cos, sin), None), naive_window_attention(attn, x, cos, sin), rtol=1e-4,
                               atol=1e-5)


def test_window_attention_sees_exactly_the_last_window_positions():
    attn = _attention(4)
    x = torch.randn(1, 12, 64)
    cos_sin = _cos_sin(12)
    y = attn(x, cos_sin, None)
    for j, seen in ((7, False), (8, True), (11, True)):  # from t = 11, window 4: positions 8..11
        x2 = x.clone()
        x2[:, j] += 1.0
        changed = (attn(x2, cos_sin, None)[:, 11] - y[:, 11]).abs().max().item() > 1e-4
        assert changed == seen, j


def test_window_attention_decodes_past_the_window_with_the_kv_cache():
    attn = _attention(3)
    T = 14
    x = torch.randn(2, T, 64)
    cos, sin = _cos_sin(T)
    cache = KVCache(2, CONFIG.n_kv_head, T, CONFIG.head_dim, num_layers=1)
    pieces = [attn(x[:, :5], (cos[:, :5], sin[:, :5]), cache), attn(x[:, 5:9], (cos[:, 5:9], sin[:, 5:9]), cache)]
    pieces += [attn(x[:, t : t + 1], (cos[:, t : t + 1], sin[:, t : t + 1]), cache) for t in range(9, T)]
    torch.testing.assert_close(torch.cat(pieces, 1), attn(x, (cos, sin), None), rtol=1e-4, atol=1e-5)


def test_with_window_rejects_an_empty_window():
    with pytest.raises(ValueError, match="at least one position"):
        SlidingWindowAttention.with_window(0)


def test_all_variants_together_train_a_few_steps():
    """swiglu, layernorm and window in one model: the loss starts at ln(vocab) (zeroed head) and goes down."""
    model = build_model(CONFIG, use="swiglu,layernorm,window")
    assert model.use_spec == "layernorm:norm,window:attention,swiglu:mlp"
    model.init_weights()
    optimizers = model.setup_optimizers()
    idx = torch.arange(17).repeat(2, 2)[:, :32] % CONFIG.vocab_size  # a repeating pattern a model learns fast
    losses = []
    for _ in range(12):
        loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert abs(losses[0] - math.log(CONFIG.vocab_size)) < 1e-4
    assert losses[-1] < 0.5 * losses[0]


def test_all_variants_run_under_bf16_autocast():
    """Mixed precision as on a GPU (CPU autocast stands in): layer_norm is autocast to fp32, so LayerNorm must hand
    back the input's dtype or attention would get q, k in fp32 and v in bf16."""
    model = build_model(CONFIG, use="swiglu,layernorm,window")  # PyTorch's default init: non-zero logits
    idx = torch.randint(0, CONFIG.vocab_size, (1, 40))  # past the window (8) and the training length (32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(idx)
        cache = model.new_kv_cache(1, 40)
        cached = torch.cat([model(idx[:, :30], kv_cache=cache)] + [model(idx[:, t : t + 1], kv_cache=cache)
                                                                  for t in range(30, 40)], 1)
        loss = model(idx, idx.roll(-1, 1))
    loss.backward()
    assert full.dtype == torch.bfloat16 and torch.isfinite(loss)
    scale = full.float().abs().max().item()
    assert scale > 0.5
    assert (cached.float() - full.float()).abs().max().item() < 0.05 * scale  # bf16 rounding, not a wrong mask


# --- tied embeddings (a whole top level: gpt, init and optimizer) --------------------------------------------------


def test_tied_set_swaps_the_top_level_and_its_init():
    regs = registrations()
    assert sorted(c for s, c in regs if s == "tied") == ["gpt", "init"]
    model = build_model(CONFIG, use="tied")
    assert model.use_spec == "tied:gpt,tied:init"
    assert isinstance(model, TiedGPT) and model.lm_head.weight is model.transformer.wte.weight
    # one matrix, both of nanochat's names: the state dict has the reference's keys and shapes
    reference = build_model(CONFIG)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}
    assert model.num_params() == reference.num_params() - CONFIG.vocab_size * CONFIG.n_embd


def test_tied_logits_read_out_with_the_embedding_matrix():
    """Right after init every block is the identity (zeroed c_proj), so the logits are written out by hand:
    15 tanh(rms(rms(E[idx])) @ E^T / 15), with E the one shared matrix."""
    model = build_model(CONFIG, use="tied")
    model.init_weights()
    idx = torch.randint(0, CONFIG.vocab_size, (2, 9))
    E = model.transformer.wte.weight.detach().double()

    def rms(x):
        return x / x.pow(2).mean(-1, keepdim=True).add(torch.finfo(torch.float32).eps).sqrt()

    expected = 15 * torch.tanh(rms(rms(E[idx])) @ E.T / 15)
    torch.testing.assert_close(model(idx).double(), expected, rtol=1e-5, atol=1e-5)  # fp32 vs fp64: ~1e-6 measured
    assert abs(E.std().item() / 0.02 - 1) < 0.05  # drawn again after the reference init zeroed the head


def test_tied_variant_passes_the_design_checks_and_estimates_its_flops():
    from nanogpt_core.compare import design_checks

    results = design_checks("tied")
    assert all(r.passed for r in results), [(r.component, r.name, r.detail) for r in results if not r.passed]
    names = {(r.component, r.name) for r in results}
    assert ("gpt", "estimate_flops") in names  # a contract: the shared matrix still costs a multiply as the head
    assert ("gpt", "embedding and head apart") not in names  # pinned: tying is the design under test


def test_the_reference_optimizer_trains_the_tied_matrix_once_at_the_heads_rate():
    model = build_model(CONFIG, use="tied")
    model.init_weights()
    adamw, muon = model.setup_optimizers()
    shared = model.lm_head.weight
    groups = [g for g in adamw.param_groups if any(p is shared for p in g["params"])]
    assert len(groups) == 1 and not any(p is shared for g in muon.param_groups for p in g["params"])
    assert groups[0]["lr"] == pytest.approx(0.004 * (CONFIG.n_embd / 768) ** -0.5)
    idx = torch.arange(17).repeat(2, 2)[:, :32] % CONFIG.vocab_size
    losses = []
    for _ in range(12):
        loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        for opt in (adamw, muon):
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.lm_head.weight is model.transformer.wte.weight  # still one matrix after the steps
