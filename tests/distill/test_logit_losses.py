"""Hinton KD and DKD against hand formulas and the paper's identities."""

from __future__ import annotations

import math

import pytest
import torch

from transferkit.errors import ConfigError, DataError
from transferkit.losses.distill import DKDLoss, KDLoss, dkd_loss, dkd_terms, kd_loss


def _logits(seed: int, b: int = 4, c: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g, dtype=torch.float64) * 2


def test_kd_is_zero_when_student_equals_teacher() -> None:
    z = _logits(0)
    assert kd_loss(z.clone(), z, T=3.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_loss(z.clone(), z, T=3.0).item() >= 0.0


def test_kd_hand_value() -> None:
    # T = 2: p_t = softmax([0, 0]) = [1/2, 1/2]; q_s = softmax([2 ln 3, 0] / 2) = [3/4, 1/4]
    zs = torch.tensor([[2 * math.log(3.0), 0.0]], dtype=torch.float64)
    zt = torch.zeros(1, 2, dtype=torch.float64)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kd_loss(zs, zt, T=2.0).item() == pytest.approx(4.0 * kl, rel=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_kd_gradient_matches_hand_formula(T: float) -> None:
    zs, zt = _logits(1).requires_grad_(True), _logits(2)
    kd_loss(zs, zt, T).backward()
    b = zs.shape[0]
    expected = (T * T / T) * (torch.softmax(zs.detach() / T, 1) - torch.softmax(zt / T, 1)) / b
    torch.testing.assert_close(zs.grad, expected, rtol=1e-10, atol=1e-12)


def test_kd_gradient_scale_with_temperature() -> None:
    """For large T, softmax(z/T) ~ (1 + z/T)/C, so T * (q - p) -> (z_s - z_t - mean) / C."""
    zs, zt = _logits(3), _logits(4)
    grads = []
    for T in (100.0, 1000.0):
        z = zs.clone().requires_grad_(True)
        kd_loss(z, zt, T).backward()
        grads.append(z.grad)
    c, b = zs.shape[1], zs.shape[0]
    d = zs - zt
    limit = (d - d.mean(1, keepdim=True)) / (c * b)
    errors = [(g - limit).abs().max().item() for g in grads]
    assert errors[1] < 1e-2 * limit.abs().max().item()
    assert errors[1] < errors[0] / 5  # the error shrinks like 1/T


def test_dkd_hand_computed_three_classes() -> None:
    zs = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    zt = torch.tensor([[3.0, 0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0])
    T = 2.0

    def soft(v: list[float]) -> list[float]:
        e = [math.exp(a / T) for a in v]
        return [a / sum(e) for a in e]

    ps, pt = soft([1.0, 2.0, 0.5]), soft([3.0, 0.0, 1.0])
    bs, bt = [ps[0], 1 - ps[0]], [pt[0], 1 - pt[0]]
    tckd = sum(t * math.log(t / s) for t, s in zip(bt, bs, strict=True))
    ns, nt = soft([2.0, 0.5]), soft([0.0, 1.0])  # non-target classes 1 and 2
    nckd = sum(t * math.log(t / s) for t, s in zip(nt, ns, strict=True))
    got_t, got_n = dkd_terms(zs, zt, y, T)
    assert got_t.item() == pytest.approx(tckd, rel=1e-12)
    assert got_n.item() == pytest.approx(nckd, rel=1e-12)
    total = dkd_loss(zs, zt, y, alpha=1.0, beta=8.0, T=T).item()
    assert total == pytest.approx(T * T * (tckd + 8.0 * nckd), rel=1e-12)


def test_kd_equals_tckd_plus_weighted_nckd() -> None:
    """The paper's eq. (5): KD = TCKD + (1 - p_t,g) NCKD, example by example."""
    zs, zt = _logits(5, b=1, c=6), _logits(6, b=1, c=6)
    y = torch.tensor([2])
    T = 3.0
    tckd, nckd = dkd_terms(zs, zt, y, T)
    pt_g = torch.softmax(zt / T, 1)[0, 2]
    reconstructed = T * T * (tckd + (1 - pt_g) * nckd)
    assert kd_loss(zs, zt, T).item() == pytest.approx(reconstructed.item(), rel=1e-10)


def test_dkd_without_labels_uses_teacher_argmax_and_is_zero_at_equality() -> None:
    zs, zt = _logits(7), _logits(8)
    torch.testing.assert_close(dkd_loss(zs, zt, None), dkd_loss(zs, zt, zt.argmax(1)))
    assert dkd_loss(zt.clone(), zt).item() == pytest.approx(0.0, abs=1e-12)
    two = _logits(9, c=2)
    assert dkd_terms(two, _logits(10, c=2), None)[1].item() == 0.0  # one non-target class


def test_modules_and_errors() -> None:
    zs, zt = _logits(11), _logits(12)
    assert KDLoss(2.0)(zs, zt).item() == pytest.approx(kd_loss(zs, zt, 2.0).item())
    y = torch.tensor([0, 1, 2, 3])
    assert DKDLoss(1.0, 2.0, 3.0)(zs, zt, y).item() == pytest.approx(
        dkd_loss(zs, zt, y, 1.0, 2.0, 3.0).item()
    )
    with pytest.raises(ConfigError, match="temperature"):
        kd_loss(zs, zt, T=0.0)
    with pytest.raises(DataError, match="same shape"):
        kd_loss(zs, zt[:, :3])
    with pytest.raises(DataError, match=r"0\.\.4"):
        dkd_loss(zs, zt, torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ConfigError, match=">= 0"):
        DKDLoss(alpha=-1.0)
