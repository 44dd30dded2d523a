"""A tiny method, data set and collate function shared by the engine tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.methods.base import Method


class TinyMLP(Method):
    """An MLP classifier ``[B, F] -> [B, C]`` with LayerNorm and (optional) dropout.

    Two param groups: ``body`` at ``body_mult * base_lr`` and ``head`` at ``base_lr``.
    """

    name = "tiny-mlp-test"

    def __init__(
        self,
        in_features: int = 8,
        hidden: int = 16,
        classes: int = 3,
        dropout: float = 0.0,
        body_mult: float = 1.0,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout)
        )
        self.head = nn.Linear(hidden, classes)
        self.body_mult = body_mult

    def predict(self, x: Any) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.predict(batch["x"])
        loss = F.cross_entropy(logits, batch["y"])
        acc = (logits.argmax(1) == batch["y"]).float().mean()
        return {"loss": loss, "acc": acc}

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        return [
            {
                "params": list(self.body.parameters()),
                "lr": base_lr * self.body_mult,
                "name": "body",
            },
            {"params": list(self.head.parameters()), "lr": base_lr, "name": "head"},
        ]


class VectorDataset(torch.utils.data.Dataset):
    """``(x [F] float32, y int)`` pairs held in memory."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def make_blobs(
    n: int = 96, in_features: int = 8, classes: int = 3, seed: int = 0, noise: float = 1.0
) -> VectorDataset:
    """Gaussian blobs around random class centres: a learnable toy classification task."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, in_features, generator=g) * 2.0
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + noise * torch.randn(n, in_features, generator=g)
    return VectorDataset(x, y)


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    xs, ys = zip(*items, strict=True)
    return {"x": torch.stack(xs), "y": torch.stack(ys)}


def make_method(seed: int = 0, **kwargs: Any) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP(**kwargs)
