"""Looking inside: the activation cache equals an independent forward at every capture point, attention patterns are
what each implementation really computes (SDPA or an explicit softmax), the logit lens and the per-layer numbers
match their definitions, and capturing leaves nothing behind."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from independent_gpt import gpt_activations

from nanogpt_core import GPTConfig, build_model
from nanogpt_core.errors import ConfigError
from nanogpt_core.inspection import POINTS, capture, point_names, run_with_cache
from nanogpt_core.inspection.layer_stats import attention_entropy, layer_stats, uniform_entropy
from nanogpt_core.inspection.lens import logit_lens
from nanogpt_core.inspection.patterns import sdpa_weights
from nanogpt_core.inspection.points import select
from nanogpt_core.model import trace
from nanogpt_core.model.contracts import BY_NAME
from nanogpt_impls.reference.attention import CausalSelfAttention
from nanogpt_impls.reference.mlp import MLP

# The fp32 model against the same forward in fp64 (tests/independent_gpt.py), 5 seeds x {reference, alt}: the
# largest error, relative to the point's largest value, was 8.7e-7 (mlp.hidden; 4-6e-7 elsewhere, embed exact).
# A wrong point (attn.in captured as resid_pre, a pattern one layer off) differs by O(1).
FP32_REL_TOL = 5e-6


def randomized(model: nn.Module) -> nn.Module:
    """Weights that make every point non-trivial (the real init zeroes c_proj and lm_head)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 1.0 if p.ndim < 2 or "wte" in name else 1 / math.sqrt(p.shape[1]))
    return model


def max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


@pytest.mark.parametrize("use", ["reference", "alt"])
def test_every_point_equals_an_independent_forward(tiny_config, alt, use):
    """reference: SDPA attention, F.rms_norm; alt: einsum scores and an explicit softmax, rsqrt norm, where-relu²."""
    model = randomized(build_model(tiny_config, use=use))
    idx = torch.randint(0, tiny_config.vocab_size, (2, 13))
    logits, cache = run_with_cache(model, idx)
    assert sorted(cache) == sorted(point_names(tiny_config.n_layer)) and not cache.missing
    assert torch.equal(cache["logits"], logits)
    state = {k: v.double() for k, v in model.state_dict().items()}
    for b in range(idx.size(0)):
        for name, want in gpt_activations(idx[b], state, tiny_config).items():
            assert cache[name][b].shape == want.shape, name
            assert max_rel(cache[name][b], want) < FP32_REL_TOL, name


@pytest.mark.parametrize("use", ["reference", "alt"])
def test_patterns_are_causal_rows_of_probabilities(tiny_config, alt, use):
    model = randomized(build_model(tiny_config, use=use))
    _, cache = run_with_cache(model, torch.randint(0, tiny_config.vocab_size, (3, 11)), names="blocks.*.attn.pattern")
    assert sorted(cache) == [f"blocks.{i}.attn.pattern" for i in range(tiny_config.n_layer)]
    for pattern in cache.per_layer("attn.pattern"):
        assert pattern.shape == (3, tiny_config.n_head, 11, 11)
        assert torch.all(pattern.triu(diagonal=1) == 0)  # exactly: future keys get no weight at all
        assert torch.all(pattern >= 0)
        # rows sum to 1 up to fp32 rounding of a sum of <= 11 terms (measured <= 2.4e-7)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(3, tiny_config.n_head, 11), rtol=0, atol=1e-6)
    how = {cache.how[n] for n in cache}
    assert how == ({"a softmax over the keys"} if use == "alt" else
                   {"F.scaled_dot_product_attention (weights recomputed from its q, k and mask)"})


def test_the_pattern_is_what_the_implementation_computes_not_an_ideal(tiny_config, bugs):
    """An attention that forgot the causal mask shows weight on future keys: the capture reads its own call."""
    model = randomized(build_model(tiny_config, use="bug-no-causal-mask:attention"))
    _, cache = run_with_cache(model, torch.randint(0, tiny_config.vocab_size, (1, 9)))
    future = cache["blocks.0.attn.pattern"].triu(diagonal=1).sum(-1)[..., :-1]  # the last query has no future
    # QK-norm bounds the scores by sqrt(D), so an unmasked softmax gives every key a weight well above 0
    assert torch.all(future > 0) and future.mean() > 0.3


