"""Bits per byte against a hand computation: nats over targets that stand for bytes, over ln 2 times those bytes."""

from __future__ import annotations

import math

import pytest
import torch

from nanogpt_core import GPTConfig
from nanogpt_core.data.loader import TokenLoader
from nanogpt_core.model.assembly import build_model
from nanogpt_core.train.bpb import evaluate_bpb


class FakeModel(torch.nn.Module):
    """Per-token loss = 0.1 * (target + 1) + 0.01 * input, 0 for ignored targets (as cross_entropy gives)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.modes: list[bool] = []

    def get_device(self) -> torch.device:
        return self.weight.device

    def forward(self, x, y, loss_reduction="mean"):
        assert loss_reduction == "none"
        self.modes.append(self.training)
        loss = 0.1 * (y + 1).float() + 0.01 * x.float()
        return torch.where(y >= 0, loss, torch.zeros_like(loss)).view(-1)


def hand_bpb(batches, token_bytes):
    nats, nbytes = 0.0, 0
    for x, y in batches:
        for xi, yi in zip(x.flatten().tolist(), y.flatten().tolist()):
            if yi >= 0 and token_bytes[yi] > 0:
                nats += 0.1 * (yi + 1) + 0.01 * xi
                nbytes += token_bytes[yi]
    return nats / (math.log(2) * nbytes)


def test_bpb_matches_hand_computation_with_special_and_ignored_targets():
    token_bytes = torch.tensor([1, 2, 3, 0, 4, 0], dtype=torch.int32)  # ids 3 and 5 are special tokens
    batches = [
        (torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[1, 2, 3], [4, 5, -1]])),
        (torch.tensor([[2, 2, 0], [1, 4, 4]]), torch.tensor([[-1, 0, 4], [3, 3, 2]])),
        (torch.tensor([[5, 5, 5], [5, 5, 5]]), torch.tensor([[0, 0, 0], [0, 0, 0]])),  # not read: steps=2
    ]
    model = FakeModel()
    got = evaluate_bpb(model, iter(batches), 2, token_bytes)
    # by hand: targets 1,2,4,0,4,2 count; bytes 2+3+4+1+4+3 = 17
    nats = 0.1 * 2 + 0.01 * 0 + 0.1 * 3 + 0.01 * 1 + 0.1 * 5 + 0.01 * 3
    nats += 0.1 * 1 + 0.01 * 2 + 0.1 * 5 + 0.01 * 0 + 0.1 * 3 + 0.01 * 4
    assert got == pytest.approx(nats / (math.log(2) * 17), rel=1e-6)
    assert got == pytest.approx(hand_bpb(batches[:2], token_bytes.tolist()), rel=1e-6)


def test_bpb_runs_in_eval_mode_and_restores_the_mode():
    model = FakeModel()
    batches = [(torch.tensor([[0, 1]]), torch.tensor([[1, 2]]))] * 3
    model.train()
    evaluate_bpb(model, iter(batches), 3, torch.tensor([1, 1, 1], dtype=torch.int32))
    assert model.modes == [False] * 3 and model.training
    model.eval()
    evaluate_bpb(model, iter(batches), 1, torch.tensor([1, 1, 1], dtype=torch.int32))
    assert not model.training


def test_bpb_reads_a_token_loader_and_all_special_targets_give_inf():
    tokens = torch.tensor([0, 1, 2, 1, 0, 2, 1, 0, 2])
    token_bytes = torch.tensor([1, 2, 3], dtype=torch.int32)
    loader = TokenLoader(tokens, batch_size=2, seq_len=2)
    reference = TokenLoader(tokens, batch_size=2, seq_len=2)
    expected = hand_bpb([reference.next_batch() for _ in range(3)], token_bytes.tolist())
    assert evaluate_bpb(FakeModel(), loader, 3, token_bytes) == pytest.approx(expected, rel=1e-6)
    zero = torch.zeros(3, dtype=torch.int32)
    assert evaluate_bpb(FakeModel(), iter([(tokens[:2].view(1, 2), tokens[1:3].view(1, 2))]), 1, zero) == math.inf


def test_bpb_of_a_real_model_is_its_mean_loss_per_byte():
    config = GPTConfig(sequence_len=16, vocab_size=50, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
    model = build_model(config)
    model.init_weights()
    x = torch.randint(0, 50, (2, 16))
    y = torch.randint(0, 50, (2, 16))
    token_bytes = torch.randint(1, 5, (50,), dtype=torch.int32)
    with torch.no_grad():
        mean_loss = model(x, y).item()
    expected = mean_loss * y.numel() / (math.log(2) * token_bytes[y].sum().item())
    assert evaluate_bpb(model, iter([(x, y)]), 1, token_bytes) == pytest.approx(expected, rel=1e-5)
