"""Prediction heads put on top of pooled backbone features ``[B, D]``."""

from __future__ import annotations

from typing import Literal

from torch import nn


def make_head(
    in_features: int,
    num_outputs: int,
    kind: Literal["linear", "mlp"] = "linear",
    hidden: int = 256,
    dropout: float = 0.0,
) -> nn.Module:
    """A head mapping ``[B, in_features]`` to ``[B, num_outputs]``.

    ``linear``: dropout -> Linear. ``mlp``: Linear -> GELU -> dropout -> Linear.
    """
    if kind == "linear":
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        return nn.Sequential(*layers, nn.Linear(in_features, num_outputs))
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )
    raise ValueError(f"unknown head kind {kind!r}")
