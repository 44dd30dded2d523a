r"""LogME: the log marginal evidence of a Bayesian linear model on frozen features.

You, Liu, Wang & Long 2021, "LogME: Practical Assessment of Pre-trained Models for
Transfer Learning", ICML, https://arxiv.org/abs/2102.11005.

For features :math:`F \in \mathbb{R}^{N \times D}` and one target column :math:`y \in
\mathbb{R}^N` (a one-hot class indicator, or a regression target), the model is
:math:`w \sim \mathcal{N}(0, \alpha^{-1} I_D)`, :math:`y \mid F, w \sim \mathcal{N}(Fw,
\beta^{-1} I_N)`. With :math:`A = \alpha I + \beta F^\top F` and posterior mean
:math:`m = \beta A^{-1} F^\top y` the log evidence is

.. math::

    \mathcal{L}(\alpha, \beta) = \tfrac{N}{2}\log\beta + \tfrac{D}{2}\log\alpha
      - \tfrac{N}{2}\log 2\pi - \tfrac{\beta}{2}\lVert Fm - y\rVert^2
      - \tfrac{\alpha}{2} m^\top m - \tfrac12 \log\lvert A\rvert .

It is maximised by MacKay's fixed-point iteration: with :math:`\sigma_i` the eigenvalues of
:math:`F^\top F`, :math:`\gamma = \sum_i \beta\sigma_i / (\alpha + \beta\sigma_i)`, then
:math:`\alpha \leftarrow \gamma / m^\top m` and
:math:`\beta \leftarrow (N - \gamma) / \lVert Fm - y\rVert^2`. LogME is
:math:`\mathcal{L}^* / N` averaged over the target columns (the paper's normalisation).

The SVD trick: with the thin SVD :math:`F = U\,\mathrm{diag}(s)\,V^\top` (rank
:math:`r \le \min(N, D)`, :math:`\sigma = s^2`) and :math:`z = U^\top y`, every quantity is
a sum over :math:`r` terms, :math:`t_i = \alpha + \beta\sigma_i`:

* :math:`m^\top m = \sum_i \beta^2 \sigma_i z_i^2 / t_i^2`,
* :math:`\lVert Fm - y\rVert^2 = \sum_i \alpha^2 z_i^2 / t_i^2 + (\lVert y\rVert^2 -
  \lVert z\rVert^2)`,
* :math:`\log\lvert A\rvert = \sum_i \log t_i + (D - r)\log\alpha`,

so one decomposition serves all target columns and each fixed-point step costs
:math:`O(r)` per column (all columns are updated at once, vectorised). The decomposition is
the eigendecomposition of the smaller Gram matrix, :math:`F^\top F` (:math:`D \times D`)
when :math:`N \ge D`, else :math:`F F^\top` (:math:`N \times N`): its eigenvalues are
:math:`s^2` and its eigenvectors the right (resp. left) singular vectors.

When the features fit a target exactly (typically :math:`D \ge N`), the evidence keeps
growing towards its noise-free limit as :math:`\beta \to \infty` and the iteration has no
fixed point; the iteration then runs to ``max_iter`` (cheap: :math:`O(r)` a step, the
residual floored at :math:`10^{-12}\lVert y\rVert^2`) and returns a finite value that has
converged to that limit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transferkit.diagnostics.transferability_common import (
    as_features,
    as_labels,
    sym_eigh,
    to_numpy,
)
from transferkit.errors import DataError

__all__ = ["logme", "logme_evidence"]

_WHERE = "logme"


def _spectrum(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared singular values ``sigma`` ``[r]``, squared projections ``z^2`` ``[r, K]``
    of the targets on the left singular vectors, and ``||y||^2 - ||z||^2`` ``[K]``."""
    n, d = f.shape
    if n >= d:
        sigma, v = sym_eigh(f.T @ f)
        p = v.T @ (f.T @ y)  # p_i = s_i z_i
        keep = sigma > sigma.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
        z2 = np.where(keep[:, None], p**2 / np.where(keep, sigma, 1.0)[:, None], 0.0)
    else:
        sigma, u = sym_eigh(f @ f.T)
        keep = sigma > sigma.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
        z2 = np.where(keep[:, None], (u.T @ y) ** 2, 0.0)
    sigma = np.where(keep, sigma, 0.0)
    outside = np.clip((y**2).sum(axis=0) - z2.sum(axis=0), 0.0, None)
    return sigma, z2, outside


