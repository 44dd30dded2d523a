"""Heads fitted on frozen features ``F`` ``[N, D]``, each ending as a torch module.

Every head standardises the features with training statistics, ``z = (F - mu) / sigma``,
chooses one hyper-parameter on the validation split only (accuracy for classification,
R^2 for regression; ties keep the earlier grid value) and returns a torch module mapping
raw features ``[B, D]`` to outputs ``[B, K]`` (logits, or ``K = 1`` for regression):

* ``logreg``: L2 logistic regression, ``min_w sum_i CE(w z_i, y_i) + ||w||^2 / (2C)``, ``C``
  in ``strengths``. On a regression task it is ridge regression (the historical default).
* ``ridge``: ridge classifier (one-vs-rest least squares on +-1 targets) or ridge regression,
  ``min_w ||Z w - y||^2 + alpha ||w||^2``, ``alpha = 1 / strength``.
* ``linear_svm``: ``LinearSVC`` (squared hinge, one-vs-rest) or ``LinearSVR`` (epsilon-
  insensitive), ``C`` in ``strengths``.
  The three linear heads fold into one ``nn.Linear``: ``W' = W / sigma``, ``b' = b - W' mu``
  (a binary model's single decision ``s`` becomes logits ``[0, s]``).
* ``mlp``: ``Linear(D, H) -> GELU -> Linear(H, K)`` trained full-batch with AdamW, early
  stopped on the validation loss; the weight decay is chosen on val.
* ``knn``: k nearest neighbours (cosine or euclidean distance on ``z``), ``k`` in ``ks``;
  the training set lives in buffers. Both non-linear heads live in
  :mod:`transferkit.methods.feature_heads_nonlinear` (re-exported here).
* ``prototype``: nearest class mean (few-shot prototypes, Snell et al. 2017) on the raw
  features, ``-||f - p_k||^2 / tau`` or ``cos(f - mu, p_k - mu) / tau``; the distance and
  ``tau`` are chosen on val (accuracy, then NLL). ``prototype_transductive`` first refines
  the prototypes with unlabelled features (bias-corrected soft k-means, Ren et al. 2018).
  Classification only; see :mod:`transferkit.methods.prototypes`.

References: Kornblith et al. 2019, https://arxiv.org/abs/1805.08974 (linear probes);
Wu et al. 2018, https://arxiv.org/abs/1805.01978 (kNN on normalised features).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveFloat
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import accuracy_score, r2_score
from sklearn.svm import LinearSVC, LinearSVR
from torch import nn

from transferkit.errors import DataError
from transferkit.methods.base import MethodParams
from transferkit.methods.feature_heads_nonlinear import KNNHead, MLPHead, fit_knn, fit_mlp
from transferkit.methods.prototypes import (
    PROTOTYPE_HEADS,
    PrototypeHead,
    check_head_task,
    fit_prototype_head,
)

__all__ = [
    "LINEAR_HEADS",
    "FeatureHeadParams",
    "FittedHead",
    "HeadKind",
    "HeadProblem",
    "KNNHead",
    "MLPHead",
    "build_head",
    "fit_head",
    "fold_linear",
    "val_metric",
]

HeadKind = Literal[
    "logreg", "ridge", "linear_svm", "mlp", "knn", "prototype", "prototype_transductive"
]
Task = Literal["classification", "regression"]
LINEAR_HEADS: tuple[str, ...] = ("logreg", "ridge", "linear_svm")
_EPS = 1e-6


def _grid(default: list[Any], description: str) -> Any:
    return Field(default_factory=lambda: list(default), min_length=1, description=description)


class FeatureHeadParams(MethodParams):
    """Which head to fit on frozen features, and the grids tuned on the validation split."""

    head: HeadKind = Field(
        "logreg",
        description="logreg | ridge | linear_svm | mlp | knn | prototype | prototype_transductive",
    )
    strengths: list[float] = _grid(
        [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0],
        "grid of C (logreg, linear_svm) or 1/alpha (ridge), chosen on val",
    )
    max_iter: int = Field(2000, gt=0, description="solver iterations")
    ks: list[int] = _grid([1, 3, 5, 9, 15, 25], "knn: grid of k, chosen on val")
    knn_metric: Literal["cosine", "euclidean"] = Field("cosine", description="knn distance")
    mlp_hidden: int = Field(256, gt=0, description="mlp: hidden width")
    mlp_lr: float = Field(3e-3, gt=0, description="mlp: AdamW learning rate")
    mlp_weight_decays: list[float] = _grid([1e-2], "mlp: weight decay grid, chosen on val")
    mlp_max_epochs: int = Field(500, gt=0, description="mlp: full-batch steps at most")
    mlp_patience: int = Field(30, gt=0, description="mlp: steps without a better val loss")
    seed: int | None = Field(None, description="mlp init seed (None: drawn from torch's RNG)")
    prototype_distances: list[Literal["cosine", "euclidean"]] = _grid(
        ["cosine", "euclidean"], "prototype heads: distances tried, chosen on val"
    )
    prototype_temperatures: list[PositiveFloat] = _grid(
        [0.03, 0.1, 0.3, 1.0],
        "prototype heads: temperature grid, chosen on val (euclidean: in units of the mean "
        "squared norm of the centred features)",
    )
    prototype_steps: int = Field(10, gt=0, description="prototype_transductive: refinement steps")


@dataclass
class FittedHead:
    """``module``: raw features ``[B, D]`` -> ``[B, K]``; ``param`` (``C``, ``1/alpha``, ``k``,
    ``weight_decay``, ``temperature``) = ``selected``; val metric per grid value (prototype
    heads: per ``"distance, tau=..."``) and of the chosen one; ``info``: head-specific facts
    (prototype heads: distance, temperatures, which unlabelled rows were used)."""

    module: nn.Module
    param: str
    selected: float
    val_scores: dict[Any, float] = field(default_factory=dict)
    val_score: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)


def val_metric(task: str, y: np.ndarray, outputs: np.ndarray) -> float:
    """Accuracy (labels, or scores ``[N, K]`` argmaxed) or R^2 (values ``[N]``/``[N, 1]``)."""
    outputs = np.asarray(outputs)
    if task == "classification":
        pred = outputs.argmax(-1) if outputs.ndim == 2 else outputs
        return float(accuracy_score(y, pred))
    return float(r2_score(y, outputs.reshape(-1)))


def build_head(
    kind: HeadKind, in_features: int, num_outputs: int, task: Task, params: FeatureHeadParams
) -> nn.Module:
    """An unfitted head of the right structure (to load a fitted head's ``state_dict``)."""
    if kind in LINEAR_HEADS:
        return nn.Linear(in_features, num_outputs)
    if kind == "mlp":
        return MLPHead(in_features, params.mlp_hidden, num_outputs)
    if kind in PROTOTYPE_HEADS:
        check_head_task(kind, task)
        return PrototypeHead(in_features, num_outputs, params.prototype_distances[0])
    return KNNHead(in_features, num_outputs, task, params.knn_metric)


def fit_head(
    f_train: np.ndarray,
    y_train: np.ndarray,
    f_val: np.ndarray,
    y_val: np.ndarray,
    *,
    task: Task,
    num_outputs: int,
    params: FeatureHeadParams,
    unlabelled: np.ndarray | None = None,
    unlabelled_from: str = "unlabelled features passed to fit_head",
) -> FittedHead:
    """Fit ``params.head`` on features ``[N, D]``; tune its hyper-parameter on val only.

    ``unlabelled`` ``[M, D]`` (used by ``prototype_transductive`` only; ``unlabelled_from``
    names those rows in ``info``): without it the val inputs serve, their labels unused.

    Raises:
        ConfigError: a prototype head on a regression task.
        DataError: class labels outside ``0 .. num_outputs - 1`` or a single training class.
    """
    check_head_task(params.head, task)
    f_train, f_val = np.asarray(f_train, np.float32), np.asarray(f_val, np.float32)
    _check_labels(y_train, y_val, task, num_outputs)
    mu = f_train.astype(np.float64).mean(0)
    sigma = f_train.astype(np.float64).std(0) + _EPS
    pb = HeadProblem(
        f_train, np.asarray(y_train), f_val, np.asarray(y_val), mu, sigma, task, num_outputs, params
    )
    if params.head in LINEAR_HEADS:
        return _fit_linear(pb)
    if params.head in PROTOTYPE_HEADS:
        return _fit_prototype(pb, unlabelled, unlabelled_from)
    return fit_mlp(pb) if params.head == "mlp" else fit_knn(pb)


def _fit_prototype(pb: HeadProblem, unlabelled: np.ndarray | None, source: str) -> FittedHead:
    """Prototype heads on the raw features (they centre them themselves)."""
    fit = fit_prototype_head(
        pb.f_tr, pb.y_tr, pb.f_va, pb.y_va, pb.num_outputs, pb.params, unlabelled, source
    )
    return FittedHead(
        fit.head, "temperature", fit.temperature, fit.val_scores, fit.val_score, fit.info
    )


@dataclass
class HeadProblem:
    """One head-fitting problem: raw features, labels, training statistics, settings."""

    f_tr: np.ndarray
    y_tr: np.ndarray
    f_va: np.ndarray
    y_va: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    task: Task
    num_outputs: int
    params: FeatureHeadParams

    def z(self, f: np.ndarray) -> np.ndarray:
        """Standardised features ``(f - mu) / sigma`` (float32)."""
        return ((f - self.mu) / self.sigma).astype(np.float32)


def _check_labels(y_train: np.ndarray, y_val: np.ndarray, task: str, num_outputs: int) -> None:
    if task != "classification":
        return
    for name, y in (("train", y_train), ("val", y_val)):
        y = np.asarray(y)
        if y.size and (y.min() < 0 or y.max() >= num_outputs):
            raise DataError(
                f"{name} labels must lie in 0..{num_outputs - 1}",
                where=f"{name} split labels (found {y.min()}..{y.max()})",
                fix="encode class labels as integers 0..num_classes-1",
            )
    if len(np.unique(y_train)) < 2:
        raise DataError(
            "the training split holds a single class",
            where="train split labels",
            fix="provide examples of at least 2 classes",
        )


def _sk_linear(kind: str, task: str, strength: float, max_iter: int) -> Any:
    if task == "classification":
        if kind == "logreg":
            return LogisticRegression(C=strength, max_iter=max_iter)
        if kind == "ridge":
            return RidgeClassifier(alpha=1.0 / strength)
        return LinearSVC(C=strength, max_iter=max_iter)
    if kind == "linear_svm":
        return LinearSVR(C=strength, max_iter=max_iter)
    return Ridge(alpha=1.0 / strength)


def _path(pb: HeadProblem, z_tr: np.ndarray) -> Iterator[tuple[float, Any]]:
    """``(strength, fitted model)``; logistic regression warm-starts along ascending C."""
    kind, task, p = pb.params.head, pb.task, pb.params
    if kind == "logreg" and task == "classification":
        model = LogisticRegression(max_iter=p.max_iter, warm_start=True)
        for s in sorted(p.strengths):
            yield s, model.set_params(C=s).fit(z_tr, pb.y_tr)
    else:
        for s in p.strengths:
            yield s, _sk_linear(kind, task, s, p.max_iter).fit(z_tr, pb.y_tr)


def _fit_linear(pb: HeadProblem) -> FittedHead:
    """Score the strength grid on val, fold the winner (refitted cold if warm-started)."""
    kind, task, params = pb.params.head, pb.task, pb.params
    z_tr, z_va = pb.z(pb.f_tr), pb.z(pb.f_va)
    warm = kind == "logreg" and task == "classification"
    scores: dict[float, float] = {}
    fitted: dict[float, Any] = {}
    with warnings.catch_warnings():  # a grid end may not converge; val decides
        warnings.simplefilter("ignore", ConvergenceWarning)
        for s, model in _path(pb, z_tr):
            scores[s] = val_metric(task, pb.y_va, model.predict(z_va))
            fitted[s] = None if warm else model
        best = max(params.strengths, key=lambda s: scores[s])  # ties: earlier grid value
        final = fitted[best] or _sk_linear(kind, task, best, params.max_iter).fit(z_tr, pb.y_tr)
    ridge = kind == "ridge" or (kind == "logreg" and task == "regression")
    linear = fold_linear(final, pb.mu, pb.sigma, pb.num_outputs, task)
    return FittedHead(linear, "1/alpha" if ridge else "C", best, scores, scores[best])


def fold_linear(
    model: Any, mu: np.ndarray, sigma: np.ndarray, num_outputs: int, task: str
) -> nn.Linear:
    """Fold a scikit-learn linear model on ``z = (f - mu) / sigma`` into ``nn.Linear`` on f.

    Classification rows follow ``model.classes_``; a class absent from training gets
    weight 0 and bias -1e4 (never predicted).
    """
    coef = np.atleast_2d(model.coef_).astype(np.float64)
    icpt = np.broadcast_to(np.atleast_1d(model.intercept_).astype(np.float64), (coef.shape[0],))
    if task == "classification":
        classes = np.asarray(model.classes_, dtype=np.int64)
        w_z = np.zeros((num_outputs, coef.shape[1]))
        b_z = np.full(num_outputs, -1e4)
        if coef.shape[0] == 1:  # binary: p(c1) = sigmoid(s) = softmax([0, s])[1]
            b_z[classes[0]] = 0.0
            w_z[classes[1]], b_z[classes[1]] = coef[0], icpt[0]
        else:
            w_z[classes], b_z[classes] = coef, icpt
        coef, icpt = w_z, b_z
    w = coef / sigma
    b = icpt - w @ mu
    linear = nn.Linear(coef.shape[1], coef.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    return linear
