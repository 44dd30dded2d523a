"""Linear centred kernel alignment (CKA): how similar two representations of the same inputs are.

Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network Representations
Revisited", ICML, https://arxiv.org/abs/1905.00414.

For features ``X`` ``[N, D1]`` and ``Y`` ``[N, D2]`` of the same ``N`` examples, with columns
centred (``X_c = X - mean_rows(X)``):

.. math::

    \\mathrm{CKA}(X, Y) = \\frac{\\lVert Y_c^\\top X_c \\rVert_F^2}
                               {\\lVert X_c^\\top X_c \\rVert_F \\, \\lVert Y_c^\\top Y_c \\rVert_F}
                        = \\frac{\\langle K_c, L_c \\rangle_F}{\\lVert K_c \\rVert_F
                               \\lVert L_c \\rVert_F},
    \\quad K_c = X_c X_c^\\top, \\; L_c = Y_c Y_c^\\top

It lies in [0, 1], is 1 for ``Y = X Q s + b`` (orthogonal ``Q``, scale ``s != 0``, shift
``b``), and is invariant to orthogonal transforms and isotropic scaling of either side.
Computed in float64 with the ``D x D`` products when ``N`` is large and the ``N x N`` Gram
matrices when the dimensions are, whichever costs fewer flops.

The plain estimator is biased upwards for small ``N``: independent features give about
``sqrt(D1 * D2) / N``. :func:`unbiased_linear_cka` and :class:`MinibatchCKA` use the
unbiased HSIC estimator (Song et al. 2012) as in Nguyen, Raghu & Kornblith 2021, "Do Wide
and Deep Networks Learn the Same Things?", https://arxiv.org/abs/2010.15327, which removes
that bias and allows accumulating over minibatches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transferkit.errors import DataError

__all__ = ["MinibatchCKA", "linear_cka", "representation_drift", "unbiased_linear_cka"]


def _as_matrix(a: Any, name: str) -> np.ndarray:
    """float64 ``[N, D]`` from a numpy array / torch tensor (``[N]`` -> ``[N, 1]``,
    ``[N, C, H, W]`` -> ``[N, C*H*W]``)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch.Tensor without importing torch
        a = a.detach().cpu().double().numpy()
    x = np.asarray(a, dtype=np.float64)
    if x.ndim == 0:
        raise DataError(f"CKA input {name} is a scalar", where=f"cka({name})", fix="pass [N, D]")
    x = x.reshape(len(x), -1)
    if not np.isfinite(x).all():
        raise DataError(
            f"CKA input {name} contains NaN or infinite values",
            where=f"cka({name}) of shape {x.shape}",
            fix="check the model producing these features",
        )
    return x


