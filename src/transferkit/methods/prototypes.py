"""Few-shot prototype heads on frozen features: nearest class mean, plain or transductive.

**Prototypes** (Snell et al. 2017, "Prototypical Networks for Few-shot Learning",
https://arxiv.org/abs/1703.05175). The prototype of class ``k`` is the mean of its support
features, ``p_k = (1 / n_k) sum_{i: y_i = k} f_i`` (``f`` ``[N, D]``, ``p`` ``[K, D]``), and
a feature ``f`` gets the logits ``[K]``

* euclidean: ``l_k = -||f - p_k||^2 / tau``;
* cosine:    ``l_k = cos(f - mu, p_k - mu) / tau`` (features centred by the mean ``mu`` first,
  as in SimpleShot, Wang et al. 2019, https://arxiv.org/abs/1911.04623; centring leaves
  Euclidean distances unchanged).

``tau`` is the stored (effective) temperature. It only rescales the logits, so the nearest
prototype and the accuracy do not depend on it; it sets the confidence (and the softness of
the transductive assignments). The tuning grid is relative: cosine uses ``tau`` as given,
euclidean uses ``tau * s`` with ``s = mean_i ||f_i - mu||^2`` (the feature spread), so one
grid fits features of any scale.

**Transductive refinement** (soft k-means, Ren et al. 2018, "Meta-Learning for
Semi-Supervised Few-Shot Classification", https://arxiv.org/abs/1803.00676). With unlabelled
features ``u`` ``[M, D]`` and soft assignments ``w_ik = softmax_k(l(u_i))``, Ren et al.
update ``p_k <- (sum_{y_i=k} f_i + sum_i w_ik u_i) / (n_k + sum_i w_ik)``. Soft assignment
alone drags a prototype towards overlapping classes even when nothing has shifted, so the
update here first removes that drag, measured on the support under the same assignments
(``v_jk = softmax_k(l(f_j))``)::

    m_k = class mean of the support,      b_k = sum_j v_jk f_j / sum_j v_jk - m_k
    p_k <- (sum_{y_i=k} f_i + sum_i w_ik (u_i - b_k)) / (n_k + sum_i w_ik)

repeated ``steps`` times from ``p = m``. When the unlabelled features are the support
features (in any order), ``sum_i w_ik u_i = W_k (m_k + b_k)`` and every step returns
``p_k = m_k`` exactly (up to float error): prototypes move only by what the unlabelled data
adds. The transductive head centres (``mu``) and scales (``s``) with the support and the
unlabelled features together. Classes absent from the support get the logit
``finfo.min`` (never predicted) and are not refined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.errors import ConfigError, DataError

Distance = Literal["cosine", "euclidean"]
PROTOTYPE_HEADS: tuple[str, ...] = ("prototype", "prototype_transductive")
DISTANCES: tuple[str, ...] = ("euclidean", "cosine")  # index = the stored distance code
_TINY = 1e-12


def prototype_logits(
    f: torch.Tensor,
    prototypes: torch.Tensor,
    mu: torch.Tensor,
    cosine: bool,
    temperature: torch.Tensor | float,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``[B, K]`` of features ``f`` ``[B, D]`` against ``prototypes`` ``[K, D]``.

    ``cos(f - mu, p - mu) / tau`` or ``-||f - p||^2 / tau`` (computed on centred vectors,
    ``|a|^2 - 2 a.b + |b|^2`` clamped at 0); classes with ``present`` False get ``finfo.min``.
    """
    a, b = f - mu, prototypes - mu
    if cosine:
        logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    else:
        sq = (a * a).sum(-1, keepdim=True) - 2 * a @ b.T + (b * b).sum(-1)
        logits = -sq.clamp_min(0) / temperature
    if present is not None:
        logits = logits.masked_fill(~present, torch.finfo(logits.dtype).min)
    return logits


