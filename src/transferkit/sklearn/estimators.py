"""``TransferClassifier`` and ``TransferRegressor``: any backbone + any supervised method.

Both train a registered fine-tuning or feature-extraction method (``finetune``,
``linear_probe``, ...) on labelled target data, exactly as ``transferkit run`` would, and
behave as scikit-learn estimators: ``clone``, pipelines, ``GridSearchCV`` and
``cross_val_score`` work on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin

from transferkit.data.types import Dataset
from transferkit.sklearn._inputs import encode_classes
from transferkit.sklearn.base import TransferEstimatorBase


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``exp(z_i - max z) / sum_j exp(z_j - max z)`` in float64 ``[N, C]``."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class TransferClassifier(ClassifierMixin, TransferEstimatorBase):
    """A pretrained backbone transferred to a classification task.

    ``fit(X, y)`` reads the modality from ``X`` (2-D numbers / ``DataFrame`` -> tabular,
    strings -> text, PIL images or ``[N, H, W(, C)]`` arrays -> images), builds
    ``backbone`` + a new head + ``method`` and trains it. ``predict_proba`` is the softmax
    of the logits ``z``: ``p_c = exp(z_c) / sum_k exp(z_k)``; ``predict`` its arg-max
    mapped to ``classes_``; ``transform`` the features ``[N, D]`` the head reads.

    Args:
        backbone: a backbone spec (``"tk:mlp"``, ``"hf:<dir>"``, ``"timm:resnet18"``,
            ``"packaged:minilm-l6"``, ...) or ``"auto"``: ``tk:mlp`` for tabular inputs,
            ``packaged:minilm-l6`` for text, ``packaged:efficientnet-lite0`` for images.
            ``tk:mlp``'s ``in_features`` is read from ``X``.
        method: a registered fine-tuning or feature-extraction method (``finetune``,
            ``linear_probe``, ...; ``transferkit methods`` lists them).
        method_params: the method's parameters (its ``Params`` schema), e.g.
            ``{"freeze": "all_but_head"}``. For randomly initialised backbones (``tk:``,
            ``pretrained=False``) ``backbone_lr_mult`` defaults to 1.
        backbone_options: options of the backbone (``{"hidden": [64]}`` for ``tk:mlp``).
        pretrained: load pretrained weights (``False``: same architecture, random init).
        head: ``"linear"`` or ``"mlp"``.
        lr: base learning rate (AdamW, cosine schedule with 10% warm-up by default).
        epochs: training epochs.
        batch_size: training batch size.
        validation_fraction: hold out this fraction of the training rows (stratified) and
            early-stop on it, restoring the best epoch. ``None``: train all ``epochs`` on
            every row (closed-form methods then hold out 0.2 to choose their strength).
        train_params: any other ``train:`` setting of a run config (``schedule``,
            ``weight_decay``, ``warmup_ratio``, ``mixed_precision``, ``eval_batch_size``,
            ``early_stopping: {"patience": 5}``, ...).
        random_state: seed of weight initialisation, data order and splits (``None``:
            drawn from numpy's global RNG, as in scikit-learn). Global RNGs are restored
            after ``fit``.
        device: ``"auto"`` (a GPU when visible), ``"cpu"`` or ``"cuda"``.
        verbose: show a progress bar while training.

    Attributes:
        classes_: the sorted distinct labels of ``y``.
        model_, config_, backbone_, modality_, history_, n_features_in_,
        feature_names_in_: see :mod:`transferkit.sklearn.base`.
    """

    def fit(self, X: Any, y: Any) -> TransferClassifier:
        """Train on ``X`` (``n_samples`` inputs) and labels ``y`` (``[n_samples]``)."""
        raw, modality, y_arr = self._read_fit_inputs(X, y, numeric=False)
        self.classes_, codes = encode_classes(y_arr)
        names = [str(c) for c in self.classes_]
        self._fit_dataset(Dataset("X", modality, raw, codes, classes=names))  # type: ignore[arg-type]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[n_samples, n_classes]`` (columns follow ``classes_``)."""
        return softmax(self._outputs(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, ``[n_samples]``."""
        logits = self._outputs(X)  # raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags


class TransferRegressor(RegressorMixin, TransferEstimatorBase):
    """A pretrained backbone transferred to a (single-output) regression task.

    The targets are standardised for training, ``t = (y - mean) / scale``, and predictions
    mapped back, ``y_hat = f(x) * scale + mean`` (``y_mean_``, ``y_scale_``), so the default
    learning rate suits targets of any unit; the method minimises the MSE on ``t``.
    ``score`` is R^2. Parameters as for :class:`TransferClassifier`.
    """

    def fit(self, X: Any, y: Any) -> TransferRegressor:
        """Train on ``X`` and real-valued targets ``y`` (``[n_samples]``)."""
        raw, modality, y_arr = self._read_fit_inputs(X, y, numeric=True)
        y64 = y_arr.astype(np.float64)
        mean, scale = float(y64.mean()), float(y64.std())
        scale = scale if scale > 0 else 1.0
        t = ((y64 - mean) / scale).astype(np.float32)
        self._fit_dataset(Dataset("X", modality, raw, t, task="regression"))  # type: ignore[arg-type]
        self.y_mean_, self.y_scale_ = mean, scale
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``[n_samples]`` (float64, in the units of ``y``)."""
        out = np.asarray(self._outputs(X), dtype=np.float64).reshape(-1)
        return out * self.y_scale_ + self.y_mean_
