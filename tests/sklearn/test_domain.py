"""DomainAdaptationClassifier: skada's sample_domain convention on a shifted toy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests.methods.toys import shifted_blobs
from tests.sklearn.conftest import FAST
from transferkit.methods import METHODS
from transferkit.sklearn import (
    DomainAdaptationClassifier,
    EstimatorInputError,
    EstimatorParamError,
    TransferClassifier,
)

#: 40 epochs of 3 batches, constant lr: the settings of the shifted-toy comparison.
TOY = {
    "backbone_options": {"hidden": [16]},
    "lr": 1e-2,
    "epochs": 40,
    "random_state": 0,
    "device": "cpu",
    "train_params": {"schedule": "constant", "warmup_ratio": 0.0},
}
DANN_SMALL = {"hidden": 32, "dropout": 0.0}


def _toy(seed: int = 0, n: int = 96) -> tuple[np.ndarray, ...]:
    """``(X, y, sample_domain, x_t, y_t)``: source rows then target rows labelled -1."""
    xs, ys, xt, yt = (a.numpy() for a in shifted_blobs(seed, n))
    X = np.concatenate([xs, xt])
    y = np.concatenate([ys, -np.ones_like(yt)])
    sd = np.r_[np.ones(len(xs)), -np.ones(len(xt))].astype(np.int64)
    return X, y, sd, xt, yt


def test_dann_beats_source_only_on_shifted_blobs() -> None:
    """Seed 0: source-only reaches 0.68 target accuracy, DANN 0.92 (0.91-0.97 over
    random_state 0..3, where source-only stays <= 0.85)."""
    X, y, sd, xt, yt = _toy()
    source_only = TransferClassifier(**TOY).fit(X[sd > 0], y[sd > 0]).score(xt, yt)
    da = DomainAdaptationClassifier(method_params=DANN_SMALL, **TOY).fit(X, y, sample_domain=sd)
    assert da.n_source_ == 96 and da.n_target_ == 96 and list(da.classes_) == [0, 1]
    assert da.score(xt, yt) > source_only + 0.1, (da.score(xt, yt), source_only)


def test_target_labels_are_never_read_and_domains_merge() -> None:
    X, y, sd, _xt, yt = _toy(n=32)
    est = DomainAdaptationClassifier(method_params=DANN_SMALL, **FAST)
    ref = est.fit(X, y, sample_domain=sd).predict_proba(X)
    y_true = np.concatenate([y[sd > 0], yt])  # the real target labels, given but unused
    y_noise = np.concatenate([y[sd > 0], np.random.default_rng(0).integers(0, 2, len(yt))])
    for labels in (y_true, y_noise):
        np.testing.assert_array_equal(est.fit(X, labels, sample_domain=sd).predict_proba(X), ref)
    # no sample_domain: rows labelled -1 are the target
    np.testing.assert_array_equal(est.fit(X, y).predict_proba(X), ref)
    # several source / target ids are merged into one source and one target
    sd_multi = np.where(sd > 0, 1 + np.arange(len(sd)) % 2, -1 - np.arange(len(sd)) % 3)
    np.testing.assert_array_equal(est.fit(X, y, sample_domain=sd_multi).predict_proba(X), ref)


def test_score_skips_unlabelled_rows_and_the_model_pickles() -> None:
    X, y, sd, xt, _yt = _toy(n=32)
    est = DomainAdaptationClassifier(method="dan", **FAST).fit(X, y, sample_domain=sd)
    pred = est.predict(X)
    labelled = y != -1
    assert est.score(X, y) == pytest.approx(np.mean(pred[labelled] == y[labelled]))
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict_proba(xt), est.predict_proba(xt))


def test_sample_domain_errors_name_the_row() -> None:
    X, y, sd, _, _ = _toy(n=8)
    est = DomainAdaptationClassifier(**FAST)
    y_full = np.where(y == -1, 0, y)  # every row labelled: only the domain ids matter
    cases = [
        (np.where(np.arange(len(sd)) == 3, 0, sd), "sample_domain[3]", "neither"),
        (sd[:-1], "sample_domain", "shape"),
        (np.ones_like(sd), "sample_domain", "no target"),
        (-np.ones_like(sd), "sample_domain", "no source"),
        (sd + 0.5, "sample_domain", "integers"),
    ]
    for domains, where, what in cases:
        with pytest.raises(EstimatorInputError, match=what) as info:
            est.fit(X, y_full, sample_domain=domains)
        assert info.value.where.startswith(where) and info.value.fix
    with pytest.raises(EstimatorInputError, match="no target"):
        est.fit(X, y_full)  # no -1 labels and no sample_domain: nothing to adapt to
    y_bad = y.copy()
    y_bad[2] = -1  # a source row without a label
    with pytest.raises(EstimatorInputError, match="labelled -1") as info:
        est.fit(X, y_bad, sample_domain=sd)
    assert info.value.where.startswith("y[2]")
    with pytest.raises(EstimatorParamError, match="fine-tuning method"):
        DomainAdaptationClassifier(method="finetune", **FAST).fit(X, y, sample_domain=sd)


DA_METHODS = [n for n, c in METHODS.items() if c.family == "domain-adaptation"]


@pytest.mark.parametrize("name", DA_METHODS)
def test_every_domain_adaptation_method_is_reachable(name: str) -> None:
    X, y, sd, xt, _ = _toy(n=24)
    est = DomainAdaptationClassifier(method=name, **{**FAST, "epochs": 2, "batch_size": 16})
    proba = est.fit(X, y, sample_domain=sd).predict_proba(xt)
    assert type(est.model_).name == name
    assert proba.shape == (24, 2) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
