r"""Scores built on source-model predictions: LEEP, NLEEP and NCE (higher is better).

* :func:`leep` — Nguyen, Hassner, Seeger & Archambeau 2020, "LEEP: A New Measure to
  Evaluate Transferability of Learned Representations", ICML,
  https://arxiv.org/abs/2002.12462. With source probabilities :math:`\theta(x_i) \in
  \Delta^{Z}` on the target examples, the empirical joint
  :math:`\hat P(y, z) = \frac1N \sum_{i: y_i = y} \theta(x_i)_z`, the conditional
  :math:`\hat P(y \mid z) = \hat P(y, z) / \sum_{y'} \hat P(y', z)` and

  .. math:: \mathrm{LEEP} = \frac1N \sum_i \log \sum_z \hat P(y_i \mid z)\,\theta(x_i)_z
            \;\le 0 .

* :func:`nleep` — Li, Jia, Chen, Chen, Wang & Cui 2021, "Ranking Neural Checkpoints",
  CVPR, https://arxiv.org/abs/2011.11200. LEEP with :math:`\theta(x)` replaced by the
  posterior over the components of a Gaussian mixture fitted to PCA-reduced features
  (80 % of the variance; ``5 x classes`` components), so it needs no source classifier.
* :func:`nce` — Tran, Nguyen & Hassner 2019, "Transferability and Hardness of Supervised
  Classification Tasks", ICCV, https://arxiv.org/abs/1908.08142. With hard source labels
  :math:`z_i` (argmax of the source prediction) and the empirical joint of counts,

  .. math:: \mathrm{NCE} = -H(Y \mid Z) = \sum_{y, z} \hat P(y, z) \log \hat P(y \mid z)
            \;\le 0 .
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from transferkit.diagnostics.transferability_common import (
    Labels,
    as_features,
    as_labels,
    as_probs,
    pca_reduce,
    to_numpy,
)
from transferkit.errors import ConfigError, DataError

__all__ = ["leep", "leep_from_probs", "nce", "nleep"]

CovarianceType = Literal["full", "tied", "diag", "spherical"]


def leep_from_probs(probs: np.ndarray, labels: Labels) -> float:
    """LEEP on validated float64 probabilities ``[N, Z]`` and encoded labels ``[N]``."""
    joint = labels.one_hot().T @ probs / len(probs)  # P(y, z)  [K, Z]
    marginal = joint.sum(axis=0)  # P(z)  [Z]
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.einsum("iz,iz->i", probs, cond[labels.codes])  # sum_z P(y_i|z) theta_iz
    return float(np.mean(np.log(np.maximum(expected, np.finfo(np.float64).tiny))))


def leep(source_probs: Any, labels: Any) -> float:
    """LEEP of source probabilities ``[N, Z]`` (softmax outputs) for target ``labels`` [N].

    Raises:
        DataError: rows that are not probability vectors, length mismatch, NaN, one class.
    """
    enc = as_labels(labels, None, "leep")
    return leep_from_probs(as_probs(source_probs, len(enc.codes), "leep"), enc)


def nce(source_labels: Any, labels: Any) -> float:
    """NCE of hard source labels ``[N]`` (argmax of source predictions) for ``labels``.

    Source labels may be any hashable values (only their co-occurrence with the target
    labels matters). 0 means the target label is a function of the source label.
    """
    enc = as_labels(labels, None, "nce")
    z = to_numpy(source_labels)
    if z.ndim != 1 or len(z) != len(enc.codes):
        raise DataError(
            f"source_labels of shape {z.shape} do not match {len(enc.codes)} labels",
            where="nce",
            fix="pass one source class id per example (argmax of the source predictions)",
        )
    if z.dtype.kind == "f" and not np.isfinite(z).all():
        raise DataError(
            "source_labels contain NaN", where=f"nce, row {int(np.argmin(np.isfinite(z)))}"
        )
    _, z_codes = np.unique(z, return_inverse=True)
    joint = np.zeros((int(z_codes.max()) + 1, enc.num_classes))
    np.add.at(joint, (z_codes.reshape(-1), enc.codes), 1.0)
    joint /= len(z)  # P(z, y)
    cond = joint / joint.sum(axis=1, keepdims=True)  # P(y | z); every z occurs
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(cond[nz])))


def nleep(
    features: Any,
    labels: Any,
    *,
    n_components_ratio: int = 5,
    pca_dim: float | int | None = 0.8,
    seed: int = 0,
    covariance_type: CovarianceType = "diag",
) -> float:
    """NLEEP: LEEP on the posteriors of a Gaussian mixture fitted to the features.

    Args:
        features: ``[N, D]`` target-set features.
        labels: ``[N]`` target class labels.
        n_components_ratio: mixture components per target class (5 in the paper); capped at
            ``N``.
        pca_dim: PCA before the mixture: a float in (0, 1) keeps that fraction of the
            variance (0.8 in the paper), an int that many components, None none.
        seed: seeds the mixture's k-means initialisation (deterministic for a given seed).
        covariance_type: scikit-learn ``GaussianMixture`` covariance. The default ``"diag"``
            differs from the paper's full covariances: with ``80 %`` of the variance of
            weakly-correlated features PCA keeps hundreds of dimensions, where full
            covariances cost O(components x D^3) per EM step and are ill-determined from a
            few hundred examples per component. ``"full"`` reproduces the paper.
    """
    from sklearn.mixture import GaussianMixture

    where = "nleep"
    f = as_features(features, where)
    enc = as_labels(labels, len(f), where)
    if isinstance(n_components_ratio, bool) or not isinstance(n_components_ratio, int):
        raise ConfigError(f"n_components_ratio must be an int, got {n_components_ratio!r}")
    if n_components_ratio < 1:
        raise ConfigError(f"n_components_ratio must be >= 1, got {n_components_ratio}", where=where)
    reduced = pca_reduce(f, pca_dim, where)
    k = min(n_components_ratio * enc.num_classes, len(f))
    gmm = GaussianMixture(n_components=k, covariance_type=covariance_type, random_state=seed)
    probs = gmm.fit(reduced).predict_proba(reduced)
    return leep_from_probs(probs, enc)
