"""Linear CKA: identities, invariances, a naive reference, small for independent features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.diagnostics.cka import (
    MinibatchCKA,
    linear_cka,
    representation_drift,
    unbiased_linear_cka,
)
from transferkit.errors import DataError


def _naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC with N x N Gram matrices and the centring matrix H (Kornblith et al., eq. 3)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_self_similarity_is_one(rng: np.random.Generator) -> None:
    x = rng.normal(size=(50, 7))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_orthogonal_transform_scaling_and_shift(rng: np.random.Generator) -> None:
    x = rng.normal(size=(40, 6))
    y = np.tanh(x @ rng.normal(size=(6, 4))) + 0.3 * rng.normal(size=(40, 4))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    base = linear_cka(x, y)
    assert 0.0 < base < 1.0
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(-3.7 * x, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(y, x) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, x @ q * 2.0) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("n", "d1", "d2"), [(200, 5, 8), (12, 30, 40)])  # D x D and Gram paths
def test_matches_naive_formula(rng: np.random.Generator, n: int, d1: int, d2: int) -> None:
    x = rng.normal(size=(n, d1))
    y = x[:, :1] * rng.normal(size=(1, d2)) + rng.normal(size=(n, d2))
    assert linear_cka(x, y) == pytest.approx(_naive_cka(x, y), abs=1e-8)


def test_torch_inputs_and_feature_maps(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=(30, 2, 3, 3)), rng.normal(size=(30, 5))
    expected = linear_cka(x.reshape(30, -1), y)
    got = linear_cka(torch.tensor(x, dtype=torch.float32, requires_grad=True), torch.tensor(y))
    assert got == pytest.approx(expected, abs=1e-6)


def test_independent_features_have_small_cka_for_large_n(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))
    assert linear_cka(x, y) < 0.01  # about sqrt(D1 * D2) / N = 0.002


def test_unbiased_estimator_removes_small_sample_bias(rng: np.random.Generator) -> None:
    biased, unbiased = [], []
    for _ in range(20):
        x, y = rng.normal(size=(16, 8)), rng.normal(size=(16, 8))
        biased.append(linear_cka(x, y))
        unbiased.append(unbiased_linear_cka(x, y))
    assert np.mean(biased) > 0.3  # about 8 / 16
    assert abs(np.mean(unbiased)) < 0.05
    x = rng.normal(size=(16, 8))
    assert unbiased_linear_cka(x, 2.0 * x) == pytest.approx(1.0, abs=1e-12)


def test_minibatch_accumulation_approaches_full_batch_value(rng: np.random.Generator) -> None:
    x = rng.normal(size=(2000, 4))
    y = x @ rng.normal(size=(4, 3)) + rng.normal(size=(2000, 3))
    acc = MinibatchCKA()
    for start in range(0, 2000, 100):
        acc.update(x[start : start + 100], y[start : start + 100])
    assert acc.n_batches_ == 20
    assert acc.compute() == pytest.approx(linear_cka(x, y), abs=0.02)


def test_representation_drift_per_layer(rng: np.random.Generator) -> None:
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(60, 6))
    drift = representation_drift([a, b], [3 * a, rng.normal(size=(60, 6))], ["g0", "g1"])
    assert list(drift) == ["g0", "g1"]
    assert drift["g0"] == pytest.approx(1.0) and drift["g1"] < 0.5
    with pytest.raises(DataError, match="'g1'"):
        representation_drift([a, b], [a, np.ones((60, 6))], ["g0", "g1"])
    with pytest.raises(DataError, match="names"):
        representation_drift([a], [a], ["g0", "g1"])


def test_bad_inputs(rng: np.random.Generator) -> None:
    with pytest.raises(DataError, match="same number"):
        linear_cka(rng.normal(size=(5, 2)), rng.normal(size=(6, 2)))
    with pytest.raises(DataError, match="constant"):
        linear_cka(np.full((5, 2), 0.1), rng.normal(size=(5, 2)))
    with pytest.raises(DataError, match="NaN"):
        linear_cka(np.array([[np.nan], [1.0]]), np.array([[0.0], [1.0]]))
    with pytest.raises(DataError, match=">= 4"):
        unbiased_linear_cka(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))
