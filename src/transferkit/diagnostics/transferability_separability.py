r"""Class-separability scores on features: H-score, shrinkage H-score, GBC (higher is better).

* :func:`hscore` — Bao, Li, Huang & Zheng 2019, "An Information-Theoretic Approach to
  Transferability in Task Transfer Learning", ICIP, https://doi.org/10.1109/ICIP.2019.8803726.

  .. math:: H(f) = \operatorname{tr}\!\big(\Sigma_f^{-1}\,\Sigma_{g}\big),
            \qquad g(x) = \mathbb{E}[f(X) \mid Y = y(x)],

  :math:`\Sigma_f` the feature covariance and :math:`\Sigma_g = \sum_k \frac{n_k}{N}
  (\mu_k - \mu)(\mu_k - \mu)^\top` the between-class covariance. So
  :math:`H = \sum_k \frac{n_k}{N} (\mu_k - \mu)^\top \Sigma_f^{+} (\mu_k - \mu)`, a
  Fisher-style ratio that is invariant to any invertible linear map of the features
  (scaling included). :math:`\Sigma_f^{+}` is the pseudo-inverse: eigenvalues below
  :math:`\lambda_{\max} D \varepsilon` count as zero.
* :func:`hscore_shrinkage` — Ibrahim, Ponomareva & Mazumder 2022, "Newer is not always
  better: Rethinking transferability metrics, their peculiarities, stability and
  performance", ECML-PKDD, https://arxiv.org/abs/2110.06893. The covariance is replaced by
  the Ledoit-Wolf estimate :math:`\Sigma_\alpha = (1 - \alpha)\Sigma_f + \alpha
  \frac{\operatorname{tr}\Sigma_f}{D} I` and
  :math:`H_\alpha = \operatorname{tr}(\Sigma_\alpha^{-1} (1 - \alpha) \Sigma_g)`, stable
  when :math:`D` is close to or above :math:`N`; :math:`\alpha \to 0` as :math:`N/D \to
  \infty`, where it meets :func:`hscore`.
* :func:`gbc` — Pándy, Agostinelli, Uijlings, Ferrari & Mensink 2022, "Transferability
  Estimation using Bhattacharyya Class Separability", CVPR, https://arxiv.org/abs/2111.12780.
  Features are PCA-reduced (64 dimensions); each class is a Gaussian with mean
  :math:`\mu_c` and diagonal covariance :math:`\Sigma_c`; with
  :math:`\Sigma = (\Sigma_i + \Sigma_j)/2` the Bhattacharyya distance is

  .. math:: D_B(i, j) = \tfrac18 (\mu_i - \mu_j)^\top \Sigma^{-1} (\mu_i - \mu_j)
            + \tfrac12 \log \frac{\lvert\Sigma\rvert}{\sqrt{\lvert\Sigma_i\rvert
            \lvert\Sigma_j\rvert}},

  and :math:`\mathrm{GBC} = -\sum_{i \ne j} e^{-D_B(i, j)} \in [-K(K-1), 0]` (ordered
  pairs, as in the paper): 0 for perfectly separated classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transferkit.diagnostics.transferability_common import (
    Labels,
    as_features,
    as_labels,
    class_means,
    pca_reduce,
    sym_eigh,
)

__all__ = ["gbc", "hscore", "hscore_shrinkage"]

_PAIR_BLOCK = 4_000_000  # float64 entries per broadcast block in gbc (~32 MB)


def _between_class(f: np.ndarray, enc: Labels) -> tuple[np.ndarray, np.ndarray]:
    """Centred class means ``mu_k - mu`` ``[K, D]`` and class weights ``n_k / N`` ``[K]``."""
    return class_means(f, enc) - f.mean(axis=0), enc.counts / len(f)


def _trace_inv_times_between(cov: np.ndarray, diffs: np.ndarray, weights: np.ndarray) -> float:
    """``sum_k w_k d_k^T cov^+ d_k`` via one eigendecomposition of ``cov`` ``[D, D]``."""
    lam, vec = sym_eigh(cov)
    keep = lam > lam.max(initial=0.0) * len(lam) * np.finfo(np.float64).eps
    proj = diffs @ vec[:, keep]  # [K, r]
    return float(np.sum(weights[:, None] * proj**2 / lam[keep]))


def hscore(features: Any, labels: Any) -> float:
    """H-score of ``features`` ``[N, D]`` for class ``labels`` ``[N]``.

    Ranges from 0 (class means coincide) to at most ``min(K - 1, D)``.
    """
    f = as_features(features, "hscore")
    enc = as_labels(labels, len(f), "hscore")
    diffs, weights = _between_class(f, enc)
    centred = f - f.mean(axis=0)
    cov = centred.T @ centred / len(f)
    return _trace_inv_times_between(cov, diffs, weights)


def hscore_shrinkage(features: Any, labels: Any) -> float:
    """H-score with the Ledoit-Wolf shrunk covariance (scikit-learn ``LedoitWolf``)."""
    from sklearn.covariance import LedoitWolf

    f = as_features(features, "hscore_shrinkage")
    enc = as_labels(labels, len(f), "hscore_shrinkage")
    diffs, weights = _between_class(f, enc)
    lw = LedoitWolf(store_precision=False, assume_centered=False).fit(f)
    return (1.0 - float(lw.shrinkage_)) * _trace_inv_times_between(lw.covariance_, diffs, weights)


def _class_gaussians(x: np.ndarray, enc: Labels) -> tuple[np.ndarray, np.ndarray]:
    """Per-class means and diagonal variances ``[K, d]`` (maximum likelihood).

    Variances are floored at ``1e-10`` times the mean feature variance so a constant
    feature within a class does not give ``log 0``; the floor is relative, so GBC stays
    invariant to scaling the features.
    """
    mu = class_means(x, enc)
    var = class_means((x - mu[enc.codes]) ** 2, enc)
    floor = 1e-10 * max(float(x.var(axis=0).mean()), np.finfo(np.float64).tiny)
    return mu, np.maximum(var, floor)


def _bhattacharyya_coefficients(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``exp(-D_B(i, j))`` ``[K, K]`` between diagonal Gaussians, in row blocks."""
    k, d = mu.shape
    log_det = np.log(var).sum(axis=1)  # [K]
    out = np.empty((k, k))
    step = max(1, _PAIR_BLOCK // max(1, k * d))
    for start in range(0, k, step):
        rows = slice(start, min(k, start + step))
        avg = 0.5 * (var[rows, None, :] + var[None, :, :])  # [b, K, d]
        maha = ((mu[rows, None, :] - mu[None, :, :]) ** 2 / avg).sum(axis=2)
        log_ratio = np.log(avg).sum(axis=2) - 0.5 * (log_det[rows, None] + log_det[None, :])
        out[rows] = np.exp(-(maha / 8.0 + 0.5 * log_ratio))
    return out


def gbc(features: Any, labels: Any, *, pca_dim: int | None = 64) -> float:
    """Gaussian Bhattacharyya Coefficient of ``features`` ``[N, D]`` for ``labels`` [N].

    Args:
        features: ``[N, D]`` target-set features.
        labels: ``[N]`` class labels; every class needs at least two examples.
        pca_dim: PCA components kept before fitting the class Gaussians (64 in the paper;
            capped at ``min(N, D)``); None fits them on the raw features.
    """
    f = as_features(features, "gbc")
    enc = as_labels(labels, len(f), "gbc", min_per_class=2)
    x = pca_reduce(f, pca_dim, "gbc")
    mu, var = _class_gaussians(x, enc)
    coeff = _bhattacharyya_coefficients(mu, var)
    return -float(coeff.sum() - np.trace(coeff))
