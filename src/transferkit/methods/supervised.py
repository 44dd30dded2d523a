"""Backbone + head trained on labelled target data: the common core of supervised methods.

For classification the head outputs logits ``[B, C]`` and the loss is cross-entropy
``-1/B sum_i log softmax(z_i)[y_i]``; for regression it outputs ``[B]`` and the loss is the
mean squared error ``1/B sum_i (f(x_i) - y_i)^2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.methods.base import Method, MethodParams

TaskKind = Literal["classification", "regression"]


def task_loss(outputs: torch.Tensor, y: torch.Tensor, task: TaskKind) -> torch.Tensor:
    """Cross-entropy (``outputs`` [B, C], ``y`` [B] int) or MSE (``outputs`` [B], ``y`` [B])."""
    if task == "classification":
        return F.cross_entropy(outputs, y.long())
    return F.mse_loss(outputs, y.to(outputs.dtype))


class SupervisedMethod(Method):
    """A backbone and a head; subclasses decide what is trained and at which rate.

    Args:
        backbone: the feature extractor (``[B, ...] -> [B, D]``).
        head: maps ``[B, D]`` to ``[B, C]`` (classification) or ``[B, 1]`` (regression).
        task: ``"classification"`` or ``"regression"``.
        params: the method's validated parameters.
    """

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: MethodParams
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.task = task
        self.hparams = params

    def predict(self, x: Any) -> torch.Tensor:
        """Logits ``[B, C]`` or regression outputs ``[B]``."""
        out = self.head(self.backbone(x))
        return out.squeeze(-1) if self.task == "regression" else out

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        outputs = self.predict(batch["x"])
        loss = task_loss(outputs, batch["y"], self.task)
        return {"loss": loss}
