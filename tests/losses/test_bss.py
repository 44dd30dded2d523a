"""Batch Spectral Shrinkage: smallest squared singular values, differentiable."""

from __future__ import annotations

import pytest
import torch

from transferkit.errors import ConfigError, DataError
from transferkit.losses.bss import BatchSpectralShrinkage, bss_loss


def test_diagonal_matrix_gives_smallest_squared_entries() -> None:
    f = torch.zeros(4, 3, dtype=torch.float64)
    f[0, 0], f[1, 1], f[2, 2] = 3.0, -1.0, 2.0  # singular values 3, 2, 1
    assert bss_loss(f, k=1).item() == pytest.approx(1.0)
    assert bss_loss(f, k=2).item() == pytest.approx(1.0 + 4.0)
    assert BatchSpectralShrinkage(3)(f).item() == pytest.approx(14.0)


def test_invariant_to_orthogonal_mixing_of_the_batch() -> None:
    torch.manual_seed(0)
    f = torch.randn(8, 5, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    assert bss_loss(q @ f, k=2).item() == pytest.approx(bss_loss(f, k=2).item(), rel=1e-10)


def test_gradient_flows_and_matches_two_sigma_u_v() -> None:
    torch.manual_seed(1)
    f = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    bss_loss(f, k=1).backward()
    u, s, vh = torch.linalg.svd(f.detach(), full_matrices=False)
    expected = 2 * s[-1] * torch.outer(u[:, -1], vh[-1])  # d(sigma_min^2)/dF
    torch.testing.assert_close(f.grad, expected)


def test_gradient_descent_shrinks_the_smallest_singular_value() -> None:
    torch.manual_seed(2)
    f = torch.randn(16, 4, requires_grad=True)
    before = bss_loss(f).item()
    opt = torch.optim.SGD([f], lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        bss_loss(f).backward()
        opt.step()
    assert bss_loss(f).item() < 0.5 * before


def test_half_precision_input_is_computed_in_float32() -> None:
    f = torch.eye(3, dtype=torch.bfloat16) * 2
    assert bss_loss(f).dtype == torch.float32
    assert bss_loss(f).item() == pytest.approx(4.0)


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        BatchSpectralShrinkage(0)
    with pytest.raises(DataError, match="exceeds"):
        bss_loss(torch.randn(2, 5), k=3)
    with pytest.raises(DataError, match=r"\[B, D\]"):
        bss_loss(torch.randn(2, 3, 4))