class PrototypeHead(nn.Module):
    """Nearest-prototype classifier: raw features ``[B, D]`` -> logits ``[B, K]``.

    Buffers (saved with ``state_dict``): ``prototypes`` ``[K, D]``, ``mu`` ``[D]``,
    ``temperature`` (effective ``tau``), ``distance_code`` (index into ``DISTANCES``) and
    ``present`` ``[K]`` (classes seen in the support). A freshly built head loads a fitted
    one's state, distance included.
    """

    def __init__(self, in_features: int, num_outputs: int, distance: Distance = "cosine") -> None:
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(num_outputs, in_features))
        self.register_buffer("mu", torch.zeros(in_features))
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("distance_code", torch.tensor(DISTANCES.index(distance)))
        self.register_buffer("present", torch.ones(num_outputs, dtype=torch.bool))

    @property
    def distance(self) -> str:
        return DISTANCES[int(self.distance_code)]

    def set_state(
        self,
        prototypes: np.ndarray | torch.Tensor,
        mu: np.ndarray | torch.Tensor,
        temperature: float,
        distance: Distance,
        present: np.ndarray | torch.Tensor,
    ) -> PrototypeHead:
        """Fill the buffers (float32) from fitted values; returns ``self``."""
        self.prototypes = torch.as_tensor(prototypes, dtype=torch.float32).clone()
        self.mu = torch.as_tensor(mu, dtype=torch.float32).clone()
        self.temperature = torch.tensor(float(temperature), dtype=torch.float32)
        self.distance_code = torch.tensor(DISTANCES.index(distance))
        self.present = torch.as_tensor(present, dtype=torch.bool).clone()
        return self

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = f.to(self.prototypes.dtype)
        cosine = self.distance == "cosine"
        return prototype_logits(f, self.prototypes, self.mu, cosine, self.temperature, self.present)

    def extra_repr(self) -> str:
        k, d = self.prototypes.shape
        return f"classes={k}, in_features={d}, distance={self.distance}"


def class_means(f: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(means [K, D], counts [K])`` in float64; an absent class has mean 0 and count 0."""
    f64 = np.asarray(f, np.float64)
    onehot = np.eye(num_classes)[np.asarray(y, np.int64)]  # [N, K]
    counts = onehot.sum(0)
    means = (onehot.T @ f64) / np.maximum(counts, 1)[:, None]
    return means, counts


def feature_spread(f: np.ndarray, mu: np.ndarray) -> float:
    """``s = mean_i ||f_i - mu||^2`` (at least 1e-12): the euclidean temperature's unit."""
    c = np.asarray(f, np.float64) - mu
    return max(float((c * c).sum(1).mean()), _TINY)


def refine_prototypes(
    f_support: np.ndarray,
    y_support: np.ndarray,
    unlabelled: np.ndarray,
    *,
    num_classes: int,
    mu: np.ndarray,
    distance: Distance,
    temperature: float,
    steps: int,
) -> np.ndarray:
    """Bias-corrected soft k-means from the class means (module docstring); ``[K, D]`` f64."""
    t = torch.float64
    s, u = torch.as_tensor(f_support, dtype=t), torch.as_tensor(unlabelled, dtype=t)
    mu_t = torch.as_tensor(mu, dtype=t)
    onehot = F.one_hot(torch.as_tensor(y_support, dtype=torch.long), num_classes).to(t)
    sums, counts = onehot.T @ s, onehot.sum(0)  # [K, D], [K]
    present = counts > 0
    means = sums / counts.clamp_min(1)[:, None]
    cosine = distance == "cosine"
    p = means.clone()
    for _ in range(steps):
        w_u = prototype_logits(u, p, mu_t, cosine, temperature, present).softmax(-1)  # [M, K]
        w_s = prototype_logits(s, p, mu_t, cosine, temperature, present).softmax(-1)  # [N, K]
        mass_u, mass_s = w_u.sum(0), w_s.sum(0)
        drag = (w_s.T @ s) / mass_s.clamp_min(_TINY)[:, None] - means
        drag = torch.where(mass_s[:, None] > _TINY, drag, torch.zeros_like(drag))
        new = (sums + w_u.T @ u - mass_u[:, None] * drag) / (counts + mass_u)[:, None]
        p = torch.where(present[:, None], new, p)
    return p.numpy()


@dataclass
class PrototypeFit:
    """A fitted head, the chosen distance and relative temperature, and val results."""

    head: PrototypeHead
    distance: str
    temperature: float
    val_scores: dict[str, float] = field(default_factory=dict)
    val_score: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)


