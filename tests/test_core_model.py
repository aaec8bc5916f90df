"""The reference GPT against independent computations: whole-model logits, each component, init, flops, keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from independent_gpt import gpt_logits, rms, rotary_table, rotate

from nanogpt_core import GPTConfig, build_model
from nanogpt_core.errors import ConfigError
from nanogpt_impls.reference.attention import CausalSelfAttention
from nanogpt_impls.reference.mlp import MLP
from nanogpt_impls.reference.norm import RMSNorm
from nanogpt_impls.reference.rotary import Rotary


def randomised(model) -> torch.nn.Module:
    """Reference init, then a random head and random output projections, so every path carries signal."""
    model.init_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "lm_head.weight" or name.endswith("c_proj.weight"):
                p.normal_(0, 0.5 / math.sqrt(p.shape[1]))
    return model


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_reference_logits_match_independent_forward(tiny_config, n_kv_head):
    tiny_config.n_kv_head = n_kv_head
    model = randomised(build_model(tiny_config))
    idx = torch.randint(0, tiny_config.vocab_size, (2, tiny_config.sequence_len))
    expected = gpt_logits(idx, model.state_dict(), tiny_config)
    got = model(idx)
    assert got.shape == (2, tiny_config.sequence_len, tiny_config.vocab_size)
    assert (got - expected).abs().max().item() <= 1e-5
    assert got.abs().max().item() > 0.1  # the comparison is not between two near-zero tensors


def test_loss_is_cross_entropy_of_softcapped_logits_with_ignore_index(tiny_config):
    model = randomised(build_model(tiny_config))
    idx = torch.randint(0, tiny_config.vocab_size, (2, 16))
    targets = torch.randint(0, tiny_config.vocab_size, (2, 16))
    targets[0, :5] = -1
    logits = gpt_logits(idx, model.state_dict(), tiny_config)
    logp = torch.log_softmax(logits, dim=-1)
    keep = targets >= 0
    expected = -logp[keep].gather(1, targets[keep][:, None]).mean()
    assert model(idx, targets=targets).item() == pytest.approx(expected.item(), abs=1e-5)
    per_token = model(idx, targets=targets, loss_reduction="none")
    assert per_token.shape == (32,) and per_token.view(2, 16)[0, :5].abs().max().item() == 0.0


def test_softcap_bounds_logits(tiny_config):
    model = randomised(build_model(tiny_config))
    with torch.no_grad():
        model.lm_head.weight.mul_(1000.0)
    logits = model(torch.randint(0, tiny_config.vocab_size, (1, 8)))
    assert logits.abs().max().item() <= 15.0
    assert logits.abs().max().item() > 14.0  # saturating, so the cap is what bounds it


def test_first_loss_is_ln_vocab(tiny_config):
    model = build_model(tiny_config)
    model.init_weights()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 16))
    assert model(idx, targets=idx).item() == pytest.approx(math.log(tiny_config.vocab_size), abs=1e-6)


def test_rms_norm_matches_hand_formula_over_last_dim():
    x = torch.randn(3, 5, 16) * 7 + 2
    y = RMSNorm(16)(x)
    expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)
    assert torch.allclose(y, expected, atol=1e-6)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3, 5), atol=1e-5)
    assert list(RMSNorm(16).parameters()) == []


def test_rotary_table_and_rotation_match_hand_computation():
    T, D = 12, 8
    cos, sin = Rotary.precompute(T, D)
    assert cos.shape == (1, T, 1, D // 2) and cos.dtype == torch.bfloat16
    ref_cos, ref_sin = rotary_table(T, D)
    assert torch.equal(cos[0, :, 0].float(), ref_cos) and torch.equal(sin[0, :, 0].float(), ref_sin)
    # position 1, channel 0 rotates by exactly 1 radian
    assert cos[0, 1, 0, 0].item() == pytest.approx(math.cos(1.0), abs=4e-3)
    x = torch.randn(2, T, 3, D)
    y = Rotary.apply(x, cos, sin)
    for b in range(2):
        for h in range(3):
            assert torch.allclose(y[b, :, h], rotate(x[b, :, h], ref_cos, ref_sin), atol=1e-6)


def test_rotary_dot_product_depends_only_on_relative_offset():
    D = 16
    cos, sin = Rotary.precompute(64, D)
    q, k = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)

    def score(i: int, j: int) -> float:
        qi = Rotary.apply(q, cos[:, i : i + 1], sin[:, i : i + 1])
        kj = Rotary.apply(k, cos[:, j : j + 1], sin[:, j : j + 1])
        return (qi * kj).sum().item()

    # bf16 cos/sin make the rotation orthogonal only to ~1e-2 relative
    tol = 2e-2 * q.norm().item() * k.norm().item()
    for offset in (0, 3, 10):
        base = score(offset, 0)
        for shift in (5, 17, 40):
            assert score(offset + shift, shift) == pytest.approx(base, abs=tol)
    assert abs(score(10, 0) - score(0, 0)) > 10 * tol  # and it does depend on the offset


def test_attention_is_causal(tiny_config):
    attn = CausalSelfAttention(tiny_config, 0, norm=RMSNorm, rotary=Rotary)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.1)
    cos, sin = Rotary.precompute(64, tiny_config.head_dim)
    x = torch.randn(1, 16, tiny_config.n_embd)
    y = attn(x, (cos[:, :16], sin[:, :16]), None)
    x2 = x.clone()
    x2[:, 9:] = torch.randn(1, 7, tiny_config.n_embd)
    y2 = attn(x2, (cos[:, :16], sin[:, :16]), None)
    assert torch.allclose(y[:, :9], y2[:, :9], atol=1e-6)
    assert not torch.allclose(y[:, 9:], y2[:, 9:], atol=1e-3)


@pytest.mark.parametrize("n_kv_head", [1, 4])
def test_gqa_parameter_shapes(tiny_config, n_kv_head):
    tiny_config.n_kv_head = n_kv_head
    attn = CausalSelfAttention(tiny_config, 0, norm=RMSNorm, rotary=Rotary)
    D = tiny_config.head_dim
    assert attn.c_q.weight.shape == (tiny_config.n_head * D, tiny_config.n_embd)
    assert attn.c_k.weight.shape == (n_kv_head * D, tiny_config.n_embd)
    assert attn.c_v.weight.shape == (n_kv_head * D, tiny_config.n_embd)
    assert all(m.bias is None for m in (attn.c_q, attn.c_k, attn.c_v, attn.c_proj))


def test_mlp_is_relu_squared():
    cfg = GPTConfig(n_embd=8, n_head=1, n_kv_head=1)
    mlp = MLP(cfg)
    x = torch.randn(2, 3, 8)
    h = x @ mlp.c_fc.weight.T
    expected = torch.where(h > 0, h * h, torch.zeros_like(h)) @ mlp.c_proj.weight.T
    assert torch.allclose(mlp(x), expected, atol=1e-6)
    assert mlp.c_fc.weight.shape == (32, 8) and mlp.c_proj.weight.shape == (8, 32)


def test_init_statistics():
    cfg = GPTConfig(sequence_len=16, vocab_size=512, n_layer=2, n_head=2, n_kv_head=1, n_embd=256)
    model = build_model(cfg)
    model.init_weights()
    sd = model.state_dict()
    for name, w in sd.items():
        if name == "lm_head.weight" or name.endswith("c_proj.weight"):
            assert w.abs().max().item() == 0.0, name
        elif name == "transformer.wte.weight":
            assert w.std().item() == pytest.approx(1.0, rel=0.02) and abs(w.mean().item()) < 0.02
        else:
            fan_out, fan_in = w.shape
            expected = 1 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
            assert w.std().item() == pytest.approx(expected, rel=0.03), name
    # c_k of a GQA layer is wide: its std is shrunk by sqrt(fan_out/fan_in) = sqrt(128/256)
    assert sd["transformer.h.0.attn.c_k.weight"].std().item() == pytest.approx(1 / 16 * math.sqrt(0.5), rel=0.03)


def test_state_dict_keys_are_nanochats(tiny_config):
    model = build_model(tiny_config)
    keys = list(model.state_dict())
    expected = ["transformer.wte.weight"]
    for i in range(tiny_config.n_layer):
        expected += [f"transformer.h.{i}.attn.c_{n}.weight" for n in ("q", "k", "v", "proj")]
        expected += [f"transformer.h.{i}.mlp.c_fc.weight", f"transformer.h.{i}.mlp.c_proj.weight"]
    expected.append("lm_head.weight")
    assert keys == expected
    assert "cos" not in keys  # rotary tables are derived, never stored
    assert model.cos.shape == (1, 10 * tiny_config.sequence_len, 1, tiny_config.head_dim // 2)


def test_estimate_flops_and_param_count(tiny_config):
    model = build_model(tiny_config)
    c = tiny_config
    D = c.head_dim
    per_layer = c.n_embd * (c.n_head * D + 2 * c.n_kv_head * D + c.n_embd) + 2 * 4 * c.n_embd * c.n_embd
    n = 2 * c.vocab_size * c.n_embd + c.n_layer * per_layer
    assert model.num_params() == n
    assert model.estimate_flops() == 6 * (n - c.vocab_size * c.n_embd) + 12 * c.n_layer * c.n_head * D * c.sequence_len


def test_from_depth_follows_nanochat_sizing():
    cfg = GPTConfig.from_depth(4, vocab_size=65536, sequence_len=512)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head) == (4, 256, 2, 2)
    cfg20 = GPTConfig.from_depth(20)
    assert (cfg20.n_embd, cfg20.n_head) == (1280, 10)
    assert GPTConfig.from_depth(4, n_kv_head=1).n_kv_head == 1


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (dict(n_embd=100, n_head=3, n_kv_head=3), "divisible by n_head"),
        (dict(n_embd=64, n_head=4, n_kv_head=3), "multiple of n_kv_head"),
        (dict(n_embd=36, n_head=4, n_kv_head=4), "odd"),
        (dict(n_layer=0), "positive integer"),
    ],
)
def test_invalid_configs_raise_clear_errors(fields, fragment):
    with pytest.raises(ConfigError, match=fragment):
        GPTConfig(**fields).validate()
    with pytest.raises(ConfigError):
        GPTConfig.from_depth(0)


def test_sequence_beyond_rotary_table_is_a_clear_error():
    cfg = GPTConfig(sequence_len=4, vocab_size=32, n_layer=1, n_head=1, n_kv_head=1, n_embd=16)
    model = build_model(cfg)
    model.init_weights()
    with pytest.raises(ConfigError, match="rotary table"):
        model(torch.zeros(1, 41, dtype=torch.long))


def test_library_api_example_from_the_issue():
    from nanogpt_core import GPTConfig as Cfg
    from nanogpt_core import build_model as build

    cfg = Cfg(sequence_len=64, vocab_size=256, n_layer=2, n_head=2, n_kv_head=1, n_embd=64)
    model = build(cfg)
    model.init_weights()
    idx = torch.randint(0, 256, (2, 64))
    assert model(idx).shape == (2, 64, 256)
    loss = model(idx, targets=idx)
    assert loss.ndim == 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_reference_rms_matches_functional(tiny_config):
    x = torch.randn(4, 64)
    assert torch.allclose(rms(x), F.rms_norm(x, (64,)), atol=1e-6)
