"""FitNets regressors, attention transfer and relational KD."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from transferkit.errors import DataError
from transferkit.losses.distill_features import HintRegressor, at_loss, attention_map, fitnets_loss
from transferkit.losses.distill_relational import (
    RKDLoss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_regressor_adapts_channels_and_spatial_size() -> None:
    reg = HintRegressor(4, 16)
    v, u = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 4, 4)
    out = reg(v, like=u)
    assert out.shape == (2, 16, 4, 4)
    loss = fitnets_loss(out, u)
    loss.backward()
    assert reg.proj is not None and reg.proj.weight.grad is not None
    # the 1x1 conv is the Linear weight applied per pixel
    direct = F.conv2d(v, reg.proj.weight[:, :, None, None], reg.proj.bias)
    torch.testing.assert_close(reg(v), direct)
    up = reg(torch.randn(2, 4, 2, 2), like=torch.randn(2, 16, 5, 7))
    assert up.shape == (2, 16, 5, 7)


def test_regressor_linear_for_tokens_and_vectors_identity_when_equal() -> None:
    reg = HintRegressor(8, 12)
    assert reg(torch.randn(3, 5, 8), like=torch.randn(3, 5, 12)).shape == (3, 5, 12)
    assert reg(torch.randn(3, 8)).shape == (3, 12)
    same = HintRegressor(6, 6)
    assert same.proj is None and not list(same.parameters())
    u = torch.randn(2, 6, 3, 3)
    assert fitnets_loss(same(u.clone(), like=u), u).item() == 0.0
    with pytest.raises(DataError, match="width 8"):
        reg(torch.randn(3, 7))
    with pytest.raises(DataError, match="lengths"):
        reg(torch.randn(3, 5, 8), like=torch.randn(3, 6, 12))


def test_fitnets_hand_value() -> None:
    u = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    v = torch.tensor([[1.0, 0.0], [3.0, 7.0]])
    assert fitnets_loss(v, u).item() == pytest.approx((0 + 4 + 0 + 9) / 4)


def test_attention_transfer_zero_for_identical_and_hand_value() -> None:
    f = _randn(2, 3, 4, 4)
    assert at_loss(f.clone(), f).item() == pytest.approx(0.0, abs=1e-15)
    # different channel counts: only the spatial attention matters; scale-free
    assert at_loss(torch.cat([f, f], 1) * 3.0, f).item() == pytest.approx(0.0, abs=1e-12)
    # 1 channel, 2 positions: Q_s = [1, 0], Q_t = [1, 1] / sqrt(2)
    s = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[1.0, 1.0]]]], dtype=torch.float64)
    expected = ((1 - 1 / math.sqrt(2)) ** 2 + (1 / math.sqrt(2)) ** 2) / 2
    assert at_loss(s, t).item() == pytest.approx(expected, rel=1e-12)


def test_attention_maps_for_tokens_and_resizing() -> None:
    h = _randn(2, 5, 8)
    q = attention_map(h)
    torch.testing.assert_close(q, F.normalize(h.norm(dim=-1), dim=1))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert attention_map(h, mask=mask)[0, 3:].abs().max().item() == 0.0
    assert at_loss(h.clone(), h, mask=mask).item() == pytest.approx(0.0, abs=1e-12)
    small, big = _randn(2, 3, 4, 4), _randn(2, 5, 8, 8, seed=1)
    assert at_loss(small, big).item() > 0  # resized, no error
    with pytest.raises(DataError, match="spatial"):
        at_loss(_randn(2, 8), _randn(2, 8))


def _rotation(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(_randn(d, d, seed=seed))
    return q


def test_rkd_invariant_to_rotation_scale_and_translation() -> None:
    t = _randn(6, 5)
    s = _randn(6, 5, seed=1)
    base_d, base_a = rkd_distance_loss(s, t).item(), rkd_angle_loss(s, t).item()
    assert base_d > 0 and base_a > 0
    r1, r2 = _rotation(5, 2), _rotation(5, 3)
    moved_t, moved_s = 3.5 * t @ r1 + 1.0, 0.25 * s @ r2 - 2.0
    assert rkd_distance_loss(moved_s, moved_t).item() == pytest.approx(base_d, rel=1e-9)
    assert rkd_angle_loss(moved_s, moved_t).item() == pytest.approx(base_a, rel=1e-9)
    # the student is a rotated, scaled teacher (even of another width): zero loss
    wide = torch.cat([t, torch.zeros(6, 3, dtype=t.dtype)], 1) @ _rotation(8, 4) * 7.0
    assert rkd_loss(wide, t).item() == pytest.approx(0.0, abs=1e-9)


def test_rkd_distance_hand_value() -> None:
    # teacher: points 0, 1, 3 on a line (distances 1, 3, 2; mean 2) -> 0.5, 1.5, 1
    # student: points 0, 1, 2 (distances 1, 2, 1; mean 4/3)         -> 0.75, 1.5, 0.75
    t = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    s = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    diffs = [0.25, 0.0, 0.25]  # |0.75-0.5|, |1.5-1.5|, |0.75-1|; Huber: 0.5 d^2 below 1
    expected = sum(0.5 * d * d for d in diffs) / 3
    assert rkd_distance_loss(s, t).item() == pytest.approx(expected, rel=1e-9)
    assert RKDLoss(1.0, 0.0)(s, t).item() == pytest.approx(expected, rel=1e-9)


def test_rkd_gradients_finite_with_duplicates_and_errors() -> None:
    s = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    rkd_loss(s, t).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    with pytest.raises(DataError, match="at least 2"):
        rkd_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(DataError, match="same B"):
        rkd_loss(torch.randn(3, 3), torch.randn(4, 3))