def _centred_pair(X: Any, Y: Any, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_matrix(X, "X"), _as_matrix(Y, "Y")
    if len(x) != len(y) or len(x) < min_n:
        raise DataError(
            f"CKA needs the same number (>= {min_n}) of examples on both sides; got "
            f"{len(x)} and {len(y)}",
            where="cka(X, Y)",
            fix="extract both representations from the same inputs, in the same order",
        )
    xc, yc = x - x.mean(0), y - y.mean(0)
    for name, raw, c in (("X", x, xc), ("Y", y, yc)):
        if np.abs(c).max(initial=0.0) <= 1e-12 * max(1.0, np.abs(raw).max(initial=0.0)):
            raise DataError(
                f"CKA input {name} is constant across examples (no variance), so CKA is undefined",
                where=f"cka({name}) of shape {raw.shape}",
                fix="check for a dead layer or identical inputs",
            )
    return xc, yc


def linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA between ``X`` ``[N, D1]`` and ``Y`` ``[N, D2]`` (numpy or torch), in [0, 1].

    Raises:
        DataError: different ``N``, ``N < 2``, non-finite values, or a constant input.
    """
    xc, yc = _centred_pair(X, Y)
    n, d1 = xc.shape
    d2 = yc.shape[1]
    if n * (d1 * d2 + d1 * d1 + d2 * d2) <= n * n * (d1 + d2 + 3):
        cross = np.sum((yc.T @ xc) ** 2)
        norm_x = np.linalg.norm(xc.T @ xc)
        norm_y = np.linalg.norm(yc.T @ yc)
    else:
        k, l_ = xc @ xc.T, yc @ yc.T
        cross, norm_x, norm_y = np.sum(k * l_), np.linalg.norm(k), np.linalg.norm(l_)
    return float(cross / (norm_x * norm_y))


def _unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Unbiased HSIC estimator of Song et al. 2012 for Gram matrices ``[n, n]`` (n >= 4)."""
    n = len(k)
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    trace_term = np.sum(k * l_)
    sums_term = k.sum() * l_.sum() / ((n - 1) * (n - 2))
    cross_term = 2.0 / (n - 2) * (k.sum(0) @ l_.sum(0))
    return float((trace_term + sums_term - cross_term) / (n * (n - 3)))


class MinibatchCKA:
    """Linear CKA accumulated over minibatches with the unbiased HSIC estimator.

    ``CKA = mean_i HSIC_u(K_i, L_i) / sqrt(mean_i HSIC_u(K_i, K_i) * mean_i HSIC_u(L_i, L_i))``
    over batches ``i`` of at least 4 examples (Nguyen et al. 2021). Its expectation for
    independent features is about 0 at any batch size, unlike :func:`linear_cka`.
    """

    def __init__(self) -> None:
        self.sums_ = np.zeros(3)
        self.n_batches_ = 0

    def update(self, X: Any, Y: Any) -> None:
        """Add one minibatch: ``X`` ``[n, D1]``, ``Y`` ``[n, D2]`` for the same ``n >= 4``."""
        xc, yc = _centred_pair(X, Y, min_n=4)
        k, l_ = xc @ xc.T, yc @ yc.T
        self.sums_ += [_unbiased_hsic(k, l_), _unbiased_hsic(k, k), _unbiased_hsic(l_, l_)]
        self.n_batches_ += 1

    def compute(self) -> float:
        if self.n_batches_ == 0:
            raise DataError("MinibatchCKA.compute() called before any update()")
        cross, xx, yy = self.sums_
        if xx <= 0 or yy <= 0:
            raise DataError(
                "unbiased self-similarity estimate is not positive; CKA is undefined",
                where="MinibatchCKA.compute",
                fix="use larger batches",
            )
        return float(cross / np.sqrt(xx * yy))


def unbiased_linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA with the unbiased HSIC estimator on one batch (``N >= 4``; can be < 0)."""
    acc = MinibatchCKA()
    acc.update(X, Y)
    return acc.compute()


def representation_drift(
    feats_before: Sequence[Any], feats_after: Sequence[Any], names: Sequence[str]
) -> dict[str, float]:
    """Per-layer linear CKA between representations before and after fine-tuning.

    Args:
        feats_before: per layer group, features ``[N, D_i]`` of the starting model.
        feats_after: the same layers of the fine-tuned model on the same ``N`` inputs.
        names: one name per layer (e.g. ``LayerGroup.name``).

    Returns:
        ``{name: CKA}`` in layer order; 1 means the representation is unchanged (up to
        rotation and scale), lower values mean more drift.
    """
    if not len(feats_before) == len(feats_after) == len(names):
        raise DataError(
            f"representation_drift got {len(feats_before)} 'before', {len(feats_after)} "
            f"'after' feature sets and {len(names)} names",
            where="representation_drift(feats_before, feats_after, names)",
            fix="pass one feature matrix per layer on both sides and one name per layer",
        )
    if len(set(names)) != len(names):
        raise DataError("representation_drift names are not unique", where=f"names={names}")
    out: dict[str, float] = {}
    for name, before, after in zip(names, feats_before, feats_after, strict=True):
        try:
            out[name] = linear_cka(before, after)
        except DataError as err:
            raise DataError(err.what, where=f"layer {name!r}: {err.where}", fix=err.fix) from err
    return out
