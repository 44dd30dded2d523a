"""TransferClassifier / TransferRegressor: outputs checked by hand, clone, GridSearchCV,
reproducibility, every supervised method reachable, clear errors."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV

from tests.sklearn.conftest import FAST, blobs
from transferkit.errors import TransferkitError
from transferkit.sklearn import (
    EstimatorInputError,
    EstimatorNotFittedError,
    EstimatorParamError,
    TransferClassifier,
    TransferRegressor,
)


def _hidden(est: TransferClassifier | TransferRegressor, X: np.ndarray) -> np.ndarray:
    """relu(X W^T + b) of the fitted tk:mlp's single hidden layer, in float64 numpy."""
    lin = est.model_.backbone.model[0]
    W, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
    return np.maximum(X @ W.T + b, 0.0)


def _head(est: TransferClassifier | TransferRegressor, F: np.ndarray) -> np.ndarray:
    (lin,) = [m for m in est.model_.head.modules() if isinstance(m, torch.nn.Linear)]
    return F @ lin.weight.detach().double().numpy().T + lin.bias.detach().double().numpy()


def test_classifier_outputs_match_the_model_computed_by_hand(xy) -> None:
    X, y = xy
    clf = TransferClassifier(**FAST).fit(X, y)
    assert list(clf.classes_) == ["a", "b", "c"] and clf.n_features_in_ == 2
    assert clf.backbone_ == "tk:mlp" and clf.modality_ == "tabular"
    F = clf.transform(X)
    assert F.shape == (120, 16) and F.dtype == np.float32
    np.testing.assert_allclose(F, _hidden(clf, X), rtol=1e-5, atol=1e-5)
    z = _head(clf, F.astype(np.float64))
    p_hand = np.exp(z - z.max(1, keepdims=True))
    p_hand /= p_hand.sum(1, keepdims=True)
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(proba, p_hand, atol=1e-5)
    pred = clf.predict(X)
    assert (pred == clf.classes_[proba.argmax(1)]).all()
    assert clf.score(X, y) == accuracy_score(y, pred) > 0.95
    assert list(clf.get_feature_names_out()) == [f"transferclassifier{i}" for i in range(16)]
    assert [r["epoch"] for r in clf.history_] == [1, 2, 3, 4, 5]


def test_regressor_standardises_targets_and_maps_predictions_back(xy) -> None:
    X, _ = xy
    y = 30.0 * X[:, 0] - 20.0 * X[:, 1] + 1000.0
    reg = TransferRegressor(**{**FAST, "epochs": 20}).fit(X, y)
    assert reg.y_mean_ == pytest.approx(y.mean()) and reg.y_scale_ == pytest.approx(y.std())
    pred = reg.predict(X)
    by_hand = _head(reg, _hidden(reg, X))[:, 0] * y.std() + y.mean()
    np.testing.assert_allclose(pred, by_hand, rtol=1e-5)
    assert reg.score(X, y) == pytest.approx(r2_score(y, pred)) and reg.score(X, y) > 0.9


@pytest.mark.parametrize("est_cls", [TransferClassifier, TransferRegressor])
def test_linear_probe_is_reachable_and_fitted_in_closed_form(xy, est_cls) -> None:
    X, y = xy
    target = y if est_cls is TransferClassifier else X[:, 0] * 2.0
    est = est_cls(**FAST, method="linear_probe", method_params={"strengths": [1.0]})
    est.fit(X, target)
    assert type(est.model_).__name__ == "LinearProbe" and est.history_ == []
    assert est.model_.selected_strength_ == 1.0
    assert not any(p.requires_grad for p in est.model_.backbone.parameters())
    assert est.score(X, target) > 0.8


def test_same_random_state_same_model_and_global_rngs_untouched(xy) -> None:
    X, y = xy
    np.random.seed(123)
    random.seed(7)
    torch.manual_seed(99)
    before = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state())
    a = TransferClassifier(**FAST).fit(X, y).predict_proba(X)
    assert np.array_equal(np.random.get_state()[1], before[0])
    assert random.getstate() == before[1] and torch.equal(torch.get_rng_state(), before[2])
    b = TransferClassifier(**FAST).fit(X, y).predict_proba(X)
    c = TransferClassifier(**{**FAST, "random_state": 1}).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_clone_pickle_and_grid_search_over_lr(xy) -> None:
    X, y = xy
    est = TransferClassifier(**{**FAST, "epochs": 2})
    fitted = clone(est).fit(X, y)
    fresh = clone(fitted)
    assert not hasattr(fresh, "model_") and fresh.get_params() == est.get_params()
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    search = GridSearchCV(est, {"lr": [1e-5, 3e-2]}, cv=2).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_ == {"lr": 3e-2} and scores[1] > scores[0] + 0.2
    best = search.best_estimator_
    assert best.lr == 3e-2 and search.score(X, y) == accuracy_score(y, best.predict(X)) > 0.5


