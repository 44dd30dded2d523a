"""Learning without Forgetting: KL/CE forms, T^2 scaling of the gradient, frozen original."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transferkit.errors import ConfigError, DataError
from transferkit.losses.lwf import LwF, lwf_loss


def test_zero_when_logits_equal_recorded() -> None:
    torch.manual_seed(0)
    r = torch.randn(5, 4, dtype=torch.float64)
    assert lwf_loss(r.clone(), r).item() == pytest.approx(0.0, abs=1e-12)


def test_hand_computed_value() -> None:
    # T = 2: p = softmax([0, 0] / 2) = [1/2, 1/2]; q = softmax([2 ln 3, 0] / 2) = [3/4, 1/4]
    z = torch.tensor([[2 * math.log(3.0), 0.0]], dtype=torch.float64)
    r = torch.zeros(1, 2, dtype=torch.float64)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert lwf_loss(z, r, T=2.0).item() == pytest.approx(4 * kl, rel=1e-12)
    ce = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    assert lwf_loss(z, r, T=2.0, form="ce").item() == pytest.approx(4 * ce, rel=1e-12)


def test_ce_equals_kl_plus_recorded_entropy() -> None:
    torch.manual_seed(1)
    z, r = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    p = torch.softmax(r / 3.0, 1)
    entropy = -(p * p.log()).sum(1).mean()
    diff = lwf_loss(z, r, T=3.0, form="ce") - lwf_loss(z, r, T=3.0, form="kl")
    assert diff.item() == pytest.approx(9.0 * entropy.item(), rel=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_gradient_is_T_times_q_minus_p_over_B(temperature: float) -> None:
    torch.manual_seed(2)
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    r = torch.randn(4, 6, dtype=torch.float64)
    for form in ("kl", "ce"):
        z.grad = None
        lwf_loss(z, r, T=temperature, form=form).backward()
        q, p = torch.softmax(z.detach() / temperature, 1), torch.softmax(r / temperature, 1)
        torch.testing.assert_close(z.grad, temperature * (q - p) / 4)


def test_gradient_size_is_independent_of_T_for_large_T() -> None:
    # T (q - p) -> ((z - mean z) - (r - mean r)) / C as T grows: the reason for the T^2 factor.
    torch.manual_seed(3)
    z = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    r = torch.randn(2, 5, dtype=torch.float64)
    limit = ((z.detach() - z.detach().mean(1, keepdim=True)) - (r - r.mean(1, keepdim=True))) / 10
    lwf_loss(z, r, T=1000.0).backward()
    torch.testing.assert_close(z.grad, limit, rtol=1e-2, atol=1e-5)


def _original() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU()), nn.Linear(4, 2)


def test_module_targets_come_from_a_frozen_copy() -> None:
    backbone, head = _original()
    backbone.eval()
    lwf = LwF(backbone, head, T=2.0)
    x = torch.randn(8, 3)
    torch.testing.assert_close(lwf.targets(x), head(backbone(x)))
    assert lwf(head(backbone(x)), x).item() == pytest.approx(0.0, abs=1e-7)
    frozen = {k: v.clone() for k, v in lwf.state_dict().items()}
    backbone.train()
    lwf.train()
    assert not lwf.original.training  # stays in eval mode under a parent's .train()
    opt = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        loss = head(backbone(x)).pow(2).mean() + lwf(head(backbone(x)), x)
        loss.backward()
        opt.step()
    for key, value in lwf.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert all(p.grad is None for p in lwf.parameters())
    backbone.eval()
    assert lwf(head(backbone(x)), x).item() > 1e-4


def test_module_accepts_precomputed_targets_and_rejects_ambiguity() -> None:
    backbone, head = _original()
    lwf = LwF(backbone, head, T=2.0, form="ce")
    z, r = torch.randn(3, 2), torch.randn(3, 2)
    assert lwf(z, recorded=r).item() == pytest.approx(lwf_loss(z, r, 2.0, "ce").item())
    with pytest.raises(ConfigError, match="exactly one"):
        lwf(z)
    with pytest.raises(ConfigError):
        LwF(backbone, head, T=0.0)
    with pytest.raises(DataError, match=r"\[B, C_s\]"):
        lwf_loss(torch.randn(3, 2), torch.randn(3, 4))
