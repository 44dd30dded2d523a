"""Batch Spectral Shrinkage (BSS): suppress the smallest singular values of batch features.

Chen, Wang, Fu, Long & Wang 2019, "Catastrophic Forgetting Meets Negative Transfer: Batch
Spectral Shrinkage for Safe Transfer Learning", NeurIPS,
https://proceedings.neurips.cc/paper/2019/hash/c6bff625bdb0393992c9d4db0c6bbe45-Abstract.html

For a feature matrix ``F`` of shape ``[B, D]`` with singular values
``sigma_1 >= ... >= sigma_m`` (``m = min(B, D)``):

.. math::

    L_{bss}(F) = \\sum_{i=1}^{k} \\sigma_{m+1-i}^2

i.e. the sum of the ``k`` smallest squared singular values. The paper uses ``k = 1`` and a
weight ``eta = 0.001`` on this term; the weight is left to the caller. The singular values
come from :func:`torch.linalg.svdvals`, whose gradient ``U diag(dL/dsigma) V^T`` is defined
even for repeated singular values, and which is deterministic on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = ["BatchSpectralShrinkage", "bss_loss"]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(
            f"BSS k={k!r} must be a positive integer",
            where="bss k",
            fix="use k=1 (the paper's choice) or a small integer",
        )


def bss_loss(features: Tensor, k: int = 1) -> Tensor:
    """Sum of the ``k`` smallest squared singular values of ``features`` ``[B, D]`` (scalar).

    Half-precision inputs are computed in float32 (the SVD has no half kernels).

    Raises:
        ConfigError: ``k`` is not a positive integer.
        DataError: ``features`` is not 2-D, or ``k > min(B, D)``.
    """
    _check_k(k)
    if features.ndim != 2:
        raise DataError(
            f"BSS needs a feature matrix [B, D], got shape {tuple(features.shape)}",
            where="bss_loss(features)",
            fix="pool or flatten features to [batch, dim] first",
        )
    m = min(features.shape)
    if k > m:
        raise DataError(
            f"BSS k={k} exceeds min(batch, dim) = {m} singular values",
            where=f"bss_loss(features of shape {tuple(features.shape)})",
            fix=f"use k <= {m} or a larger batch",
        )
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    sigma = torch.linalg.svdvals(features)  # [m], descending
    return sigma[m - k :].pow(2).sum()


class BatchSpectralShrinkage(nn.Module):
    """BSS as a module: ``BatchSpectralShrinkage(k)(features [B, D]) -> scalar``."""

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        _check_k(k)
        self.k = k

    def forward(self, features: Tensor) -> Tensor:
        return bss_loss(features, self.k)

    def extra_repr(self) -> str:
        return f"k={self.k}"
