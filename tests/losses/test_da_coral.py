"""Deep CORAL: hand-computed covariances, zero on identical batches, monotone in scale."""

from __future__ import annotations

import itertools

import pytest
import torch

from transferkit.errors import DataError
from transferkit.losses.coral import CORAL, coral_loss, covariance


def test_hand_computed_value() -> None:
    # Source: two points (0,0), (2,0) -> C_s = [[2, 0], [0, 0]] (unbiased, n - 1 = 1).
    # Target: (0,0), (0,2), (0,4) -> var of y = 4 -> C_t = [[0, 0], [0, 4]].
    f_s = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    f_t = torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(covariance(f_s), torch.tensor([[2.0, 0.0], [0.0, 0.0]]).double())
    torch.testing.assert_close(covariance(f_t), torch.tensor([[0.0, 0.0], [0.0, 4.0]]).double())
    assert coral_loss(f_s, f_t).item() == pytest.approx((4.0 + 16.0) / (4 * 2 * 2))
    assert CORAL()(f_s, f_t).item() == pytest.approx(1.25)


def test_matches_torch_cov() -> None:
    torch.manual_seed(0)
    f = torch.randn(20, 5, dtype=torch.float64)
    torch.testing.assert_close(covariance(f), torch.cov(f.T))


def test_zero_for_identical_batches_and_invariant_to_mean_shift() -> None:
    torch.manual_seed(1)
    f = torch.randn(16, 6)
    assert coral_loss(f, f.clone()).item() < 1e-12
    # CORAL only sees second-order statistics: a pure mean shift does not change it.
    assert coral_loss(f, f + 5.0).item() < 1e-9


def test_grows_monotonically_with_a_scale_shift() -> None:
    torch.manual_seed(2)
    f_s, f_t = torch.randn(64, 4), torch.randn(48, 4)
    values = [coral_loss(f_s, f_t * s).item() for s in (1.0, 1.5, 2.0, 3.0)]
    assert all(a < b for a, b in itertools.pairwise(values))


def test_gradient_descent_aligns_covariances() -> None:
    torch.manual_seed(3)
    f_s = torch.randn(64, 3)
    f_t = (torch.randn(64, 3) * 3.0).requires_grad_(True)
    opt = torch.optim.SGD([f_t], lr=50.0)
    before = coral_loss(f_s, f_t).item()
    for _ in range(50):
        opt.zero_grad()
        coral_loss(f_s, f_t).backward()
        opt.step()
    assert coral_loss(f_s, f_t).item() < 0.1 * before


def test_bad_shapes_raise() -> None:
    with pytest.raises(DataError, match="B >= 2"):
        coral_loss(torch.randn(1, 3), torch.randn(4, 3))
    with pytest.raises(DataError, match="dims differ"):
        coral_loss(torch.randn(4, 3), torch.randn(4, 2))
