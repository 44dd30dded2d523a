"""From estimator parameters to a trained :class:`~transferkit.methods.base.Method`.

The estimators build exactly what ``transferkit run`` builds: their parameters become an
:class:`~transferkit.experiment.config.ExperimentConfig` (validated by the same schema),
the method comes from :func:`transferkit.experiment.stages.build_method` (backbone from
the spec, head, registered method with its validated ``Params``) and trains with the same
:class:`~transferkit.engine.Trainer` settings (:func:`~transferkit.experiment.stages.
train_config`). Closed-form methods (``linear_probe``, shallow ``coral``, ...) are fitted
on extracted features instead, as the runner does.

Differences from a run, all because an estimator owns no run directory: checkpoints are
not written (the trainer works in a temporary directory that is removed afterwards), early
stopping only happens when ``validation_fraction`` holds out a split, and the global RNGs
(Python, numpy, torch) are restored after ``fit`` so fitting does not disturb the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from torch import nn

from transferkit.data.loaders import ExampleDataset, collate_with
from transferkit.data.types import Dataset, Splits
from transferkit.diagnostics.metrics import compute_metrics
from transferkit.engine import TrainConfig, evaluate_predictions
from transferkit.errors import ConfigError
from transferkit.experiment import stages
from transferkit.experiment.config import ExperimentConfig
from transferkit.methods import METHODS, Method
from transferkit.sklearn._inputs import EstimatorInputError, EstimatorParamError

#: ``backbone="auto"``: the backbone for each input modality.
AUTO_BACKBONES = {
    "tabular": "tk:mlp",
    "text": "packaged:minilm-l6",
    "image": "packaged:efficientnet-lite0",
}
#: explicit estimator arguments that ``train_params`` must not repeat.
EXPLICIT_TRAIN_KEYS = ("lr", "epochs", "batch_size")
CLOSED_FORM_VAL_FRACTION = 0.2


def resolve_seed(random_state: Any) -> int:
    """An int seed: ``random_state`` itself when it is an int >= 0, else drawn from it."""
    is_int = isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)
    if is_int and random_state >= 0:
        return int(random_state)
    try:
        rng = check_random_state(random_state)
    except ValueError as exc:
        raise EstimatorParamError(
            str(exc), where="random_state", fix="use None, an int >= 0 or a RandomState"
        ) from None
    return int(rng.randint(0, 2**31 - 1))


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the global RNGs (Python, numpy, torch CPU and CUDA) on exit.

    Training seeds them all (``accelerate.utils.set_seed``) and torch's ``DataLoader``
    draws its base seed from the global torch RNG even when not shuffling; the caller's
    random streams stay as they were.
    """
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    cuda_states = torch.cuda.get_rng_state_all() if cuda else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for weight initialisation; restore every global RNG on exit."""
    with preserved_rng():
        torch.manual_seed(seed)
        yield


#: families with an estimator of their own; every other family trains on ``{"x", "y"}``.
OWN_ESTIMATOR = {
    "domain-adaptation": "DomainAdaptationClassifier",
    "distillation": "DistilledClassifier",
    "multi-task": "none (one label column per task; use `transferkit run`)",
}


def _trains(family: str, families: tuple[str, ...] | None) -> bool:
    return family not in OWN_ESTIMATOR if families is None else family in families


def method_class(
    name: Any, families: tuple[str, ...] | None, where: str = "method"
) -> type[Method]:
    """The registered method ``name``; its family must be one this estimator trains.

    ``families=None``: every family without an estimator of its own (fine-tuning,
    feature extraction and any family registered later).
    """
    if not isinstance(name, str):
        raise EstimatorParamError(
            f"{where} must be a method name, got {name!r}",
            where=where,
            fix=f"one of {', '.join(METHODS.names())}",
        )
    try:
        cls = METHODS.get(name)
    except ConfigError as exc:
        raise EstimatorParamError(exc.what, where=where, fix=exc.fix) from None
    if not _trains(cls.family, families):
        usable = [n for n, c in METHODS.items() if _trains(c.family, families)]
        raise EstimatorParamError(
            f"{name!r} is a {cls.family} method, which this estimator does not train",
            where=where,
            fix=f"use one of {', '.join(usable)}; {cls.family} methods: "
            f"{OWN_ESTIMATOR.get(cls.family, 'TransferClassifier / TransferRegressor')}",
        )
    return cls


def resolve_backbone(
    spec: Any, options: dict[str, Any] | None, modality: str, n_features: int | None
) -> tuple[str, dict[str, Any]]:
    """``(spec, options)`` with ``"auto"`` resolved and ``tk:mlp``'s ``in_features`` set."""
    if not isinstance(spec, str) or not spec:
        raise EstimatorParamError(
            f"backbone must be a spec string, got {spec!r}",
            where="backbone",
            fix='e.g. "auto", "tk:mlp", "packaged:minilm-l6", "timm:resnet18"',
        )
    spec = AUTO_BACKBONES[modality] if spec == "auto" else spec
    opts = dict(options or {})
    if spec == "tk:mlp" and n_features is not None:
        given = opts.get("in_features", n_features)
        if given != n_features:
            raise EstimatorParamError(
                f"backbone_options in_features={given} but X has {n_features} features",
                where="backbone_options['in_features']",
                fix="leave in_features out: it is read from X",
            )
        opts["in_features"] = n_features
    return spec, opts


