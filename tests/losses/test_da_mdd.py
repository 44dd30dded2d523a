"""Margin Disparity Discrepancy: hand value, stable log(1 - p), GRL gradient signs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transferkit.errors import ConfigError, DataError
from transferkit.losses.adversarial import GradientReversal
from transferkit.losses.mdd import (
    MarginDisparityDiscrepancy,
    MDDHeads,
    log_one_minus_softmax,
    mdd_loss,
)


def test_hand_computed_value() -> None:
    y_s = torch.tensor([[2.0, 0.0]])  # main head predicts class 0 on source
    y_t = torch.tensor([[0.0, 1.0]])  # and class 1 on target
    adv_s = torch.tensor([[math.log(3.0), 0.0]])  # aux: p'(0) = 0.75 on source
    adv_t = torch.tensor([[0.0, 0.0]])  # aux: p'(1) = 0.5 on target
    expected = 4.0 * -math.log(0.75) + -math.log(1 - 0.5)
    assert mdd_loss(y_s, adv_s, y_t, adv_t).item() == pytest.approx(expected, rel=1e-6)
    got = MarginDisparityDiscrepancy(2.0)(y_s, adv_s, y_t, adv_t).item()
    assert got == pytest.approx(2.0 * -math.log(0.75) + math.log(2.0), rel=1e-6)


def test_log_one_minus_softmax_is_stable_when_p_is_one() -> None:
    logits = torch.tensor([[60.0, 0.0, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    got = log_one_minus_softmax(logits, torch.tensor([0, 2]))
    assert torch.isfinite(got).all()
    assert got[0].item() == pytest.approx(math.log(2.0) - 60.0, rel=1e-9)
    p = logits[1].softmax(-1)
    assert got[1].item() == pytest.approx(math.log(1 - p[2].item()), rel=1e-12)


def test_gradient_through_grl_has_the_reversed_sign() -> None:
    torch.manual_seed(0)
    feats_s = torch.randn(8, 4, requires_grad=True)
    feats_t = torch.randn(6, 4, requires_grad=True)
    heads = MDDHeads(nn.Linear(4, 3), nn.Linear(4, 3), GradientReversal(0.5))
    (y_s, a_s), (y_t, a_t) = heads(feats_s), heads(feats_t)
    loss = mdd_loss(y_s, a_s, y_t, a_t)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    # The same loss with the aux head on plain features: gradient is -1/lambda times ours.
    fs, ft = feats_s.detach().requires_grad_(True), feats_t.detach().requires_grad_(True)
    plain = mdd_loss(heads.head(fs), heads.adv_head(fs), heads.head(ft), heads.adv_head(ft))
    plain.backward()
    torch.testing.assert_close(feats_s.grad, -0.5 * fs.grad)
    torch.testing.assert_close(feats_t.grad, -0.5 * ft.grad)
    assert heads.head.weight.grad is None  # argmax of the main head carries no gradient
    assert heads.adv_head.weight.grad is not None


def test_aux_head_learns_to_agree_on_source_and_disagree_on_target() -> None:
    torch.manual_seed(1)
    feats_s, feats_t = torch.randn(32, 4), torch.randn(32, 4) + 2.0
    head, adv = nn.Linear(4, 3), nn.Linear(4, 3)
    opt = torch.optim.SGD(adv.parameters(), lr=0.5)
    for _ in range(100):
        loss = mdd_loss(head(feats_s), adv(feats_s), head(feats_t), adv(feats_t), margin=4.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        agree_s = (adv(feats_s).argmax(-1) == head(feats_s).argmax(-1)).float().mean()
        agree_t = (adv(feats_t).argmax(-1) == head(feats_t).argmax(-1)).float().mean()
    assert agree_s > 0.75 and agree_t < 0.3


def test_bad_inputs_raise() -> None:
    with pytest.raises(ConfigError, match="margin"):
        MarginDisparityDiscrepancy(0.0)
    with pytest.raises(DataError, match="same number of classes"):
        mdd_loss(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 3))
