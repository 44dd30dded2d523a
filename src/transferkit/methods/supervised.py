"""Backbone + head trained on labelled target data: the common core of supervised methods.

For classification the head outputs logits ``[B, C]`` and the loss is cross-entropy
``-1/B sum_i log softmax(z_i)[y_i]``, or with soft targets ``y`` ``[B, C]`` (rows summing
to 1, e.g. from MixUp/CutMix) ``-1/B sum_i sum_c y_ic log softmax(z_i)_c``; for regression
it outputs ``[B]`` and the loss is the mean squared error ``1/B sum_i (f(x_i) - y_i)^2``.

A method whose params have an ``augment`` field (an
:class:`~transferkit.augment_policy.AugmentConfig`) gets ``self.augmenter``;
:meth:`SupervisedMethod.augmented` applies it to training batches (in training mode only;
``predict`` and evaluation never see it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.augment_policy import AugmentConfig, BatchAugmenter
from transferkit.backbones.base import Backbone
from transferkit.errors import DataError
from transferkit.methods.base import Method, MethodParams

TaskKind = Literal["classification", "regression"]


def task_loss(outputs: torch.Tensor, y: torch.Tensor, task: TaskKind) -> torch.Tensor:
    """Cross-entropy (``outputs`` [B, C]; ``y`` [B] class ids or float soft targets [B, C])
    or MSE (``outputs`` [B], ``y`` [B])."""
    if task == "classification":
        if y.is_floating_point() and y.ndim == 2:
            if y.shape != outputs.shape:
                raise DataError(
                    f"soft targets {tuple(y.shape)} do not match the logits {tuple(outputs.shape)}",
                    where='batch["y"]',
                    fix="give one probability per class and example",
                )
            return F.cross_entropy(outputs, y.to(outputs.dtype))
        return F.cross_entropy(outputs, y.long())
    return F.mse_loss(outputs, y.to(outputs.dtype))


def head_outputs(head: nn.Module, in_features: int) -> int:
    """Number of outputs of ``head``: its last Linear's, else measured on a dummy batch."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if linears:
        return int(linears[-1].out_features)
    was = head.training
    head.eval()
    try:
        with torch.no_grad():
            return int(head(torch.zeros(2, in_features)).shape[-1])
    finally:
        head.train(was)


def make_augmenter(
    config: AugmentConfig | None, backbone: Backbone, head: nn.Module, task: TaskKind
) -> BatchAugmenter | None:
    """The training-batch augmenter for ``method.params.augment`` (``None`` when unset)."""
    if config is None:
        return None
    return BatchAugmenter(
        config,
        backbone.preprocess,
        task=task,
        num_classes=head_outputs(head, backbone.num_features),
        where="method.params.augment",
    )


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
        self.augmenter = make_augmenter(getattr(params, "augment", None), backbone, head, task)

    def augmented(self, batch: Mapping[str, Any]) -> tuple[Any, torch.Tensor]:
        """``(x, y)`` of a training batch after ``self.augmenter`` (unchanged when there is
        none or the method is in eval mode); ``y`` may become soft targets ``[B, C]``."""
        if self.augmenter is None or not self.training:
            return batch["x"], batch["y"]
        x, y = self.augmenter(batch["x"], batch["y"])
        return x, y if y is not None else batch["y"]

    def predict(self, x: Any) -> torch.Tensor:
        """Logits ``[B, C]`` or regression outputs ``[B]``."""
        out = self.head(self.backbone(x))
        return out.squeeze(-1) if self.task == "regression" else out

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        x, y = self.augmented(batch)
        loss = task_loss(self.predict(x), y, self.task)
        return {"loss": loss}
