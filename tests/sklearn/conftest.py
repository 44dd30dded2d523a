"""Shared data and a fast configuration for the estimator tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

#: a small, quick configuration: tk:mlp with one hidden layer of 16, CPU, seeded.
FAST: dict[str, Any] = {
    "backbone_options": {"hidden": [16]},
    "lr": 3e-2,
    "epochs": 5,
    "random_state": 0,
    "device": "cpu",
}


def blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in 2-D, labels ``"a" / "b" / "c"``."""
    rng = np.random.default_rng(seed)
    centers = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    idx = rng.integers(0, 3, n)
    X = centers[idx] + 0.4 * rng.standard_normal((n, 2))
    return X, np.array(["a", "b", "c"])[idx]


@pytest.fixture
def xy() -> tuple[np.ndarray, np.ndarray]:
    return blobs()
