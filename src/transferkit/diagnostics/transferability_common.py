"""Input checks and shared helpers for the transferability scores.

Every score takes target-set features ``[N, D]`` (numpy arrays or torch tensors), target
labels ``[N]`` and, for LEEP and NCE, source-model class probabilities ``[N, Z]``. These
helpers turn them into float64 / int64 numpy arrays and raise :class:`DataError` naming
what was wrong (shape mismatch, fewer than two classes, NaN, ...), where, and how to fix it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from transferkit.diagnostics.domain_gap import as_feature_matrix
from transferkit.errors import ConfigError, DataError

__all__ = [
    "Labels",
    "as_features",
    "as_labels",
    "as_probs",
    "class_means",
    "pca_reduce",
    "sym_eigh",
    "to_numpy",
]


class Labels(NamedTuple):
    """Target labels encoded as contiguous class ids.

    ``codes`` int64 ``[N]`` in ``0..K-1`` (classes sorted as ``np.unique`` sorts them),
    ``counts`` int64 ``[K]`` examples per class, ``classes`` the original label values.
    """

    codes: np.ndarray
    counts: np.ndarray
    classes: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    def one_hot(self) -> np.ndarray:
        """float64 ``[N, K]`` indicator matrix."""
        out = np.zeros((len(self.codes), self.num_classes))
        out[np.arange(len(self.codes)), self.codes] = 1.0
        return out


def to_numpy(a: Any) -> np.ndarray:
    """A numpy view of ``a`` (torch tensors are detached and moved to the CPU)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch.Tensor without importing torch
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def as_features(features: Any, where: str, name: str = "features") -> np.ndarray:
    """float64 ``[N, D]`` features; DataError on None, a scalar or NaN / inf values."""
    if features is None:
        raise DataError(f"{name} are missing", where=where, fix=f"pass {name} as an [N, D] array")
    return as_feature_matrix(features, name, where, min_rows=2)


def as_labels(labels: Any, n: int | None, where: str, min_per_class: int = 1) -> Labels:
    """Encode classification labels ``[N]`` (ints, strings, bools or floats).

    Raises DataError when ``labels`` is not 1-D, its length differs from ``n`` (the number
    of feature rows; None skips the check), it holds NaN, it has fewer than two classes,
    or a class has fewer than ``min_per_class`` examples.
    """
    y = to_numpy(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"labels must be 1-D [N], got shape {y.shape}",
            where=where,
            fix="pass one class id per example (argmax one-hot labels first)",
        )
    if n is not None and len(y) != n:
        raise DataError(
            f"labels have {len(y)} entries but features have {n} rows",
            where=where,
            fix="pass exactly one label per feature row, in the same order",
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise DataError("labels contain NaN or infinite values", where=f"{where}, row {bad}")
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise DataError(
            f"labels hold {len(classes)} class(es); a transferability score needs at least 2",
            where=where,
            fix="score on a target set with examples of at least two classes",
        )
    if counts.min() < min_per_class:
        small = classes[int(np.argmin(counts))]
        raise DataError(
            f"class {small!r} has {int(counts.min())} example(s), this score needs at least "
            f"{min_per_class} per class",
            where=where,
            fix="drop classes that are that rare or add examples",
        )
    return Labels(codes.astype(np.int64).reshape(-1), counts.astype(np.int64), classes)


def as_probs(source_probs: Any, n: int, where: str, atol: float = 1e-3) -> np.ndarray:
    """float64 ``[N, Z]`` source-model probabilities: non-negative rows summing to 1."""
    if source_probs is None:
        raise DataError(
            "source_probs are missing; this score needs the source model's class probabilities",
            where=where,
            fix="pass source_probs=softmax(source_logits) of shape [N, Z]",
        )
    p = as_feature_matrix(source_probs, "source_probs", where, min_rows=1)
    if len(p) != n:
        raise DataError(
            f"source_probs have {len(p)} rows but labels have {n} entries",
            where=where,
            fix="compute the source predictions on the same examples, in the same order",
        )
    row_sum = p.sum(axis=1)
    bad = np.flatnonzero((p < -atol).any(axis=1) | (np.abs(row_sum - 1.0) > atol))
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"source_probs row {i} is not a probability vector (sum {row_sum[i]:.4g}, "
            f"min {p[i].min():.4g})",
            where=f"{where}, source_probs of shape {p.shape}, row {i}",
            fix="pass softmax probabilities, not logits",
        )
    return np.clip(p, 0.0, None)


def class_means(x: np.ndarray, labels: Labels) -> np.ndarray:
    """Per-class means ``[K, D]``: ``mu_k = (1 / n_k) sum_{i: y_i = k} x_i``."""
    return (labels.one_hot().T @ x) / labels.counts[:, None]


def _one_blas_thread() -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def sym_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix, LAPACK on one thread.

    The symmetric eigensolver spends most of its time in the Householder reduction to
    tridiagonal form, memory-bound level-2 BLAS that gains little from threads; on a
    shared, oversubscribed 2-core machine a 1024 x 1024 ``eigh`` measured ~1 s on one
    thread and 7-37 s on two. Matrix products elsewhere keep the default thread count.
    """
    with _one_blas_thread():
        return np.linalg.eigh(a)


def pca_reduce(x: np.ndarray, n_components: float | int | None, where: str) -> np.ndarray:
    """Project ``x`` ``[N, D]`` on its leading principal components (scikit-learn PCA).

    ``n_components``: an int ``k`` keeps ``min(k, N, D)`` components; a float in ``(0, 1)``
    keeps the fewest components explaining that fraction of the variance; ``None`` skips
    the projection and returns the centred features. The solver is deterministic
    (covariance eigendecomposition when ``N >= D``, full SVD otherwise): no seed needed.
    """
    from sklearn.decomposition import PCA

    n, d = x.shape
    if n_components is None:
        return x - x.mean(axis=0)
    if isinstance(n_components, bool) or not isinstance(n_components, int | float):
        raise ConfigError(
            f"pca_dim must be an int or a float in (0, 1), got {n_components!r}", where=where
        )
    if isinstance(n_components, float) and not 0.0 < n_components < 1.0:
        raise ConfigError(
            f"a float pca_dim is a variance fraction in (0, 1), got {n_components}",
            where=where,
            fix="e.g. pca_dim=0.8 (80 % of the variance) or an int such as pca_dim=64",
        )
    if isinstance(n_components, int):
        if n_components < 1:
            raise ConfigError(f"pca_dim must be >= 1, got {n_components}", where=where)
        n_components = min(n_components, n, d)
    solver = "covariance_eigh" if n >= d else "full"
    with _one_blas_thread():  # the solver is an eigh / SVD: see sym_eigh
        return PCA(n_components=n_components, svd_solver=solver).fit_transform(x)
