"""Minimum Class Confusion: zero for confident one-hot predictions, positive when confused."""

from __future__ import annotations

import math

import pytest
import torch

from transferkit.errors import ConfigError, DataError
from transferkit.losses.mcc import MinimumClassConfusion, class_confusion, mcc_loss


def test_confident_one_hot_predictions_have_no_confusion() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    logits = 200.0 * torch.nn.functional.one_hot(labels, 3).double()
    assert mcc_loss(logits).item() < 1e-12
    torch.testing.assert_close(class_confusion(logits), torch.eye(3, dtype=torch.float64))
    # Class imbalance or an absent class does not create confusion either.
    assert mcc_loss(logits[:2]).item() < 1e-12


def test_uniform_predictions_reach_the_maximum() -> None:
    logits = torch.zeros(8, 4)
    assert mcc_loss(logits).item() == pytest.approx(3.0 / 4.0)


def test_hand_computed_two_example_value() -> None:
    # T = 1, rows p1 = [a, 1-a], p2 = [b, 1-b] with weights from their entropies.
    z = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    p = torch.tensor([[0.75, 0.25], [0.5, 0.5]], dtype=torch.float64)
    ent = -(p * p.log()).sum(1)
    w = 1 + torch.exp(-ent)
    w = 2 * w / w.sum()
    c = (p * w[:, None]).T @ p
    c = c / c.sum(0, keepdim=True)
    expected = (c[0, 1] + c[1, 0]).item() / 2
    assert mcc_loss(z, temperature=1.0).item() == pytest.approx(expected, rel=1e-12)
    assert MinimumClassConfusion(1.0)(z).item() == pytest.approx(expected, rel=1e-12)


def test_more_confusion_gives_a_larger_loss_and_descent_reduces_it() -> None:
    torch.manual_seed(0)
    base = torch.randn(16, 5)
    values = [mcc_loss(base * s).item() for s in (10.0, 3.0, 1.0, 0.3)]
    assert values == sorted(values) and values[0] > 0
    logits = base.clone().requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=20.0)
    before = mcc_loss(logits).item()
    for _ in range(60):
        opt.zero_grad()
        mcc_loss(logits).backward()
        opt.step()
    assert mcc_loss(logits).item() < 0.6 * before


def test_bad_inputs_raise() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        MinimumClassConfusion(0.0)
    with pytest.raises(DataError, match="C >= 2"):
        mcc_loss(torch.randn(4, 1))
