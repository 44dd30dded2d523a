"""Toy multi-task data and builders shared by the multi-task tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tests.conftest import TinyVectorBackbone
from transferkit.methods.multitask import MultiTask

TASKS = [
    {"name": "a", "kind": "classification", "num_outputs": 3},
    {"name": "b", "kind": "regression", "num_outputs": 1},
]


class MultiTaskData(torch.utils.data.Dataset):
    """``x`` [F]; task a: 3 classes from the sign pattern of x; task b: a linear target,
    labelled on every other example (``m_b``; all of them unless ``masked``)."""

    def __init__(
        self, n: int = 32, in_features: int = 6, seed: int = 0, masked: bool = True
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, in_features, generator=g)
        self.y_a = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0).long()
        self.y_b = self.x @ torch.linspace(-1, 1, in_features) + 0.1 * torch.randn(n, generator=g)
        self.m_b = (torch.arange(n) % 2 == 0) | (not masked)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y_a": self.y_a[i], "y_b": self.y_b[i], "m_b": self.m_b[i]}


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def full_batch(data: MultiTaskData) -> dict[str, torch.Tensor]:
    return collate([data[i] for i in range(len(data))])


def make_mtl(weighting: Any = "equal", seed: int = 0, tasks: Any = None, **kw: Any) -> MultiTask:
    torch.manual_seed(seed)
    params = {"tasks": tasks or TASKS, "weighting": weighting, **kw}
    return MultiTask(TinyVectorBackbone(), params)


class TinyLayerNormBackbone(TinyVectorBackbone):
    """TinyVectorBackbone with LayerNorm instead of BatchNorm: its gradients do not depend
    on how a batch is split (so data-parallel and accumulated runs can be compared)."""

    def __init__(self, in_features: int = 6, width: int = 8) -> None:
        super().__init__(in_features, width)
        self.block1[1] = torch.nn.LayerNorm(width)


def make_ln_mtl(weighting: Any = "equal", seed: int = 0, **kw: Any) -> MultiTask:
    torch.manual_seed(seed)
    return MultiTask(TinyLayerNormBackbone(), {"tasks": TASKS, "weighting": weighting, **kw})
