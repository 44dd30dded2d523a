"""Strong classical target-only baselines on raw inputs (DESIGN.md, "Honest baselines").

* text: TF-IDF of word 1-2-grams (sublinear tf) + logistic regression / ridge;
* image: standardised raw pixels (grayscale, at most 32x32) + logistic regression / ridge;
* tabular: histogram gradient boosting.

Regularisation strength is chosen on the validation split, like the linear probe, so the
baseline gets the same model-selection budget as the transfer method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transferkit.data.types import Dataset

STRENGTHS = (1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class ClassicalResult:
    """Test outputs of the classical baseline and what it was."""

    name: str
    description: str
    test_outputs: np.ndarray
    selected: dict[str, Any]


def _pixels(x: Any, side: int = 32) -> np.ndarray:
    """Images (array ``[N,H,W(,C)]`` or file paths) -> float32 ``[N, <=side*side]`` in 0..1."""
    from PIL import Image

    def one(img: Any) -> np.ndarray:
        im = Image.open(img) if isinstance(img, str | bytes) or hasattr(img, "__fspath__") else None
        if im is None:
            arr = np.asarray(img)
            if arr.dtype != np.uint8:
                arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
            im = Image.fromarray(arr.squeeze())
        im = im.convert("L")
        if max(im.size) > side:
            im = im.resize((side, side), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32).reshape(-1) / 255.0

    return np.stack([one(img) for img in x])


def _score(task: str, y: np.ndarray, pred: np.ndarray) -> float:
    return float(accuracy_score(y, pred) if task == "classification" else r2_score(y, pred))


def _outputs(model: Any, x: Any, task: str) -> np.ndarray:
    if task == "classification" and hasattr(model, "predict_proba"):
        return model.predict_proba(x).astype(np.float32)
    return model.predict(x).astype(np.float32)


def _linear(task: str, strength: float) -> Any:
    if task == "classification":
        return LogisticRegression(C=strength, max_iter=3000)
    return Ridge(alpha=1.0 / strength)


def _select(build: Any, xs: tuple[Any, Any, Any], train: Dataset, val: Dataset) -> tuple:
    best = None
    for s in STRENGTHS:
        model = build(s).fit(xs[0], train.y)
        score = _score(train.task, val.y, model.predict(xs[1]))
        if best is None or score > best[0]:
            best = (score, s, model)
    return best


def classical_baseline(train: Dataset, val: Dataset, test: Dataset) -> ClassicalResult:
    """Fit the modality's classical baseline on ``train`` (tuned on ``val``), predict ``test``.

    Classification outputs are class probabilities ``[N, C]`` (columns = all classes, so a
    class missing from a tiny train split still has a column); regression outputs ``[N]``.
    """
    task = train.task
    if train.modality == "tabular":
        cls = (
            HistGradientBoostingClassifier
            if task == "classification"
            else (HistGradientBoostingRegressor)
        )
        model = cls(random_state=0).fit(np.asarray(train.x), train.y)
        out = _outputs(model, np.asarray(test.x), task)
        name, desc, sel = "gradient_boosting", "histogram gradient boosting on raw features", {}
    else:
        if train.modality == "text":
            vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
            xs = (vec.fit_transform(train.x), vec.transform(val.x), vec.transform(test.x))
            name, desc = "tfidf_logreg", "TF-IDF (word 1-2-grams) + logistic regression"
            build = lambda s: _linear(task, s)  # noqa: E731
        else:
            xs = (_pixels(train.x), _pixels(val.x), _pixels(test.x))
            name, desc = "pixel_logreg", "standardised raw pixels + logistic regression"
            build = lambda s: make_pipeline(StandardScaler(), _linear(task, s))  # noqa: E731
        if task == "regression":
            name, desc = (
                name.replace("logreg", "ridge"),
                desc.replace("logistic regression", "ridge regression"),
            )
        _, strength, model = _select(build, xs, train, val)
        out = _outputs(model, xs[2], task)
        sel = {"strength": strength}
    if task == "classification" and out.ndim == 2:
        out = _full_proba(out, model, train.num_classes)
    return ClassicalResult(name, desc, out, sel)


def _full_proba(proba: np.ndarray, model: Any, num_classes: int) -> np.ndarray:
    """Expand ``predict_proba`` columns (classes seen in training) to all classes."""
    seen = getattr(model, "classes_", None)
    if seen is None and hasattr(model, "steps"):
        seen = model.steps[-1][1].classes_
    full = np.zeros((proba.shape[0], num_classes), dtype=np.float32)
    full[:, np.asarray(seen, dtype=np.int64)] = proba
    return full
