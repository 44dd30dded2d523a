"""Reconstruction-based domain adaptation losses and decoders (DSN, DRCN).

* DSN: Bousmalis, Trigeorgis, Silberman, Krishnan & Erhan 2016, "Domain Separation
  Networks", NeurIPS, https://arxiv.org/abs/1608.06019.
* DRCN: Ghifary, Kleijn, Zhang, Balduzzi & Li 2016, "Deep Reconstruction-Classification
  Networks for Unsupervised Domain Adaptation", ECCV, https://arxiv.org/abs/1607.03516.

**Difference loss** (DSN eq. 5) pushes the shared code ``S [B, D_s]`` and the private code
``P [B, D_p]`` of the same batch towards orthogonal subspaces. Each code is first centred
over the batch and then every row (one example's code) is scaled to unit L2 norm:

.. math::

    \\hat S = \\mathrm{rownorm}(S - \\mathbf 1 \\bar s^\\top), \\quad
    \\hat P = \\mathrm{rownorm}(P - \\mathbf 1 \\bar p^\\top), \\quad
    L_{diff} = \\| \\hat S^\\top \\hat P \\|_F^2 = \\sum_{a, b} \\Big(\\sum_i \\hat S_{ia}
    \\hat P_{ib}\\Big)^2

(``rownorm`` divides each row by ``max(||row||, 1e-12)``, so an all-zero row stays zero).
This is the normalisation of the authors' released TensorFlow code; the paper writes the
un-normalised ``||S^T P||_F^2``. The loss is exactly 0 when every (centred, normalised)
shared feature column is orthogonal, over the batch, to every private one. It is at most
``B^2`` (and at least ``B^2 / D`` for identical codes), about ``B`` for independent random
codes, so its scale grows with the batch. ``reduction="mean"`` divides by ``D_s * D_p``
(the released code; it vanishes for wide codes), ``reduction="batch"`` by ``B^2`` (the
mean squared cross-correlation of the unit-norm codes, in ``[0, 1]`` whatever ``B`` and
``D``).

**Scale-invariant MSE** (DSN eq. 4, after Eigen et al. 2014): with ``d = x - x_hat``
flattened to ``k`` elements per example,

.. math::

    L_{si\\_mse}(x, \\hat x) = \\frac1k \\|d\\|_2^2 - \\frac1{k^2} (d \\cdot \\mathbf 1_k)^2
    = \\mathrm{Var}_j(d_j),

the population variance of the per-example error, averaged over the batch: adding any
constant to one example's prediction does not change it, so the decoder need not learn
the absolute intensity of each image, only its shape.

**Decoders** map a code ``[B, code_dim]`` back to the input shape: an MLP for vectors
``(F,)``; for images ``(C, H, W)`` a ``Linear`` to a small ``[c0, h0, w0]`` map followed by
``n`` blocks of nearest-neighbour upsampling (to an explicit size, so any ``H, W >= 1``
is reproduced exactly) + 3x3 conv + ReLU and a final 3x3 conv to ``C`` channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = [
    "DifferenceLoss",
    "ImageDecoder",
    "ScaleInvariantMSE",
    "VectorDecoder",
    "difference_loss",
    "make_decoder",
    "scale_invariant_mse",
]

_TEXT_FIX = (
    "reconstruction needs image [C, H, W] or vector [F] inputs; for text, extract frozen "
    "features first (transferkit feature extraction) and adapt them with a vector backbone "
    "(tk:mlp)"
)


def _normalised(codes: Tensor, center: bool) -> Tensor:
    if center:
        codes = codes - codes.mean(dim=0, keepdim=True)
    return F.normalize(codes, p=2.0, dim=1, eps=1e-12)


def difference_loss(
    shared: Tensor,
    private: Tensor,
    *,
    center: bool = True,
    reduction: Literal["sum", "mean", "batch"] = "sum",
) -> Tensor:
    """DSN's soft orthogonality ``||S_hat^T P_hat||_F^2`` (scalar; see the module docstring).

    Args:
        shared: shared codes ``[B, D_s]``.
        private: private codes ``[B, D_p]`` of the same ``B`` examples.
        center: subtract the batch mean of each feature before normalising rows.
        reduction: ``"sum"`` (squared Frobenius norm), ``"mean"`` (divided by
            ``D_s * D_p``) or ``"batch"`` (divided by ``B^2``).

    Raises:
        DataError: the codes are not 2-D or have different batch sizes.
        ConfigError: unknown ``reduction``.
    """
    if shared.ndim != 2 or private.ndim != 2 or shared.shape[0] != private.shape[0]:
        raise DataError(
            f"difference loss needs shared [B, D_s] and private [B, D_p] codes of the same "
            f"batch, got {tuple(shared.shape)} and {tuple(private.shape)}",
            where="difference_loss(shared, private)",
            fix="pass the pooled shared and private codes of the same examples",
        )
    if reduction not in ("sum", "mean", "batch"):
        raise ConfigError(
            f"unknown reduction {reduction!r}",
            where="difference_loss(reduction)",
            fix="use 'sum' (the paper), 'mean' (the released code) or 'batch' (/ B^2)",
        )
    corr = _normalised(shared, center).T @ _normalised(private, center)
    loss = corr.pow(2).sum()
    if reduction == "mean":
        return loss / corr.numel()
    return loss / shared.shape[0] ** 2 if reduction == "batch" else loss


def scale_invariant_mse(pred: Tensor, target: Tensor) -> Tensor:
    """DSN's scale-invariant MSE: batch mean of the per-example variance of ``target - pred``.

    ``pred`` and ``target`` are ``[B, ...]`` of the same shape (images ``[B, C, H, W]`` or
    vectors ``[B, F]``); each example's error is flattened to ``k`` elements.

    Raises:
        DataError: shapes differ or there is no batch dimension.
    """
    if pred.shape != target.shape or pred.ndim < 2 or pred.shape[0] == 0:
        raise DataError(
            f"scale-invariant MSE needs predictions and targets of one shape [B, ...], got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}",
            where="scale_invariant_mse(pred, target)",
            fix="decode to exactly the input shape (losses.reconstruction.make_decoder)",
        )
    d = (target - pred).flatten(1)
    return (d - d.mean(dim=1, keepdim=True)).pow(2).mean(dim=1).mean()


class DifferenceLoss(nn.Module):
    """:func:`difference_loss` as a module: ``(shared, private) -> scalar``."""

    def __init__(
        self, center: bool = True, reduction: Literal["sum", "mean", "batch"] = "sum"
    ) -> None:
        super().__init__()
        self.center, self.reduction = center, reduction

    def forward(self, shared: Tensor, private: Tensor) -> Tensor:
        return difference_loss(shared, private, center=self.center, reduction=self.reduction)


class ScaleInvariantMSE(nn.Module):
    """:func:`scale_invariant_mse` as a module: ``(pred, target) -> scalar``."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return scale_invariant_mse(pred, target)


