"""Maximum Mean Discrepancy with a multi-kernel Gaussian bank (DAN) and its joint form (JAN).

Long, Cao, Wang & Jordan 2015, "Learning Transferable Features with Deep Adaptation
Networks" (DAN), ICML, https://arxiv.org/abs/1502.02791, and Long, Zhu, Wang & Jordan 2017,
"Deep Transfer Learning with Joint Adaptation Networks" (JAN), ICML,
https://arxiv.org/abs/1605.06636.

For source features ``X = f_s [m, D]`` and target features ``Y = f_t [n, D]`` and a kernel
``k``, the squared MMD (Gretton et al. 2012) is estimated by

.. math::

    \\widehat{MMD}^2_b = \\frac{1}{m^2}\\sum_{i,j} k(x_i, x_j)
        + \\frac{1}{n^2}\\sum_{i,j} k(y_i, y_j) - \\frac{2}{mn}\\sum_{i,j} k(x_i, y_j)

(biased, ``>= 0``) or, dropping the diagonal ``i = j`` terms of the first two sums and
dividing by ``m(m-1)`` and ``n(n-1)`` (unbiased, can be slightly negative, needs
``m, n >= 2``). The kernel is a mean of Gaussians
``k(x, y) = 1/K sum_k exp(-||x - y||^2 / (2 sigma_k^2))`` with
``sigma_k^2 = base^2 * mul^(k - K // 2)``, ``k = 0..K-1``: a bank centred on ``base``, the
median (``median_heuristic``) or mean pairwise distance of the pooled sample, computed
without gradient. JMMD multiplies the kernels of several layers (e.g. features and softmax
outputs): ``k(z, z') = prod_l k_l(z_l, z'_l)``.

Pairwise squared distances use ``||a||^2 + ||b||^2 - 2 a.b`` (one matrix product, clamped
at 0); no device handling: everything runs where the inputs are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = [
    "JointMMD",
    "MultiKernelMMD",
    "gaussian_kernel_bank",
    "joint_mmd2",
    "median_heuristic",
    "mmd2",
    "pairwise_sq_dists",
]

Base = Literal["median", "mean"]


def _check_pair(f_s: Tensor, f_t: Tensor, where: str, unbiased: bool) -> None:
    if f_s.ndim != 2 or f_t.ndim != 2 or f_s.shape[1] != f_t.shape[1]:
        raise DataError(
            f"MMD needs source [B_s, D] and target [B_t, D] features, got "
            f"{tuple(f_s.shape)} and {tuple(f_t.shape)}",
            where=where,
            fix="pool or flatten both batches to [batch, dim] with the same dim",
        )
    need = 2 if unbiased else 1
    if f_s.shape[0] < need or f_t.shape[0] < need:
        raise DataError(
            f"the {'unbiased' if unbiased else 'biased'} MMD estimator needs at least {need} "
            f"samples per domain, got {f_s.shape[0]} and {f_t.shape[0]}",
            where=where,
            fix="use larger batches (or unbiased=False for single samples)",
        )


def _check_bank(num_kernels: int, kernel_mul: float, base: str) -> None:
    if isinstance(num_kernels, bool) or not isinstance(num_kernels, int) or num_kernels < 1:
        raise ConfigError(
            f"num_kernels={num_kernels!r} must be a positive integer",
            where="mmd num_kernels",
            fix="use 5 (the DAN choice) or another small positive integer",
        )
    if not kernel_mul > 0:
        raise ConfigError(
            f"kernel_mul={kernel_mul!r} must be a positive number",
            where="mmd kernel_mul",
            fix="use 2.0 (bandwidths base * 2^k)",
        )
    if base not in ("median", "mean"):
        raise ConfigError(
            f"unknown bandwidth base {base!r}",
            where="mmd base",
            fix="use 'median' (median heuristic) or 'mean' (mean pairwise distance)",
        )


def pairwise_sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances ``[N, M]`` between rows of ``x [N, D]`` and ``y [M, D]``."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    xx = x.pow(2).sum(1, keepdim=True)
    yy = y.pow(2).sum(1, keepdim=True)
    return (xx + yy.T - 2.0 * (x @ y.T)).clamp_min(0.0)


def _pooled_distances(d2: Tensor) -> Tensor:
    n = d2.shape[0]
    iu = torch.triu_indices(n, n, offset=1, device=d2.device)
    return d2.detach()[iu[0], iu[1]].sqrt()


def _base_from_d2(d2: Tensor, base: Base) -> Tensor:
    dist = _pooled_distances(d2)
    if dist.numel() == 0:
        return d2.new_ones(())
    value = dist.median() if base == "median" else dist.mean()
    fallback = torch.where(dist.mean() > 0, dist.mean(), torch.ones_like(value))
    return torch.where(value > 0, value, fallback)


def median_heuristic(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Median Euclidean distance between distinct rows of ``x`` (and ``y``, pooled); a scalar.

    Computed without gradient. Falls back to the mean distance when more than half of the
    pairs coincide, and to ``1`` when all points are equal (any bandwidth is then exact).
    """
    z = x if y is None else torch.cat([x, y])
    if z.ndim != 2:
        raise DataError(
            f"median_heuristic needs [N, D] inputs, got {tuple(z.shape)}",
            where="median_heuristic",
            fix="pool or flatten features to [batch, dim] first",
        )
    return _base_from_d2(pairwise_sq_dists(z, z), "median")