def default_params(
    cls: type[Method], params: dict[str, Any] | None, spec: str, pretrained: bool
) -> dict[str, Any]:
    """``method_params`` plus ``backbone_lr_mult=1`` for randomly initialised backbones.

    A lower backbone learning rate protects pretrained weights; ``tk:`` backbones and
    ``pretrained=False`` have none, so their backbone trains at the full rate unless
    ``method_params`` says otherwise.
    """
    if params is not None and not isinstance(params, dict):
        raise EstimatorParamError(
            f"method_params must be a dict, got {type(params).__name__}",
            where="method_params",
            fix='e.g. {"freeze": "all_but_head"}',
        )
    p = dict(params or {})
    random_init = spec.startswith("tk:") or not pretrained
    if random_init and "backbone_lr_mult" in cls.Params.model_fields:
        p.setdefault("backbone_lr_mult", 1.0)
    return p


def _param_name(loc: tuple[Any, ...]) -> str:
    """Estimator parameter behind a config location (``("train", "lr")`` -> ``"lr"``)."""
    head, rest = (loc[0], loc[1:]) if loc else ("", ())
    key = str(rest[0]) if rest else ""
    if head == "train":
        return key if key in EXPLICIT_TRAIN_KEYS else f"train_params[{key!r}]"
    if head == "model":
        return key if key in ("backbone", "backbone_options", "pretrained", "head") else "model"
    if head == "method":
        return "method_params" if key == "params" else "method"
    return ".".join(map(str, loc))


def experiment_config(
    *,
    backbone: str,
    backbone_options: dict[str, Any],
    pretrained: Any,
    head: Any,
    method: str,
    params: dict[str, Any],
    training: dict[str, Any],
    early_stopping: bool,
    seed: int,
) -> ExperimentConfig:
    """The run config these parameters describe (validated by the experiment schema)."""
    train = dict(training)
    es = dict(train.pop("early_stopping", None) or {})
    es.setdefault("enabled", early_stopping)
    doc = {
        "name": "sklearn",
        "data": {"target": "estimator-inputs"},
        "model": {
            "backbone": backbone,
            "backbone_options": backbone_options,
            "pretrained": pretrained,
            "head": head,
        },
        "method": {"name": method, "params": params},
        "train": {**train, "early_stopping": es},
        "seeds": [seed],
        "baselines": {"enabled": False},
        "report": False,
    }
    try:
        return ExperimentConfig.model_validate(doc)
    except ValidationError as err:
        e = err.errors()[0]
        where = _param_name(tuple(e["loc"]))
        raise EstimatorParamError(
            f"invalid {where}: {e['msg']} (got {e.get('input')!r})",
            where=where,
            fix="see the estimator's docstring for the accepted values",
        ) from None


def training_settings(
    train_params: dict[str, Any] | None, lr: Any, epochs: Any, batch_size: Any
) -> dict[str, Any]:
    """``train_params`` merged with the explicit ``lr`` / ``epochs`` / ``batch_size``."""
    if train_params is not None and not isinstance(train_params, dict):
        raise EstimatorParamError(
            f"train_params must be a dict, got {type(train_params).__name__}",
            where="train_params",
            fix='e.g. {"schedule": "constant", "weight_decay": 0.0}',
        )
    train = dict(train_params or {})
    clash = [k for k in EXPLICIT_TRAIN_KEYS if k in train]
    if clash:
        raise EstimatorParamError(
            f"train_params sets {', '.join(clash)}, which are estimator parameters",
            where="train_params",
            fix=f"pass {', '.join(f'{k}=...' for k in clash)} to the estimator instead",
        )
    return {**train, "lr": lr, "epochs": epochs, "batch_size": batch_size}