def _terms(
    alpha: np.ndarray, beta: np.ndarray, sigma: np.ndarray, z2: np.ndarray, outside: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``gamma``, ``m^T m``, ``||Fm - y||^2`` and ``sum_i log t_i`` per column ``[K]``."""
    t = alpha[None, :] + beta[None, :] * sigma[:, None]  # [r, K]
    gamma = (beta[None, :] * sigma[:, None] / t).sum(axis=0)
    mm = (beta[None, :] ** 2 * sigma[:, None] * z2 / t**2).sum(axis=0)
    res = (alpha[None, :] ** 2 * z2 / t**2).sum(axis=0) + outside
    return gamma, mm, res, np.log(t).sum(axis=0)


def logme_evidence(
    features: np.ndarray, targets: np.ndarray, *, tol: float = 1e-10, max_iter: int = 1000
) -> np.ndarray:
    """Per-column normalised log evidence :math:`\\mathcal{L}^*_k / N`, float64 ``[K]``.

    Args:
        features: float64 ``[N, D]``, already validated.
        targets: float64 ``[N, K]`` (one-hot columns or regression targets).
        tol: stop when every column's ``alpha`` and ``beta`` change by less than this
            relative amount in one step.
        max_iter: upper bound on fixed-point steps (typically a handful are needed).
    """
    n, d = features.shape
    sigma, z2, outside = _spectrum(features, targets)
    scale = np.maximum((targets**2).sum(axis=0), np.finfo(np.float64).tiny)
    floor = 1e-12 * scale  # keeps alpha, beta finite if m = 0 or y is fitted exactly
    alpha = np.ones(targets.shape[1])
    beta = np.ones(targets.shape[1])
    for _ in range(max_iter):
        gamma, mm, res, _ = _terms(alpha, beta, sigma, z2, outside)
        new_alpha = gamma / np.maximum(mm, floor)
        new_beta = np.maximum(n - gamma, 0.0) / np.maximum(res, floor)
        new_alpha = np.maximum(new_alpha, np.finfo(np.float64).tiny)
        new_beta = np.maximum(new_beta, np.finfo(np.float64).tiny)
        step = max(
            np.max(np.abs(new_alpha - alpha) / alpha), np.max(np.abs(new_beta - beta) / beta)
        )
        alpha, beta = new_alpha, new_beta
        if step < tol:
            break
    _, mm, res, log_t = _terms(alpha, beta, sigma, z2, outside)
    # sigma holds min(N, D) eigenvalues (zeros included, each adding log alpha via log t);
    # the other D - min(N, D) eigenvalues of F^T F are zero too.
    log_det = log_t + (d - len(sigma)) * np.log(alpha)
    evidence = (
        0.5 * n * np.log(beta)
        + 0.5 * d * np.log(alpha)
        - 0.5 * n * np.log(2 * np.pi)
        - 0.5 * beta * res
        - 0.5 * alpha * mm
        - 0.5 * log_det
    )
    return evidence / n


def _regression_targets(labels: np.ndarray, n: int) -> np.ndarray:
    y = labels.astype(np.float64)
    y = y.reshape(len(y), -1) if y.ndim else y
    if y.ndim != 2 or len(y) != n:
        raise DataError(
            f"regression targets of shape {labels.shape} do not match {n} feature rows",
            where=_WHERE,
            fix="pass targets as [N] or [N, T], one row per feature row",
        )
    if not np.isfinite(y).all():
        bad = int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
        raise DataError(
            "regression targets contain NaN or infinite values", where=f"{_WHERE}, row {bad}"
        )
    if ((y**2).sum(axis=0) == 0).any():
        raise DataError(
            "a regression target column is all zeros", where=_WHERE, fix="drop constant targets"
        )
    return y


def logme(features: Any, labels: Any, *, regression: bool | None = None) -> float:
    """LogME score of ``features`` ``[N, D]`` for ``labels`` ``[N]`` (higher is better).

    Classification: each class's one-hot column is a target and the per-example evidences
    are averaged over classes. Regression: ``labels`` are float targets ``[N]`` or
    ``[N, T]``, used as they are (no centring, as in the paper). ``regression=None``
    infers the task from the dtype like :class:`transferkit.data.types.Dataset` stores it:
    float labels are regression targets, integer / bool / string labels are classes.

    Raises:
        DataError: shape mismatch, NaN, fewer than two classes, an all-zero target.
    """
    f = as_features(features, _WHERE)
    y_raw = to_numpy(labels)
    if regression is None:
        regression = y_raw.dtype.kind == "f"
    if regression:
        y = _regression_targets(y_raw, len(f))
    else:
        y = as_labels(y_raw, len(f), _WHERE).one_hot()
    return float(np.mean(logme_evidence(f, y)))
