"""What every transferkit estimator shares: parameters, ``fit`` plumbing, prediction.

Conventions (scikit-learn's): ``__init__`` only stores its arguments; they are validated
when ``fit`` runs (by the same schema as ``transferkit run``'s YAML); everything learned
ends in ``_``:

* ``model_`` — the trained :class:`~transferkit.methods.base.Method` (backbone + head);
* ``config_`` — the resolved :class:`~transferkit.experiment.config.ExperimentConfig`
  (``transferkit run`` would train the same model from it);
* ``backbone_`` — the backbone spec used (``"auto"`` resolved), ``modality_`` —
  ``"tabular"``, ``"text"`` or ``"image"``;
* ``history_`` — one dict per epoch (``train_loss``, ``val_*`` with a validation split);
* ``n_features_in_`` (tabular inputs) and ``feature_names_in_`` (pandas inputs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from transferkit.data.types import Dataset
from transferkit.experiment.config import ExperimentConfig
from transferkit.sklearn._fit import FitRequest, fit_method
from transferkit.sklearn._inputs import (
    EstimatorNotFittedError,
    check_min_samples,
    read_X,
    read_y,
)
from transferkit.sklearn._training import (
    default_params,
    experiment_config,
    extract,
    method_class,
    predict_outputs,
    resolve_backbone,
    resolve_seed,
    seeded,
    training_settings,
)


class TransferEstimatorBase(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared parameters and ``fit`` / ``predict`` plumbing (not used directly).

    Every estimator is also a transformer: ``transform`` gives the learned features and
    ``get_feature_names_out`` names them ``<estimator>0 .. <estimator>{D-1}``, so one can
    sit inside a pipeline in front of another model (``set_output`` works too).
    """

    #: method families this estimator trains (None: all without an estimator of their own)
    _families: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        backbone: str = "auto",
        method: str = "finetune",
        method_params: dict[str, Any] | None = None,
        *,
        backbone_options: dict[str, Any] | None = None,
        pretrained: bool = True,
        head: str = "linear",
        lr: float = 1e-3,
        epochs: int = 10,
        batch_size: int = 32,
        validation_fraction: float | None = None,
        train_params: dict[str, Any] | None = None,
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
        verbose: bool = False,
    ) -> None:
        self.backbone = backbone
        self.method = method
        self.method_params = method_params
        self.backbone_options = backbone_options
        self.pretrained = pretrained
        self.head = head
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.train_params = train_params
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ----------------------------------------------------------------- fit plumbing
    def _read_fit_inputs(self, X: Any, y: Any, *, numeric: bool) -> tuple[Any, str, np.ndarray]:
        """``(raw X, modality, y)``, validated; sets ``n_features_in_`` etc."""
        raw, modality = read_X(self, X, reset=True)
        y_arr = read_y(y, len(raw), numeric=numeric)
        check_min_samples(len(raw))
        return raw, modality, y_arr

    def _model_spec(self, modality: str) -> tuple[Any, Any, Any]:
        """``(backbone, backbone_options, method)`` of the model to train on ``modality``."""
        return self.backbone, self.backbone_options, self.method

    def _make_config(self, modality: str, seed: int) -> ExperimentConfig:
        backbone, options, method = self._model_spec(modality)
        cls = method_class(method, self._families)
        n_features = getattr(self, "n_features_in_", None) if modality == "tabular" else None
        spec, opts = resolve_backbone(backbone, options, modality, n_features)
        return experiment_config(
            backbone=spec,
            backbone_options=opts,
            pretrained=self.pretrained,
            head=self.head,
            method=method,
            params=default_params(cls, self.method_params, spec, bool(self.pretrained)),
            training=training_settings(self.train_params, self.lr, self.epochs, self.batch_size),
            early_stopping=self.validation_fraction is not None,
            seed=seed,
        )

    def _fit_dataset(self, ds: Dataset, seed: int | None = None, **request: Any) -> None:
        """Build and train the model on ``ds``; set the fitted attributes.

        ``seed``: the seed to use (default: drawn from ``random_state``); ``request``:
        extra :class:`~transferkit.sklearn._fit.FitRequest` fields.
        """
        seed = resolve_seed(self.random_state) if seed is None else seed
        with seeded(seed):
            cfg = self._make_config(ds.modality, seed)
            req = FitRequest(
                cfg, ds, seed, self.validation_fraction, self.device, bool(self.verbose), **request
            )
            method, history = fit_method(req)
        self.model_ = method
        self.config_ = cfg
        self.backbone_ = cfg.model.backbone
        self.modality_ = ds.modality
        self.history_ = history
        self._n_features_out = _feature_dim(method)

    # ----------------------------------------------------------------- prediction
    def _check_fitted(self) -> None:
        try:
            check_is_fitted(self, "model_")
        except NotFittedError as exc:
            raise EstimatorNotFittedError(
                str(exc), where=type(self).__name__, fix="call fit(X, y) first"
            ) from None

    def _read_predict_inputs(self, X: Any) -> Any:
        self._check_fitted()
        raw, _ = read_X(self, X, reset=False, modality=self.modality_)
        return raw

    def _outputs(self, X: Any) -> np.ndarray:
        """Model outputs on ``X``: logits ``[N, C]`` or regression values ``[N]``."""
        raw = self._read_predict_inputs(X)
        return predict_outputs(self.model_, raw, self.modality_, self.config_.train.eval_batch_size)

    def transform(self, X: Any) -> np.ndarray:
        """The features the head reads, float32 ``[n_samples, D]`` (pooled backbone output;
        a linear probe's concatenated ``layers`` when it has them)."""
        raw = self._read_predict_inputs(X)
        return extract(self.model_, raw, self.modality_, self.config_.train.eval_batch_size)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.target_tags.required = True
        tags.non_deterministic = False
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float32"]  # features are float32
        return tags


def _feature_dim(method: Any) -> int:
    """``D`` of :meth:`TransferEstimatorBase.transform` (a linear probe's ``in_features``)."""
    in_features = getattr(method, "in_features", None)
    return int(in_features) if in_features is not None else int(method.backbone.num_features)
