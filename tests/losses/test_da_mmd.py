"""MMD (DAN multi-kernel, JAN joint): hand values, zero on identical batches, monotone shift."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from transferkit.errors import ConfigError, DataError
from transferkit.losses.mmd import (
    JointMMD,
    MultiKernelMMD,
    joint_mmd2,
    median_heuristic,
    mmd2,
    pairwise_sq_dists,
)


def test_two_point_example_matches_hand_value() -> None:
    f_s = torch.tensor([[0.0]], dtype=torch.float64)
    f_t = torch.tensor([[1.0]], dtype=torch.float64)
    expected = 2.0 - 2.0 * math.exp(-0.5)  # k(x,x) + k(y,y) - 2 k(x,y), sigma = 1
    assert mmd2(f_s, f_t, sigmas=[1.0]).item() == pytest.approx(expected, rel=1e-12)
    # Two sigmas average the kernels: sigma = 1 and 2.
    expected2 = 2.0 - (math.exp(-0.5) + math.exp(-1.0 / 8.0))
    assert mmd2(f_s, f_t, sigmas=[1.0, 2.0]).item() == pytest.approx(expected2, rel=1e-12)


def test_unbiased_hand_value_on_two_by_two() -> None:
    f_s = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    f_t = torch.tensor([[3.0], [5.0]], dtype=torch.float64)

    def k(a: float, b: float) -> float:
        return math.exp(-((a - b) ** 2) / 2.0)

    ss, tt = k(0, 1), k(3, 5)
    st = (k(0, 3) + k(0, 5) + k(1, 3) + k(1, 5)) / 4
    got = mmd2(f_s, f_t, sigmas=[1.0], unbiased=True).item()
    assert got == pytest.approx(ss + tt - 2 * st, rel=1e-12)
    biased = mmd2(f_s, f_t, sigmas=[1.0]).item()
    assert biased == pytest.approx((2 + 2 * ss) / 4 + (2 + 2 * tt) / 4 - 2 * st, rel=1e-12)


def test_median_heuristic_and_bank_centre() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    # Pairwise distances 1, 3, 2 -> median 2.
    assert median_heuristic(x).item() == pytest.approx(2.0)
    assert median_heuristic(x[:1], x[1:]).item() == pytest.approx(2.0)
    # A one-kernel bank centred on the median equals sigma = median.
    f_s, f_t = x[:2], x[2:]
    assert mmd2(f_s, f_t, num_kernels=1).item() == pytest.approx(
        mmd2(f_s, f_t, sigmas=[2.0]).item(), rel=1e-12
    )
    # Mean distance (1 + 3 + 2) / 3 = 2 too; bank of 3 = sigma 2 * 2^(-1/2, 0, 1/2).
    sig = [2.0 * 2 ** (-0.5), 2.0, 2.0 * 2**0.5]
    assert mmd2(f_s, f_t, num_kernels=3, base="mean").item() == pytest.approx(
        mmd2(f_s, f_t, sigmas=sig).item(), rel=1e-12
    )


def test_identical_batches_give_zero_and_distances_are_exact() -> None:
    torch.manual_seed(0)
    f = torch.randn(16, 8)
    assert abs(mmd2(f, f.clone()).item()) < 1e-6
    assert abs(joint_mmd2([f, f.softmax(-1)], [f.clone(), f.softmax(-1)]).item()) < 1e-6
    d2 = pairwise_sq_dists(f, f)
    assert (d2 >= 0).all()
    torch.testing.assert_close(d2, torch.cdist(f, f).pow(2), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("unbiased", [False, True])
def test_grows_monotonically_with_a_mean_shift(unbiased: bool) -> None:
    torch.manual_seed(1)
    f_s, f_t = torch.randn(32, 4), torch.randn(24, 4)
    values = [
        mmd2(f_s, f_t + shift, sigmas=[1.0, 2.0, 4.0], unbiased=unbiased).item()
        for shift in (0.0, 0.5, 1.0, 2.0, 4.0)
    ]
    assert all(a < b for a, b in itertools.pairwise(values))
    joint = [joint_mmd2([f_s], [f_t + s], sigmas=[[1.0, 2.0]]).item() for s in (0.0, 1.0, 3.0)]
    assert joint[0] < joint[1] < joint[2]


def test_unbiased_is_zero_on_average_for_the_same_distribution() -> None:
    gen = torch.Generator().manual_seed(2)
    unbiased, biased = [], []
    for _ in range(200):
        a, b = torch.randn(10, 3, generator=gen), torch.randn(12, 3, generator=gen)
        unbiased.append(mmd2(a, b, sigmas=[1.0, 2.0], unbiased=True).item())
        biased.append(mmd2(a, b, sigmas=[1.0, 2.0]).item())
    u = torch.tensor(unbiased, dtype=torch.float64)
    assert abs(u.mean().item()) < 3 * u.std().item() / math.sqrt(len(u))
    assert min(unbiased) < 0  # it is a genuinely unbiased (sign-indefinite) estimator
    assert sum(biased) / len(biased) > 0.01  # the V-statistic carries a positive bias


def test_joint_kernel_is_the_product_of_layer_kernels() -> None:
    f_s = torch.tensor([[0.0]], dtype=torch.float64)
    f_t = torch.tensor([[1.0]], dtype=torch.float64)
    g_s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    g_t = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    k = math.exp(-0.5) * math.exp(-2.0 / (2 * 4.0))  # sigma 1 on f, sigma 2 on g
    got = joint_mmd2([f_s, g_s], [f_t, g_t], sigmas=[[1.0], [2.0]]).item()
    assert got == pytest.approx(2.0 - 2.0 * k, rel=1e-12)
    module = JointMMD(sigmas=[[1.0], [2.0]])
    assert module([f_s, g_s], [f_t, g_t]).item() == pytest.approx(got)


def test_gradient_descent_on_target_reduces_mmd() -> None:
    torch.manual_seed(3)
    f_s = torch.randn(32, 2)
    f_t = (torch.randn(32, 2) + 3.0).requires_grad_(True)
    loss_fn = MultiKernelMMD()
    opt = torch.optim.SGD([f_t], lr=5.0)
    before = loss_fn(f_s, f_t).item()
    for _ in range(50):
        opt.zero_grad()
        loss_fn(f_s, f_t).backward()
        opt.step()
    assert loss_fn(f_s, f_t).item() < 0.5 * before


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(DataError, match="same dim"):
        mmd2(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(DataError, match="at least 2"):
        mmd2(torch.randn(1, 3), torch.randn(4, 3), unbiased=True)
    with pytest.raises(ConfigError, match="num_kernels"):
        MultiKernelMMD(num_kernels=0)
    with pytest.raises(ConfigError, match="bandwidth base"):
        mmd2(torch.randn(4, 3), torch.randn(4, 3), base="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive"):
        mmd2(torch.randn(4, 3), torch.randn(4, 3), sigmas=[1.0, -1.0])
    with pytest.raises(DataError, match="batch sizes"):
        joint_mmd2([torch.randn(4, 3), torch.randn(3, 2)], [torch.randn(4, 3), torch.randn(4, 2)])