def gaussian_kernel_bank(d2: Tensor, sigmas: Tensor) -> Tensor:
    """Mean of Gaussian kernels ``exp(-d2 / (2 sigma_k^2))`` over ``sigmas [K]``; same shape."""
    scale = (2.0 * sigmas.to(d2.dtype).pow(2)).reciprocal()
    return torch.exp(-d2.unsqueeze(-1) * scale).mean(-1)


def _bank_sigmas(d2: Tensor, num_kernels: int, kernel_mul: float, base: Base) -> Tensor:
    center = _base_from_d2(d2, base)
    powers = torch.arange(num_kernels, device=d2.device, dtype=d2.dtype) - num_kernels // 2
    return center * torch.as_tensor(kernel_mul, dtype=d2.dtype).pow(powers / 2.0)


def _layer_kernel(
    z: Tensor,
    sigmas: Sequence[float] | Tensor | None,
    num_kernels: int,
    kernel_mul: float,
    base: Base,
) -> Tensor:
    d2 = pairwise_sq_dists(z, z)
    if sigmas is None:
        bank = _bank_sigmas(d2, num_kernels, kernel_mul, base)
    else:
        bank = torch.as_tensor(sigmas, dtype=d2.dtype, device=d2.device).reshape(-1)
        if bank.numel() == 0 or not bool((bank > 0).all()):
            raise ConfigError(
                f"kernel bandwidths {bank.tolist()} must be a non-empty list of positive numbers",
                where="mmd sigmas",
                fix="pass positive bandwidths or sigmas=None for the median-heuristic bank",
            )
    return gaussian_kernel_bank(d2, bank)


def _mmd2_from_kernel(k: Tensor, m: int, unbiased: bool) -> Tensor:
    k_ss, k_tt, k_st = k[:m, :m], k[m:, m:], k[:m, m:]
    n = k.shape[0] - m
    if not unbiased:
        return k_ss.mean() + k_tt.mean() - 2.0 * k_st.mean()
    ss = (k_ss.sum() - k_ss.diagonal().sum()) / (m * (m - 1))
    tt = (k_tt.sum() - k_tt.diagonal().sum()) / (n * (n - 1))
    return ss + tt - 2.0 * k_st.mean()


def mmd2(
    f_s: Tensor,
    f_t: Tensor,
    *,
    sigmas: Sequence[float] | Tensor | None = None,
    num_kernels: int = 5,
    kernel_mul: float = 2.0,
    base: Base = "median",
    unbiased: bool = False,
) -> Tensor:
    """Multi-kernel squared MMD between ``f_s [B_s, D]`` and ``f_t [B_t, D]`` (a scalar).

    Args:
        sigmas: explicit Gaussian bandwidths ``[K]``; ``None`` builds the DAN bank of
            ``num_kernels`` kernels with ``sigma_k^2 = base^2 * kernel_mul^(k - K//2)``.
        base: ``"median"`` (median heuristic) or ``"mean"`` pairwise distance as bank centre.
        unbiased: the U-statistic (drops ``k(x_i, x_i)`` terms; needs ``B_s, B_t >= 2``).

    Raises:
        DataError: shapes are not ``[B, D]`` with a common ``D``, or batches are too small.
        ConfigError: invalid bank parameters or non-positive ``sigmas``.
    """
    _check_pair(f_s, f_t, "mmd2(f_s, f_t)", unbiased)
    _check_bank(num_kernels, kernel_mul, base)
    k = _layer_kernel(torch.cat([f_s, f_t]), sigmas, num_kernels, kernel_mul, base)
    return _mmd2_from_kernel(k, f_s.shape[0], unbiased)


