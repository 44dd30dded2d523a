"""Fixtures for the sweep tests: two Gaussian-blob domains on disk and tiny MLP configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


def write_blobs(path: Path, n: int, shift: float, seed: int) -> Path:
    """Two classes along dim 0 of 6-D vectors; ``shift`` moves every example (a domain)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.8, (n, 6)).astype(np.float32)
    x[:, 0] += (2 * y - 1) * 1.2 + shift * 0.5
    x[:, 1] += shift
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="session")
def domains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sweep-data")
    return write_blobs(d / "source.npz", 200, 0.0, 0), write_blobs(d / "target.npz", 200, 2.0, 1)


def tiny_config(target: Path, **sections: Any) -> dict[str, Any]:
    """A supervised fine-tuning run of a 6-8-2 MLP, 3 epochs, one seed: ~1 s on a CPU."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "data": {"target": str(target)},
        "model": {
            "backbone": "tk:mlp",
            "pretrained": False,
            "backbone_options": {"in_features": 6, "hidden": [8]},
        },
        "method": {"name": "finetune", "params": {"backbone_lr_mult": 1.0}},
        "train": {
            "epochs": 3,
            "batch_size": 32,
            "lr": 0.01,
            "mixed_precision": "no",
            "early_stopping": {"patience": 5},
        },
        "seeds": [0],
        "report": False,
        "bootstrap_samples": 100,
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg
