"""Tiny tabular domains and tk:mlp checkpoints built in code for the advisor tests.

The target task: 8 Gaussian features, 4 classes = the quadrant of ``(x0, x1)``. A tk:mlp
trained on that task is an informative "pretrained" backbone; one trained on the quadrant
of ``(x4, x5)`` (an unrelated task) is not. The source domain is the same task with every
feature shifted by +3 (a large, measurable domain gap).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from transferkit.backbones import create_backbone, save_backbone

FEATURES = 8
HIDDEN = [16, 16]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch and BLAS on one thread: these problems are tiny, and on a shared, loaded
    2-core machine two threads spin against each other (measured: 10 tk:smallcnn steps 3.2 s
    vs 0.03 s; one advise() call 10 s vs 1.7 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def quadrant(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """Class 0..3 = which quadrant of the plane (x_a, x_b) a row lies in."""
    return (x[:, a] > 0).astype(np.int64) * 2 + (x[:, b] > 0).astype(np.int64)


def _train_mlp(x: np.ndarray, y: np.ndarray, steps: int = 120) -> nn.Module:
    torch.manual_seed(0)
    bb = create_backbone("tk:mlp", in_features=FEATURES, hidden=HIDDEN)
    head = nn.Linear(HIDDEN[-1], 4)
    opt = torch.optim.Adam([*bb.parameters(), *head.parameters()], lr=1e-2)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(head(bb(xt)), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return bb


@dataclass(frozen=True)
class Toy:
    """Paths of the toy data sets and checkpoints."""

    target: Path
    small_target: Path
    source: Path
    good: str
    unrelated: str


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Toy:
    root = tmp_path_factory.mktemp("advisor")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, FEATURES)).astype(np.float32)
    np.savez(root / "target.npz", x=x, y=quadrant(x, 0, 1))
    np.savez(root / "small_target.npz", x=x[:120], y=quadrant(x[:120], 0, 1))
    xs = rng.normal(size=(300, FEATURES)).astype(np.float32)
    np.savez(root / "source.npz", x=xs + 3.0, y=quadrant(xs, 0, 1))
    with one_thread():
        good = save_backbone(_train_mlp(x, quadrant(x, 0, 1)), root / "good.safetensors")
        bad = save_backbone(_train_mlp(x, quadrant(x, 4, 5)), root / "unrelated.safetensors")
    return Toy(
        root / "target.npz",
        root / "small_target.npz",
        root / "source.npz",
        f"file:{good}",
        f"file:{bad}",
    )