@pytest.mark.parametrize("case", ["causal", "bool mask", "float mask", "scale", "gqa"])
def test_sdpa_weights_times_v_is_sdpa(case):
    """The weights recomputed from an SDPA call's arguments reproduce that call's output (fp64: ~1e-15)."""
    torch.manual_seed(1)
    B, H, Hkv, Tq, Tk, D = 2, 4, 2 if case == "gqa" else 4, 5, 7, 8
    q = torch.randn(B, H, Tq, D, dtype=torch.float64)
    k, v = torch.randn(B, Hkv, Tk, D, dtype=torch.float64), torch.randn(B, Hkv, Tk, D, dtype=torch.float64)
    kwargs = {"causal": dict(is_causal=True), "bool mask": dict(attn_mask=torch.rand(Tq, Tk) > 0.3),
              "float mask": dict(attn_mask=torch.randn(Tq, Tk, dtype=torch.float64)),
              "scale": dict(scale=0.3, is_causal=True), "gqa": dict(enable_gqa=True, is_causal=True)}[case]
    if case == "bool mask":
        kwargs["attn_mask"][:, 0] = True  # every query sees at least one key
    expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
    weights = sdpa_weights(q, k, **kwargs).double()
    values = v.repeat_interleave(H // Hkv, dim=1) if case == "gqa" else v
    # the weights are float32 (what a picture needs): 1e-6 is fp32 rounding of weights in [0, 1] times |v| ~ 3
    torch.testing.assert_close(weights @ values, expected, rtol=0, atol=1e-6)


class HandRolledSoftmax(CausalSelfAttention):
    """exp / sum written out: no softmax call for the recorder to see."""

    def attend(self, q, k, v):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        e = (scores - scores.amax(-1, keepdim=True)).exp()
        return (e / e.sum(-1, keepdim=True)) @ v


class ParameterMLP(nn.Module):
    """c_fc and c_proj as bare nn.Parameters: no c_proj module whose input could be read."""

    def __init__(self, config):
        super().__init__()
        self.w_fc = nn.Parameter(torch.randn(4 * config.n_embd, config.n_embd) / math.sqrt(config.n_embd))
        self.w_proj = nn.Parameter(torch.randn(config.n_embd, 4 * config.n_embd) / math.sqrt(4 * config.n_embd))

    def forward(self, x):
        return F.linear(F.relu(F.linear(x, self.w_fc)).square(), self.w_proj)


def test_what_cannot_be_seen_is_missing_with_the_reason(tiny_config):
    config = GPTConfig(**{**tiny_config.to_dict(), "n_kv_head": tiny_config.n_head})
    model = build_model(config)
    for block in model.transformer.h:
        block.attn.__class__ = HandRolledSoftmax
        block.mlp = ParameterMLP(config)
    randomized(model)
    _, cache = run_with_cache(model, torch.randint(0, config.vocab_size, (1, 6)))
    assert "neither F.scaled_dot_product_attention nor a softmax" in cache.missing["blocks.0.attn.pattern"]
    assert "c_proj is not a module" in cache.missing["blocks.1.mlp.hidden"]
    assert "blocks.1.attn.out" in cache and "blocks.1.mlp.out" in cache  # the rest is still captured
    with pytest.raises(KeyError, match="was not captured: .*neither"):
        cache["blocks.0.attn.pattern"]
    with pytest.raises(KeyError, match="did you mean 'blocks.0.attn.out'"):
        cache["blocks.0.attn.outt"]


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_capture_leaves_the_forward_unchanged_and_nothing_behind(tiny_config, alt):
    for use in ("reference", "alt"):
        model = randomized(build_model(tiny_config, use=use))
        idx = torch.randint(0, tiny_config.vocab_size, (2, 10))
        with torch.no_grad():
            before = model(idx)
            with capture(model) as cache:
                inside = model(idx)
                assert _hook_count(model) > 0
            after = model(idx)
        assert torch.equal(before, inside) and torch.equal(before, after)  # bit for bit: the recorder only watches
        assert _hook_count(model) == 0 and len(cache) == len(point_names(tiny_config.n_layer))


class Exploding(CausalSelfAttention):
    def attend(self, q, k, v):
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        raise RuntimeError("boom")


def test_an_error_inside_attention_leaves_no_function_mode_behind(tiny_config):
    model = randomized(build_model(tiny_config))
    model.transformer.h[1].attn.__class__ = Exploding
    with pytest.raises(RuntimeError, match="boom"), capture(model):
        model(torch.randint(0, tiny_config.vocab_size, (1, 5)))
    assert torch.overrides._get_current_function_mode_stack() == []
    assert _hook_count(model) == 0


def test_points_name_components_as_the_contracts_and_the_trace_do(tiny_config):
    model = build_model(tiny_config)
    for point in POINTS:
        assert point.component in BY_NAME, point
        path = point.path_at(0)
        module = model.get_submodule(path)
        if point.component == "gpt":  # the top level itself, or a plain torch module it owns (the embedding)
            assert module is model or not path.startswith("transformer.h"), point
            continue
        if point.name.endswith("mlp.hidden"):  # a Linear inside the MLP
            continue
        assert trace._module_component(model, path, module) == point.component, point


def test_select_by_pattern_and_refuse_an_unknown_name(tiny_config):
    names = [name for name, _, _ in select(tiny_config.n_layer, ["blocks.*.mlp.*", "logits"])]
    assert names == ["blocks.0.mlp.in", "blocks.0.mlp.hidden", "blocks.0.mlp.out", "blocks.1.mlp.in",
                     "blocks.1.mlp.hidden", "blocks.1.mlp.out", "logits"]
    with pytest.raises(ConfigError, match="no capture point matches 'blocks.0.atn.out'"):
        select(tiny_config.n_layer, ["blocks.0.atn.out"])
    with pytest.raises(ConfigError, match="blocks.5"):
        select(tiny_config.n_layer, ["blocks.5.attn.out"])


def test_the_lens_of_the_last_block_is_the_models_prediction(tiny_config):
    model = randomized(build_model(tiny_config))
    idx = torch.randint(0, tiny_config.vocab_size, (2, 12))
    logits, cache = run_with_cache(model, idx)
    lens = logit_lens(model, cache, idx, sequence=1)
    assert lens.rows == ["embedding", "block 0", "block 1"]
    probs = torch.softmax(logits[1].float(), dim=-1)
    # the same ops on the same tensor: equal to rounding (measured 0)
    torch.testing.assert_close(lens.top_probs[-1], probs.max(-1).values, rtol=0, atol=1e-6)
    assert torch.equal(lens.top_ids[-1], probs.argmax(-1))
    torch.testing.assert_close(lens.next_probs[-1], probs[:-1].gather(1, idx[1, 1:, None])[:, 0], rtol=0, atol=1e-6)
    # the embedding row, independently: rms(wte[idx]) through the head and the softcap
    emb = gpt_activations(idx[1], {k: v.double() for k, v in model.state_dict().items()}, tiny_config)["emb_norm.out"]
    z = emb @ model.lm_head.weight.double().T
    assert torch.equal(lens.top_ids[0], (15 * torch.tanh(z / 15)).argmax(-1))


def test_layer_stats_match_their_definitions(tiny_config):
    model = randomized(build_model(tiny_config))
    idx = torch.randint(0, tiny_config.vocab_size, (2, 9))
    _, cache = run_with_cache(model, idx)
    stats = layer_stats(cache)
    pattern = cache["blocks.1.attn.pattern"].double()
    by_hand = [-(pattern[:, h] * pattern[:, h].clamp_min(1e-300).log()).sum(-1).mean().item()
               for h in range(tiny_config.n_head)]
    assert stats[1].attn_entropy == pytest.approx(by_hand, rel=1e-5)
    hidden_pre = F.linear(cache["blocks.0.mlp.in"], model.transformer.h[0].mlp.c_fc.weight)
    assert stats[0].mlp_zero_fraction == pytest.approx((hidden_pre <= 0).double().mean().item(), abs=1e-9)
    x = cache["blocks.1.resid_post"].double()
    assert stats[1].resid_rms_out == pytest.approx(x.pow(2).mean().sqrt().item(), rel=1e-6)
    assert stats[1].resid_rms_in == pytest.approx(stats[0].resid_rms_out)


def test_entropy_of_uniform_and_one_hot_attention():
    T = 6
    uniform = torch.ones(T, T).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True))[None, None]
    assert attention_entropy(uniform).item() == pytest.approx(uniform_entropy(T, T), rel=1e-6)
    assert uniform_entropy(T, T) == pytest.approx(sum(math.log(n) for n in range(1, T + 1)) / T)
    one_hot = torch.eye(T)[None, None]
    assert attention_entropy(one_hot).item() == 0.0


def test_gradients_still_flow_under_capture(tiny_config):
    """Capturing during training (no torch.no_grad) keeps detached copies and leaves backward alone."""
    model = randomized(build_model(tiny_config))
    idx = torch.randint(0, tiny_config.vocab_size, (1, 8))
    with capture(model, names=["blocks.*.attn.pattern", "logits"]) as cache:
        loss = model(idx, targets=idx)
    loss.backward()
    assert model.transformer.h[0].attn.c_q.weight.grad is not None
    assert not cache["blocks.0.attn.pattern"].requires_grad
    assert "returned the loss" in cache.missing["logits"]


def test_a_student_style_mlp_gives_its_hidden_units(tiny_config):
    """An MLP subclass that keeps c_proj as a module: its relu² activations are the input of c_proj."""

    class LeakyMLP(MLP):
        def forward(self, x):
            return self.c_proj(F.leaky_relu(self.c_fc(x), 0.1).square())

    model = randomized(build_model(tiny_config))
    model.transformer.h[0].mlp.__class__ = LeakyMLP
    _, cache = run_with_cache(model, torch.randint(0, tiny_config.vocab_size, (1, 7)))
    mlp = model.transformer.h[0].mlp
    expected = F.leaky_relu(mlp.c_fc(cache["blocks.0.mlp.in"]), 0.1).square()
    torch.testing.assert_close(cache["blocks.0.mlp.hidden"], expected, rtol=0, atol=0)


def test_token_labels_show_spaces_and_never_an_unprintable_character():
    from nanogpt_core.inspection.pictures import token_label

    assert token_label(" the") == "·the" and token_label("the") == "the"
    assert token_label("a\nb\t") == "a↵b⇥"
    assert token_label("\x00\x1b") == "\\x00\\x1b"  # a byte-level token: escaped, not a missing glyph
    assert token_label("·" * 20, width=10) == "·" * 9 + "…"
