"""Minimum Class Confusion (MCC): penalise confusion between classes on target predictions.

Jin, Wang, Long & Wang 2020, "Minimum Class Confusion for Versatile Domain Adaptation",
ECCV, https://arxiv.org/abs/1912.03699.

For target logits ``Z [B, C]`` and temperature ``T``:

.. math::

    \\hat Y = \\mathrm{softmax}(Z / T), \\quad
    H_i = -\\sum_j \\hat Y_{ij} \\log \\hat Y_{ij}, \\quad
    W_{ii} = \\frac{B\\,(1 + e^{-H_i})}{\\sum_k (1 + e^{-H_k})}

.. math::

    C = \\hat Y^\\top W \\hat Y \\in \\mathbb{R}^{C \\times C}, \\quad
    \\tilde C_{jj'} = \\frac{C_{jj'}}{\\sum_{j''} C_{j''j'}}, \\quad
    L_{MCC} = \\frac{1}{C} \\sum_{j} \\sum_{j' \\ne j} |\\tilde C_{jj'}|

The weights ``W`` are detached (as in the reference implementation). Predictions that are
one-hot have no cross-class mass, so ``L = 0``; the loss is at most ``(C - 1) / C``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = ["MinimumClassConfusion", "class_confusion", "mcc_loss"]


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(
            f"MCC temperature={temperature!r} must be positive",
            where="mcc temperature",
            fix="use 2.5 (the paper's value)",
        )


def class_confusion(logits: Tensor, temperature: float = 2.5) -> Tensor:
    """Category-normalised class confusion matrix ``[C, C]`` (columns sum to 1)."""
    _check_temperature(temperature)
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise DataError(
            f"MCC needs target logits [B, C] with B >= 1 and C >= 2, got {tuple(logits.shape)}",
            where="mcc_loss(logits)",
            fix="pass the classifier's raw target-batch logits",
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    probs = (logits / temperature).softmax(-1)
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1).detach()
    w = 1.0 + (-ent).exp()
    w = logits.shape[0] * w / w.sum()
    confusion = (probs * w.unsqueeze(1)).T @ probs  # [C, C]
    col = confusion.sum(0, keepdim=True).clamp_min(1e-12)
    return confusion / col


def mcc_loss(logits: Tensor, temperature: float = 2.5) -> Tensor:
    """MCC loss (scalar) of target ``logits [B, C]``: off-diagonal confusion mass over ``C``."""
    c_norm = class_confusion(logits, temperature)
    num_classes = c_norm.shape[0]
    return (c_norm.sum() - c_norm.diagonal().sum()) / num_classes


class MinimumClassConfusion(nn.Module):
    """MCC as a module: ``MinimumClassConfusion(2.5)(target_logits [B, C]) -> scalar``."""

    def __init__(self, temperature: float = 2.5) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = float(temperature)

    def forward(self, logits: Tensor) -> Tensor:
        return mcc_loss(logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
