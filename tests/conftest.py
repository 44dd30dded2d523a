"""Shared test fixtures: a tiny vector backbone built in code, deterministic seeds."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.backbones.base import Backbone, LayerGroup, Preprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)  # tiny models: more threads only add contention


class TinyVectorBackbone(Backbone):
    """Two Linear+BatchNorm+ReLU blocks on ``[B, F]`` vectors; groups = the two blocks."""

    def __init__(self, in_features: int = 6, width: int = 8) -> None:
        super().__init__()
        self.spec = "test:tiny"
        self.modality = "vector"
        self.num_features = width
        self.preprocess = Preprocess(modality="vector")
        self.init_kwargs = {"in_features": in_features, "width": width}
        self.block1 = nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU())
        self.block2 = nn.Sequential(nn.Linear(width, width), nn.ReLU())

    def forward(self, x: Any) -> torch.Tensor:
        return self.block2(self.block1(x))

    def layer_groups(self) -> list[LayerGroup]:
        names = [n for n, _ in self.named_parameters()]
        return [
            LayerGroup(b, tuple(n for n in names if n.startswith(b + ".")), self.num_features)
            for b in ("block1", "block2")
        ]

    def forward_intermediates(self, x: Any, indices: Sequence[int]) -> list[torch.Tensor]:
        h1 = self.block1(x)
        outs = [h1, self.block2(h1)]
        return [outs[i] for i in indices]

    def prepare(self, raw: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(raw), dtype=torch.float32)


@pytest.fixture
def tiny_backbone() -> TinyVectorBackbone:
    torch.manual_seed(0)
    return TinyVectorBackbone()