def test_validation_fraction_early_stops_on_held_out_rows(xy) -> None:
    X, y = xy
    clf = TransferClassifier(
        **{**FAST, "epochs": 30},
        validation_fraction=0.25,
        train_params={"early_stopping": {"patience": 2}},
    ).fit(X, y)
    assert all("val_accuracy" in r for r in clf.history_)
    assert len(clf.history_) < 30  # stopped: blobs are solved within a few epochs
    assert clf.config_.train.early_stopping.enabled


def test_pandas_dataframe_sets_and_checks_feature_names(xy) -> None:
    X, y = xy
    df = pd.DataFrame(X, columns=["width", "height"])
    clf = TransferClassifier(**FAST).fit(df, pd.Series(y))
    assert list(clf.feature_names_in_) == ["width", "height"]
    np.testing.assert_array_equal(clf.predict(df), TransferClassifier(**FAST).fit(X, y).predict(X))
    with pytest.raises(EstimatorInputError, match="feature names"):
        clf.predict(df.rename(columns={"width": "w"}))


def test_parameter_errors_name_the_parameter_and_a_fix(xy) -> None:
    X, y = xy
    cases = [
        ({"method": "finetnue"}, "method", "finetune"),
        ({"method": "dann"}, "method", "DomainAdaptationClassifier"),
        ({"method": "distill"}, "method", "DistilledClassifier"),
        ({"method": "multitask"}, "method", "transferkit run"),
        ({"method_params": {"bogus": 1}}, "method_params['bogus']", "describe_params"),
        ({"lr": -1.0}, "lr", ""),
        ({"train_params": {"lr": 0.1}}, "train_params", "lr=..."),
        ({"device": "tpu"}, "device", "auto"),
        ({"backbone_options": {"hidden": [4], "in_features": 3}}, "backbone_options", "read"),
        ({"validation_fraction": 1.5}, "validation_fraction", "0.1"),
    ]
    for params, where, fix in cases:
        with pytest.raises(EstimatorParamError) as info:
            TransferClassifier(**{**FAST, **params}).fit(X, y)
        err = info.value
        assert isinstance(err, ValueError) and isinstance(err, TransferkitError)
        assert err.where is not None and err.where.startswith(where), (params, err.where)
        assert err.fix and fix in err.fix, (params, err.fix)


def test_input_errors_are_value_errors_with_sklearn_wording(xy) -> None:
    X, y = xy
    with pytest.raises(EstimatorNotFittedError) as info:
        TransferClassifier().predict(X)
    assert isinstance(info.value, NotFittedError) and info.value.fix
    clf = TransferClassifier(**FAST).fit(X, y)
    with pytest.raises(EstimatorInputError, match="X has 3 features, but TransferClassifier"):
        clf.predict(np.zeros((2, 3)))
    with pytest.raises(EstimatorInputError, match="fitted on tabular inputs"):
        clf.predict(["some text"])
    with pytest.raises(EstimatorInputError, match="only one class"):
        TransferClassifier(**FAST).fit(X, np.zeros(len(X)))
    with pytest.raises(EstimatorInputError, match="Unknown label type"):
        TransferClassifier(**FAST).fit(X, X[:, 0])
    with pytest.raises(EstimatorInputError, match="n_samples=1"):
        TransferRegressor(**FAST).fit(X[:1], [1.0])
    with pytest.raises(EstimatorInputError, match="NaN"):
        TransferClassifier(**FAST).fit(np.where(X > 1, np.nan, X), y)


def test_refit_on_another_input_size_resets_learned_attributes() -> None:
    X, y = blobs()
    clf = TransferClassifier(**FAST).fit(X, y)
    X3 = np.c_[X, X[:, :1]]
    clf.fit(X3, y)
    assert clf.n_features_in_ == 3 and clf.config_.model.backbone_options["in_features"] == 3
    assert clf.predict(X3).shape == (120,)
