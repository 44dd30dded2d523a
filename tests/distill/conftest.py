"""Fixtures for the distillation tests: tiny backbones built in code, a tiny BERT on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.backbones.conftest import write_tiny_bert
from transferkit.backbones import create_backbone
from transferkit.backbones.base import Backbone
from transferkit.data.types import Dataset

WORDS = ["good", "bad", "movie", "great", "awful", "plot", "actor", "boring", "fun", "film"]


def write_bert(path: Path, *, layers: int = 4, hidden: int = 32) -> Path:
    """A randomly initialised BERT (``hidden`` wide, ``layers`` deep) + tokenizer on disk."""
    return write_tiny_bert(path, layers=layers, hidden=hidden, words=WORDS)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bert(tmp_path_factory.mktemp("bert-4x32"))


@pytest.fixture
def bert_teacher(bert_dir: Path) -> Backbone:
    return create_backbone(f"hf:{bert_dir}")


def cnn(width: int, depth: int, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return create_backbone("tk:smallcnn", in_chans=1, width=width, depth=depth)


def toy_images(n: int = 48, seed: int = 0) -> Dataset:
    """``n`` 8x8 grey images of 3 classes (a bright quadrant per class) + noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.3, size=(n, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] += 1.5
    x = np.clip((x + 1.0) * 100.0, 0, 255).astype(np.uint8)
    return Dataset("toy", "image", x, y.astype(np.int64), classes=["a", "b", "c"])


def train_teacher(data: Dataset, steps: int = 30, seed: int = 0) -> tuple[Backbone, nn.Module]:
    """A small CNN + linear head fitted to ``data`` with Adam (full batch)."""
    backbone = cnn(width=8, depth=2, seed=seed)
    torch.manual_seed(seed)
    head = nn.Linear(backbone.num_features, data.num_classes)
    x, y = backbone.prepare(data.x), torch.as_tensor(data.y)
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(backbone(x)), y).backward()
        opt.step()
    return backbone.eval(), head.eval()


@pytest.fixture(scope="module")
def toy_teacher() -> tuple[Dataset, Backbone, nn.Module]:
    data = toy_images(60)
    backbone, head = train_teacher(data)
    return data, backbone, head