def _check_features(f: np.ndarray, name: str, dim: int | None) -> np.ndarray:
    f = np.asarray(f, np.float64)
    if f.ndim != 2 or (dim is not None and f.shape[1] != dim):
        raise DataError(
            f"{name} features have shape {f.shape}, expected [N, {dim or 'D'}]",
            where=f"prototype head, {name} features",
            fix="pass features extracted by the same backbone (and layers) as the support",
        )
    bad = np.argwhere(~np.isfinite(f))
    if len(bad):
        raise DataError(
            f"{name} features hold {len(bad)} non-finite values (NaN or inf)",
            where=f"prototype head, {name} features, row {bad[0][0]}, column {bad[0][1]}",
            fix="drop or repair those rows before fitting",
        )
    return f


def _val_scores(head: PrototypeHead, f_va: np.ndarray, y_va: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean negative log-likelihood) of ``head`` on the validation split."""
    if len(y_va) == 0:
        return float("nan"), float("nan")
    with torch.no_grad():
        logits = head(torch.as_tensor(f_va, dtype=torch.float32)).double()
    y = torch.as_tensor(y_va, dtype=torch.long)
    acc = float((logits.argmax(-1) == y).double().mean())
    return acc, float(F.cross_entropy(logits, y))


def _better(a: tuple[float, float], b: tuple[float, float] | None) -> bool:
    """Higher accuracy, then lower NLL; NaN counts as worst; ties keep the earlier one."""
    if b is None:
        return True
    acc_a, acc_b = (-np.inf if np.isnan(x) else x for x in (a[0], b[0]))
    if acc_a != acc_b:
        return acc_a > acc_b
    nll_a, nll_b = (np.inf if np.isnan(x) else x for x in (a[1], b[1]))
    return nll_a < nll_b


def fit_prototypes(
    f_train: np.ndarray,
    y_train: np.ndarray,
    f_val: np.ndarray,
    y_val: np.ndarray,
    *,
    num_classes: int,
    distances: Sequence[Distance],
    temperatures: Sequence[float],
    unlabelled: np.ndarray | None = None,
    unlabelled_from: str = "unlabelled features",
    steps: int = 10,
) -> PrototypeFit:
    """Fit a prototype head on support ``[N, D]``; choose distance and ``tau`` on val.

    Every ``(distance, tau)`` pair of the grids is scored by validation accuracy (ties:
    lower validation NLL, then the earlier pair). With ``unlabelled`` ``[M, D]`` the
    prototypes are refined transductively for each pair (``steps`` iterations) before
    scoring; ``info`` records which rows were used (``unlabelled_from``) and how far the
    prototypes moved (``||p_k - m_k|| / sqrt(s)``, mean over classes).

    Raises:
        DataError: malformed or non-finite features, or labels that do not match the rows.
    """
    f_tr = _check_features(f_train, "train", None)
    f_va = _check_features(f_val, "val", f_tr.shape[1])
    y_tr = _check_labels(f_tr, y_train, "train", num_classes)
    y_va = _check_labels(f_va, y_val, "val", num_classes)
    u = None if unlabelled is None else _check_features(unlabelled, "unlabelled", f_tr.shape[1])
    support = _Support(f_tr, y_tr, num_classes, u)
    scores: dict[str, float] = {}
    best: tuple[float, float, PrototypeHead, str, float] | None = None
    for distance in distances:
        for tau in temperatures:
            head = support.head(distance, tau, steps)
            acc, nll = _val_scores(head, f_va, y_va)
            scores[f"{distance}, tau={tau:g}"] = acc
            if _better((acc, nll), None if best is None else best[:2]):
                best = (acc, nll, head, distance, tau)
    assert best is not None
    acc, nll, head, distance, tau = best
    info: dict[str, Any] = {
        "distance": distance,
        "temperature": tau,
        "temperature_effective": float(head.temperature),
        "val_nll": nll,
        "centre": "support mean" if u is None else "mean of support and unlabelled features",
        "support_per_class": [int(c) for c in support.counts],
        "unlabelled": None,
    }
    if u is not None:
        info["unlabelled"] = {
            "from": unlabelled_from,
            "rows": len(u),
            "steps": steps,
            "prototype_shift": support.shift(head),
        }
    return PrototypeFit(head, distance, tau, scores, acc, info)


@dataclass
class _Support:
    """Support features and labels, optional unlabelled features, and their statistics."""

    f: np.ndarray
    y: np.ndarray
    num_classes: int
    unlabelled: np.ndarray | None

    def __post_init__(self) -> None:
        self.means, self.counts = class_means(self.f, self.y, self.num_classes)
        ref = self.f if self.unlabelled is None else np.concatenate([self.f, self.unlabelled])
        self.mu = ref.mean(0)
        self.spread = feature_spread(ref, self.mu)

    def head(self, distance: Distance, tau: float, steps: int) -> PrototypeHead:
        """The head for one grid point: plain class means, or refined with the unlabelled."""
        eff = tau if distance == "cosine" else tau * self.spread
        protos = self.means
        if self.unlabelled is not None:
            protos = refine_prototypes(
                self.f,
                self.y,
                self.unlabelled,
                num_classes=self.num_classes,
                mu=self.mu,
                distance=distance,
                temperature=eff,
                steps=steps,
            )
        head = PrototypeHead(self.f.shape[1], self.num_classes, distance)
        return head.set_state(protos, self.mu, eff, distance, self.counts > 0)

    def shift(self, head: PrototypeHead) -> float:
        """Mean over present classes of ``||p_k - m_k|| / sqrt(s)`` (float32 prototypes)."""
        moved = np.linalg.norm(head.prototypes.double().numpy() - self.means, axis=1)
        return float(moved[self.counts > 0].mean() / np.sqrt(self.spread))


def _check_labels(f: np.ndarray, y: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (len(f),):
        raise DataError(
            f"{name} has {len(f)} feature rows but labels of shape {y.shape}",
            where=f"prototype head, {name} split",
            fix="pass one integer label per feature row",
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{name} labels must lie in 0..{num_classes - 1}",
            where=f"prototype head, {name} labels (found {y.min()}..{y.max()})",
            fix="encode class labels as integers 0..num_classes-1",
        )
    return y.astype(np.int64)


def check_head_task(kind: str, task: str) -> None:
    """Raise ConfigError for a prototype (classification-only) head on another task."""
    if kind in PROTOTYPE_HEADS and task != "classification":
        raise ConfigError(
            f"head {kind!r} is a nearest-class-mean classifier but the task is {task}",
            where="method.params.head",
            fix="use head: logreg, ridge, linear_svm, mlp or knn for a regression target",
        )


def fit_prototype_head(
    f_train: np.ndarray,
    y_train: np.ndarray,
    f_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    params: Any,
    unlabelled: np.ndarray | None = None,
    unlabelled_from: str = "unlabelled features",
) -> PrototypeFit:
    """:func:`fit_prototypes` configured by ``params`` (a ``FeatureHeadParams``).

    ``head: prototype`` ignores ``unlabelled``; ``prototype_transductive`` without it uses
    the val inputs (labels unused), and says so in ``info``.
    """
    if params.head != "prototype_transductive":
        unlabelled = None
    elif unlabelled is None:
        unlabelled, unlabelled_from = f_val, "val inputs (labels unused)"
    return fit_prototypes(
        f_train,
        y_train,
        f_val,
        y_val,
        num_classes=num_classes,
        distances=params.prototype_distances,
        temperatures=params.prototype_temperatures,
        unlabelled=unlabelled,
        unlabelled_from=unlabelled_from,
        steps=params.prototype_steps,
    )