def joint_mmd2(
    layers_s: Sequence[Tensor],
    layers_t: Sequence[Tensor],
    *,
    sigmas: Sequence[Sequence[float] | Tensor | None] | None = None,
    num_kernels: int = 5,
    kernel_mul: float = 2.0,
    base: Base = "median",
    unbiased: bool = False,
) -> Tensor:
    """Joint MMD (JAN): squared MMD under the product of per-layer kernels (a scalar).

    ``layers_s[l]`` is ``[B_s, D_l]`` and ``layers_t[l]`` is ``[B_t, D_l]``, e.g.
    ``(features, softmax(logits))``. ``sigmas[l]`` fixes layer ``l``'s bandwidths (JAN uses
    a single ``0.92`` for the softmax layer); ``None`` entries use the multi-kernel bank.
    """
    if len(layers_s) != len(layers_t) or len(layers_s) == 0:
        raise DataError(
            f"joint MMD needs the same non-zero number of layers per domain, got "
            f"{len(layers_s)} and {len(layers_t)}",
            where="joint_mmd2(layers_s, layers_t)",
            fix="pass matching lists such as [features, probabilities] for both domains",
        )
    per_layer = [None] * len(layers_s) if sigmas is None else list(sigmas)
    if len(per_layer) != len(layers_s):
        raise ConfigError(
            f"{len(per_layer)} bandwidth entries for {len(layers_s)} layers",
            where="joint_mmd2 sigmas",
            fix="give one entry (or None) per layer",
        )
    _check_bank(num_kernels, kernel_mul, base)
    k: Tensor | None = None
    for idx, (a, b, sig) in enumerate(zip(layers_s, layers_t, per_layer, strict=True)):
        _check_pair(a, b, f"joint_mmd2 layer {idx}", unbiased)
        if a.shape[0] != layers_s[0].shape[0] or b.shape[0] != layers_t[0].shape[0]:
            raise DataError(
                f"layer {idx} has batch sizes {a.shape[0]}/{b.shape[0]}, layer 0 "
                f"{layers_s[0].shape[0]}/{layers_t[0].shape[0]}",
                where=f"joint_mmd2 layer {idx}",
                fix="take every layer's outputs from the same batch",
            )
        k_l = _layer_kernel(torch.cat([a, b]), sig, num_kernels, kernel_mul, base)
        k = k_l if k is None else k * k_l
    assert k is not None
    return _mmd2_from_kernel(k, layers_s[0].shape[0], unbiased)


class MultiKernelMMD(nn.Module):
    """DAN's MK-MMD as a module: ``MultiKernelMMD()(f_s [B_s, D], f_t [B_t, D]) -> scalar``."""

    def __init__(
        self,
        num_kernels: int = 5,
        kernel_mul: float = 2.0,
        base: Base = "median",
        sigmas: Sequence[float] | None = None,
        unbiased: bool = False,
    ) -> None:
        super().__init__()
        _check_bank(num_kernels, kernel_mul, base)
        self.num_kernels, self.kernel_mul, self.base = num_kernels, float(kernel_mul), base
        self.sigmas = None if sigmas is None else [float(s) for s in sigmas]
        self.unbiased = unbiased

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return mmd2(
            f_s,
            f_t,
            sigmas=self.sigmas,
            num_kernels=self.num_kernels,
            kernel_mul=self.kernel_mul,
            base=self.base,
            unbiased=self.unbiased,
        )

    def extra_repr(self) -> str:
        return (
            f"num_kernels={self.num_kernels}, kernel_mul={self.kernel_mul}, base={self.base!r}, "
            f"sigmas={self.sigmas}, unbiased={self.unbiased}"
        )


class JointMMD(nn.Module):
    """JAN's JMMD as a module: ``JointMMD()([f_s, p_s], [f_t, p_t]) -> scalar``."""

    def __init__(
        self,
        num_kernels: int = 5,
        kernel_mul: float = 2.0,
        base: Base = "median",
        sigmas: Sequence[Sequence[float] | None] | None = None,
        unbiased: bool = False,
    ) -> None:
        super().__init__()
        _check_bank(num_kernels, kernel_mul, base)
        self.num_kernels, self.kernel_mul, self.base = num_kernels, float(kernel_mul), base
        self.sigmas = None if sigmas is None else list(sigmas)
        self.unbiased = unbiased

    def forward(self, layers_s: Sequence[Tensor], layers_t: Sequence[Tensor]) -> Tensor:
        return joint_mmd2(
            layers_s,
            layers_t,
            sigmas=self.sigmas,
            num_kernels=self.num_kernels,
            kernel_mul=self.kernel_mul,
            base=self.base,
            unbiased=self.unbiased,
        )

    def extra_repr(self) -> str:
        return f"num_kernels={self.num_kernels}, base={self.base!r}, unbiased={self.unbiased}"
