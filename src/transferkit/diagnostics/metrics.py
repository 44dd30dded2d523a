"""Target metrics computed from model outputs.

Classification outputs are scores ``[N, C]`` (logits or probabilities) or hard labels
``[N]``; regression outputs are ``[N]``. ``primary_metric`` names the metric the verdict
and early stopping use by default: accuracy for classification, R^2 for regression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
)


def primary_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "r2"


def to_labels(outputs: np.ndarray) -> np.ndarray:
    """Hard labels ``[N]`` from scores ``[N, C]`` (argmax) or labels ``[N]``."""
    outputs = np.asarray(outputs)
    return outputs.argmax(-1) if outputs.ndim == 2 else outputs.astype(np.int64)


def metric_fn(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``f(y_true, y_pred) -> float`` for a metric name (labels or regression values)."""
    fns: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "accuracy": lambda t, p: float(accuracy_score(t, p)),
        "balanced_accuracy": lambda t, p: float(balanced_accuracy_score(t, p)),
        "macro_f1": lambda t, p: float(f1_score(t, p, average="macro", zero_division=0)),
        "r2": lambda t, p: float(r2_score(t, p)),
        "mae": lambda t, p: float(mean_absolute_error(t, p)),
        "rmse": lambda t, p: float(np.sqrt(mean_squared_error(t, p))),
    }
    return fns[name]


def higher_is_better(name: str) -> bool:
    return name not in {"mae", "rmse", "loss"}


def compute_metrics(outputs: np.ndarray, y: np.ndarray, task: str) -> dict[str, float]:
    """All scalar metrics of ``outputs`` against ``y``."""
    names: Sequence[str]
    if task == "classification":
        pred = to_labels(outputs)
        names = ("accuracy", "balanced_accuracy", "macro_f1")
    else:
        pred = np.asarray(outputs, dtype=np.float64).reshape(-1)
        names = ("r2", "mae", "rmse")
    return {n: metric_fn(n)(y, pred) for n in names}


def classification_details(
    outputs: np.ndarray, y: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Confusion matrix (rows = true class) and per-class precision/recall/F1/support."""
    pred = to_labels(outputs)
    labels = list(range(len(classes)))
    cm = confusion_matrix(y, pred, labels=labels)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    per_class = {
        str(c): {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, c in enumerate(classes)
    }
    return {
        "classes": [str(c) for c in classes],
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
    }