def torch_device(device: Any) -> torch.device:
    """The torch device ``device`` names (``"auto"``: CUDA when visible, else the CPU)."""
    if device not in ("auto", "cpu", "cuda"):
        raise EstimatorParamError(
            f"device must be 'auto', 'cpu' or 'cuda', got {device!r}",
            where="device",
            fix="'auto' uses a GPU when one is visible",
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise EstimatorParamError(
            "device='cuda' but no CUDA GPU is visible", where="device", fix="use 'auto' or 'cpu'"
        )
    cuda = device != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if cuda else "cpu")


def trainer_config(cfg: ExperimentConfig, seed: int, task: str, device: str) -> TrainConfig:
    """The engine settings of ``cfg``, without checkpoints, on ``device``."""
    tc = stages.train_config(cfg, seed, task, None)
    return dataclasses.replace(
        tc, save_checkpoints=False, cpu=device == "cpu", checkpoint_min_interval_s=0.0
    )


def split(ds: Dataset, fraction: float | None, seed: int) -> tuple[Dataset, Dataset | None]:
    """``(train, val)``: ``fraction`` of ``ds`` held out (stratified when possible)."""
    if fraction is None:
        return ds, None
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise EstimatorParamError(
            f"validation_fraction must be None or in (0, 1), got {fraction!r}",
            where="validation_fraction",
            fix="e.g. 0.1",
        )
    n = len(ds)
    n_val = max(1, round(fraction * n))
    if n - n_val < 1:
        raise EstimatorInputError(
            f"n_samples={n} is too few to hold out a validation split",
            where="validation_fraction",
            fix="pass more examples or set validation_fraction=None",
        )
    idx = np.arange(n)
    strat = ds.y if ds.task == "classification" else None
    try:
        tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strat)
    except ValueError:  # a class too small to stratify
        tr, va = train_test_split(idx, test_size=n_val, random_state=seed)
    return ds.subset(np.sort(tr)), ds.subset(np.sort(va))


def build(cfg: ExperimentConfig, train: Dataset, extra: dict[str, Any] | None = None) -> Method:
    """Backbone + head + method, exactly as ``transferkit run`` builds them."""
    try:
        return stages.build_method(cfg, Splits(train, train, train), pretrained=True, extra=extra)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(map(str, e["loc"])) or "(all)"
        raise EstimatorParamError(
            f"invalid method_params for {cfg.method.name!r}: {key}: {e['msg']}",
            where=f"method_params[{key!r}]" if e["loc"] else "method_params",
            fix=f"see METHODS.get({cfg.method.name!r}).describe_params()",
        ) from None
    except ConfigError as exc:
        where = (exc.where or "").replace("model.backbone", "backbone")
        where = where.replace("method.params.", "method_params.")
        raise EstimatorParamError(exc.what, where=where or "method", fix=exc.fix) from None


def predict_outputs(method: nn.Module, raw: Any, modality: str, batch_size: int) -> np.ndarray:
    """``method.predict`` over raw inputs: logits ``[N, C]`` or values ``[N]``."""
    ds = Dataset("X", modality, raw, None)  # type: ignore[arg-type]
    with preserved_rng():
        return stages.predict(method, ds, method.backbone.prepare, batch_size)  # type: ignore[union-attr]


class FeatureView(nn.Module):
    """``predict(x)`` = the features the method's head reads, ``[B, D]``."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def predict(self, x: Any) -> torch.Tensor:
        features = getattr(self.method, "features", None)
        return features(x) if callable(features) else self.method.backbone(x)


def extract(method: Method, raw: Any, modality: str, batch_size: int) -> np.ndarray:
    """Features ``[N, D]`` of raw inputs (see :class:`FeatureView`)."""
    ds = ExampleDataset(Dataset("X", modality, raw, None))  # type: ignore[arg-type]
    view = FeatureView(method)
    with preserved_rng():
        out, _ = evaluate_predictions(view, ds, collate_with(method.backbone.prepare), batch_size)
    return np.asarray(out, dtype=np.float32)


ValFn = Callable[[nn.Module], dict[str, float]]


def val_metrics_fn(val: Dataset, prepare: Any, batch_size: int) -> ValFn:
    def fn(m: nn.Module) -> dict[str, float]:
        out = stages.predict(m, val, prepare, batch_size)  # type: ignore[arg-type]
        return {f"val_{k}": v for k, v in compute_metrics(out, val.y, val.task).items()}

    return fn