class VectorDecoder(nn.Module):
    """``Linear -> ReLU -> Linear``: ``[B, code_dim] -> [B, F]``."""

    def __init__(self, code_dim: int, features: int, hidden: int) -> None:
        super().__init__()
        self.output_shape = (features,)
        self.net = nn.Sequential(
            nn.Linear(code_dim, hidden), nn.ReLU(), nn.Linear(hidden, features)
        )

    def forward(self, code: Tensor) -> Tensor:
        return self.net(code)


def _stage_sizes(size: int, n: int) -> list[int]:
    """Spatial sizes from the seed map to ``size``: ``ceil(size / 2^(n-k))``, ``k = 0..n``."""
    return [math.ceil(size / 2 ** (n - k)) for k in range(n + 1)]


class ImageDecoder(nn.Module):
    """``[B, code_dim] -> [B, C, H, W]`` through upsample + conv blocks (module docstring).

    ``n = clip(floor(log2(min(H, W) / 4)), 0, 5)`` upsampling stages, so the seed map is
    4..7 pixels on its short side for ``min(H, W) >= 4`` (7x7 for 224x224); stage ``k``
    has ``max(16, width // 2^k)`` channels.
    """

    def __init__(self, code_dim: int, shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c, h, w = shape
        self.output_shape = shape
        n = min(5, max(0, (min(h, w) // 4).bit_length() - 1))  # floor(log2(min / 4))
        hs, ws = _stage_sizes(h, n), _stage_sizes(w, n)
        chans = [max(16, width // 2**k) for k in range(n + 1)]
        self.seed_shape = (chans[0], hs[0], ws[0])
        self.fc = nn.Sequential(nn.Linear(code_dim, chans[0] * hs[0] * ws[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        for k in range(1, n + 1):
            blocks += [
                nn.Upsample(size=(hs[k], ws[k]), mode="nearest"),
                nn.Conv2d(chans[k - 1], chans[k], 3, padding=1),
                nn.ReLU(),
            ]
        blocks.append(nn.Conv2d(chans[n], c, 3, padding=1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, code: Tensor) -> Tensor:
        seed = self.fc(code).view(code.shape[0], *self.seed_shape)
        return self.blocks(seed)


def _check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{name}={value!r} must be a positive integer",
            where=f"make_decoder({name})",
            fix=f"pass a positive integer {name}",
        )
    return value


def make_decoder(
    code_dim: int, input_shape: Sequence[int], *, width: int = 64, hidden: int | None = None
) -> ImageDecoder | VectorDecoder:
    """A decoder from codes ``[B, code_dim]`` to inputs ``[B, *input_shape]``.

    Args:
        code_dim: size of the code it decodes (e.g. ``backbone.num_features``).
        input_shape: ``(C, H, W)`` for images or ``(F,)`` for feature vectors.
        width: channels of the image decoder's seed map.
        hidden: hidden width of the vector decoder (default ``max(64, code_dim, F)``).

    Raises:
        DataError: ``input_shape`` is neither ``(C, H, W)`` nor ``(F,)`` (text token ids
            cannot be reconstructed: use frozen features and a vector backbone).
        ConfigError: non-positive sizes.
    """
    _check_positive(code_dim, "code_dim")
    _check_positive(width, "width")
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if len(shape) not in (1, 3):
        raise DataError(
            f"cannot build a decoder for inputs of shape {input_shape!r}",
            where="make_decoder(input_shape)",
            fix=_TEXT_FIX,
        )
    for i, v in enumerate(shape):
        _check_positive(v, f"input_shape[{i}]")
    if len(shape) == 1:
        feats = shape[0]
        width_h = _check_positive(hidden, "hidden") if hidden is not None else None
        return VectorDecoder(code_dim, feats, width_h or max(64, code_dim, feats))
    return ImageDecoder(code_dim, (shape[0], shape[1], shape[2]), width)
