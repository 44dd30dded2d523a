"""One ``fit``: split off validation, build the method, train it (or fit it in closed form).

Three training set-ups, picked by what the request carries:

* supervised (``TransferClassifier`` / ``TransferRegressor``): batches ``{"x", "y"}``;
* domain adaptation (``target`` given): labelled source rows paired with unlabelled target
  rows, batches ``{"x", "y", "x_t"}`` (:class:`~transferkit.data.loaders.PairedDataset`);
* distillation (``teacher_prepare`` given): batches ``{"x", "x_teacher", "y"}`` so that a
  live frozen teacher reads inputs prepared its own way
  (:class:`~transferkit.distill.data.DistillCollate`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.data.loaders import ExampleDataset, PairedDataset, Prepare, collate_with
from transferkit.data.types import Dataset
from transferkit.engine import Trainer, TrainResult
from transferkit.errors import DataError
from transferkit.experiment.config import ExperimentConfig
from transferkit.methods import METHODS, Method
from transferkit.sklearn._inputs import EstimatorInputError
from transferkit.sklearn._training import (
    CLOSED_FORM_VAL_FRACTION,
    build,
    split,
    torch_device,
    trainer_config,
    val_metrics_fn,
)


@dataclass
class FitRequest:
    """Everything one fit needs (``train`` is labelled; ``target`` unlabelled, DA only)."""

    cfg: ExperimentConfig
    train: Dataset
    seed: int
    validation_fraction: float | None
    device: str
    verbose: bool
    target: Dataset | None = None
    extra: dict[str, Any] | None = None
    teacher_prepare: Prepare | None = None


def fit_method(req: FitRequest) -> tuple[Method, list[dict[str, Any]]]:
    """Train (or fit in closed form) the method ``req.cfg`` describes on ``req.train``.

    Returns the method (in eval mode, on the requested device) and the trainer's
    per-epoch history (empty for closed-form methods).
    """
    device = torch_device(req.device)
    frac = req.validation_fraction
    if frac is None and METHODS.get(req.cfg.method.name).closed_form:
        frac = CLOSED_FORM_VAL_FRACTION
    train, val = split(req.train, frac, req.seed)
    method = build(req.cfg, train, req.extra)
    history: list[dict[str, Any]] = []
    if method.closed_form:
        assert val is not None
        _fit_closed_form(method.to(device), train, val, req)
        method.to(device)  # the fitted head is new
    else:
        history = list(_train(method, train, val, req).history)
    return method.eval(), history


def _fit_closed_form(method: Method, train: Dataset, val: Dataset, req: FitRequest) -> None:
    """Extract features once; fit the head (DA: with the target's features) in closed form."""
    bs = req.cfg.train.eval_batch_size
    feats = [method.extract(d.x, batch_size=bs) for d in (train, val)]  # type: ignore[operator]
    kwargs: dict[str, Any] = {}
    if req.target is not None:
        kwargs["f_target"] = method.extract(req.target.x, batch_size=bs)  # type: ignore[operator]
    try:
        method.fit_features(feats[0], train.y, feats[1], val.y, **kwargs)  # type: ignore[operator]
    except DataError as exc:
        raise EstimatorInputError(exc.what, where=exc.where, fix=exc.fix) from None


def _train(method: Method, train: Dataset, val: Dataset | None, req: FitRequest) -> TrainResult:
    """Run the Trainer in a temporary directory (no checkpoints are kept)."""
    prepare = method.backbone.prepare  # type: ignore[union-attr]
    items: Any
    if req.target is not None:
        items, collate = PairedDataset(train, req.target, seed=req.seed), collate_with(prepare)
    elif req.teacher_prepare is not None:
        from transferkit.distill.data import DistillCollate, TeacherInputDataset

        items, collate = TeacherInputDataset(train), DistillCollate(prepare, req.teacher_prepare)
    else:
        items, collate = ExampleDataset(train), collate_with(prepare)
    tc = trainer_config(req.cfg, req.seed, train.task, req.device)
    bs = req.cfg.train.eval_batch_size
    val_fn = val_metrics_fn(val, prepare, bs) if val is not None else None
    with tempfile.TemporaryDirectory(prefix="transferkit-sklearn-") as tmp:
        trainer = Trainer(method, items, collate, tc, tmp, val_fn=val_fn, quiet=not req.verbose)
        return trainer.fit()


def subset(raw: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of raw inputs (an array, or a list of strings / images)."""
    return raw[idx] if isinstance(raw, np.ndarray) else [raw[i] for i in idx]
