"""Deep CORAL: align the second-order statistics (covariances) of source and target features.

Sun & Saenko 2016, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV
workshops, https://arxiv.org/abs/1607.01719.

For source features ``D_S [n_S, d]`` and target features ``D_T [n_T, d]``:

.. math::

    C = \\frac{1}{n - 1}\\Big(D^\\top D - \\frac{1}{n}(\\mathbf{1}^\\top D)^\\top
        (\\mathbf{1}^\\top D)\\Big), \\qquad
    \\ell_{CORAL} = \\frac{1}{4 d^2} \\lVert C_S - C_T \\rVert_F^2

i.e. the unbiased sample covariances (computed from centred features) and their squared
Frobenius distance scaled by ``1 / (4 d^2)``. Batch sizes may differ (each needs ``>= 2``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transferkit.errors import DataError

__all__ = ["CORAL", "coral_loss", "covariance"]


def covariance(features: Tensor) -> Tensor:
    """Unbiased covariance ``[D, D]`` of ``features [B, D]`` (rows are samples, ``B >= 2``)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise DataError(
            f"CORAL needs features [B, D] with B >= 2, got shape {tuple(features.shape)}",
            where="coral covariance(features)",
            fix="pool or flatten features to [batch, dim] and use batches of 2 or more",
        )
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    centred = features - features.mean(0, keepdim=True)
    return centred.T @ centred / (features.shape[0] - 1)


def coral_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """``||C_s - C_t||_F^2 / (4 d^2)`` for ``f_s [B_s, d]`` and ``f_t [B_t, d]`` (a scalar).

    Raises:
        DataError: not 2-D, a batch smaller than 2, or differing feature dims.
    """
    if f_s.ndim == 2 and f_t.ndim == 2 and f_s.shape[1] != f_t.shape[1]:
        raise DataError(
            f"source and target feature dims differ: {f_s.shape[1]} vs {f_t.shape[1]}",
            where="coral_loss(f_s, f_t)",
            fix="take both from the same layer of the same backbone",
        )
    c_s, c_t = covariance(f_s), covariance(f_t)
    d = c_s.shape[0]
    return (c_s - c_t).pow(2).sum() / (4.0 * d * d)


class CORAL(nn.Module):
    """Deep CORAL as a module: ``CORAL()(f_s [B_s, d], f_t [B_t, d]) -> scalar``."""

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return coral_loss(f_s, f_t)
