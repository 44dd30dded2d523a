"""Transferability scores: LogME, LEEP, NLEEP, H-score (+ shrinkage), NCE, GBC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.diagnostics.transferability import (
    SCORES,
    compute_scores,
    gbc,
    hscore,
    hscore_shrinkage,
    leep,
    logme,
    nce,
    nleep,
)
from transferkit.errors import ConfigError, DataError


def _reference_logme_column(f: np.ndarray, y: np.ndarray, tol: float = 1e-12) -> float:
    """MacKay's fixed point for one target column, in D-space, without any SVD."""
    n, d = f.shape
    ftf, fty, eye = f.T @ f, f.T @ y, np.eye(d)
    alpha, beta = 1.0, 1.0
    for _ in range(10_000):
        a = alpha * eye + beta * ftf
        m = beta * np.linalg.solve(a, fty)
        gamma = d - alpha * np.trace(np.linalg.inv(a))
        new_alpha = gamma / (m @ m)
        new_beta = (n - gamma) / np.sum((y - f @ m) ** 2)
        done = abs(new_alpha / alpha - 1) < tol and abs(new_beta / beta - 1) < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    a = alpha * eye + beta * ftf
    m = beta * np.linalg.solve(a, fty)
    evidence = (
        n / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * np.sum((f @ m - y) ** 2)
        - alpha / 2 * (m @ m)
        - np.linalg.slogdet(a)[1] / 2
    )
    return float(evidence / n)


def _reference_logme(f: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean([_reference_logme_column(f, t) for t in targets.T]))


def _blobs(n: int, d: int, k: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent means ``sep * M[y]`` plus unit Gaussian noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return sep * rng.normal(size=(k, d))[y] + rng.normal(size=(n, d)), y


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("n", "d", "rank"), [(60, 8, 8), (60, 8, 7), (25, 30, 10)])
def test_logme_matches_reference_fixed_point(n: int, d: int, rank: int) -> None:
    f, y = _blobs(n, d, 3, 0.7, seed=n + d)
    if rank < d:  # rank-deficient features; (25, 30) also takes the D > N (N x N Gram) path
        f = f[:, :rank] @ np.random.default_rng(rank).normal(size=(rank, d))
    assert np.linalg.matrix_rank(f) == rank
    onehot = np.eye(3)[y]
    assert logme(f, y) == pytest.approx(_reference_logme(f, onehot), abs=1e-6)


def test_logme_stays_finite_when_features_interpolate_the_labels() -> None:
    # D >= N: every target is fitted exactly, the evidence grows towards its noise-free
    # limit as beta -> inf, and the iteration must stop at a finite, stable value
    f, y = _blobs(20, 30, 3, 0.7, seed=50)
    value = logme(f, y)
    assert np.isfinite(value)
    assert value == pytest.approx(logme(f, y))


def test_logme_regression_matches_reference_and_infers_task_from_dtype() -> None:
    rng = np.random.default_rng(5)
    f = rng.normal(size=(60, 8))
    t = f @ rng.normal(size=8) + 0.5 * rng.normal(size=60)
    expected = _reference_logme(f, t[:, None])
    assert logme(f, t) == pytest.approx(expected, abs=1e-6)
    assert logme(torch.tensor(f), torch.tensor(t)) == pytest.approx(expected, abs=1e-6)
    two = np.stack([t, -2 * t + 1], axis=1)
    assert logme(f, two) == pytest.approx(_reference_logme(f, two), abs=1e-6)
    # a float vector holding class ids is a regression target unless told otherwise
    y = np.arange(60) % 3
    assert logme(f, y.astype(float), regression=False) == pytest.approx(logme(f, y))
    assert logme(f, y.astype(float)) != pytest.approx(logme(f, y))


def test_leep_hand_computed_two_class_example() -> None:
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    y = np.array([0, 0, 1, 1])
    # P(y, z) = [[1.5, 0.5], [0.5, 1.5]] / 4, P(z) = [0.5, 0.5],
    # P(y|z) = [[0.75, 0.25], [0.25, 0.75]]; per example sum_z P(y_i|z) theta_iz:
    # 0.9*.75 + 0.1*.25 = 0.70, 0.6*.75 + 0.4*.25 = 0.55, 0.2*.25 + 0.8*.75 = 0.65,
    # 0.3*.25 + 0.7*.75 = 0.60
    expected = np.mean(np.log([0.70, 0.55, 0.65, 0.60]))
    assert leep(theta, y) == pytest.approx(expected, abs=1e-12)
    assert SCORES.get("leep")(None, y, source_probs=theta) == pytest.approx(expected, abs=1e-12)
    assert leep(np.eye(2)[y], y) == pytest.approx(0.0, abs=1e-12)  # perfect source model


def test_nce_hand_computed_and_bounds() -> None:
    z = np.array([0, 0, 0, 7, 7, 7])  # source ids need not be contiguous
    y = np.array(["a", "a", "b", "b", "b", "a"])
    # each source class holds its target classes 2:1, so H(Y|Z) = H(2/3, 1/3)
    expected = 2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)
    assert nce(z, y) == pytest.approx(expected, abs=1e-12)
    assert nce(np.array([0, 1, 2, 2, 1, 0]), np.array([0, 1, 1, 1, 1, 0])) == pytest.approx(0.0)
    y3 = np.array([0, 0, 1, 2])  # constant source label: NCE = -H(Y)
    assert nce(np.zeros(4, dtype=int), y3) == pytest.approx(
        0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)
    )
    probs = np.eye(8)[z] * 0.9 + 0.1 / 8
    assert SCORES.get("nce")(None, y, source_probs=probs) == pytest.approx(expected)


def test_hscore_hand_computed_and_invariant_to_scaling() -> None:
    # x = [0, 2, 4, 6], y = [0, 0, 1, 1]: var(x) = 5, between-class var = 4, H = 0.8
    assert hscore(np.array([[0.0], [2.0], [4.0], [6.0]]), [0, 0, 1, 1]) == pytest.approx(0.8)
    f, y = _blobs(200, 6, 4, 0.5, seed=1)
    h = hscore(f, y)
    assert 0 < h <= 3  # at most min(K - 1, D)
    for c in (1e-3, 7.0, 1e4):
        assert hscore(c * f, y) == pytest.approx(h, rel=1e-9)
    mix = np.random.default_rng(2).normal(size=(6, 6))  # any invertible linear map
    assert hscore(f @ mix, y) == pytest.approx(h, rel=1e-7)


def test_hscore_shrinkage_meets_hscore_when_n_much_larger_than_d() -> None:
    f, y = _blobs(4000, 5, 3, 0.5, seed=3)
    assert hscore_shrinkage(f, y) == pytest.approx(hscore(f, y), rel=0.02)
    assert hscore_shrinkage(3.0 * f, y) == pytest.approx(hscore_shrinkage(f, y), rel=1e-9)


def test_hscore_shrinkage_stays_sane_when_d_exceeds_n() -> None:
    noise = np.random.default_rng(4).normal(size=(50, 200))
    y = np.arange(50) % 5
    # with D > N the plain estimate separates any labels perfectly in-sample: H = K - 1
    assert hscore(noise, y) == pytest.approx(4.0, rel=1e-6)
    assert hscore_shrinkage(noise, y) < 1.0


def test_gbc_hand_computed_1d_and_separation() -> None:
    # class 0: {-1, 1} (mean 0, var 1); class 1: {1, 3} (mean 2, var 1): D_B = 2^2 / 8
    x = np.array([[-1.0], [1.0], [1.0], [3.0]])
    assert gbc(x, [0, 0, 1, 1], pca_dim=None) == pytest.approx(-2 * math.exp(-0.5))
    near, y = _blobs(300, 10, 4, 0.2, seed=6)
    far, _ = _blobs(300, 10, 4, 3.0, seed=6)
    g_near, g_far = gbc(near, y, pca_dim=8), gbc(far, y, pca_dim=8)
    assert -12 <= g_near < g_far <= 0  # K (K - 1) = 12 ordered pairs
    assert g_far > -1e-3
    assert gbc(5.0 * near, y, pca_dim=8) == pytest.approx(g_near, rel=1e-6)


def test_every_score_ranks_informative_features_above_noise() -> None:
    good, y = _blobs(300, 16, 4, 1.0, seed=7)
    noise = np.random.default_rng(8).normal(size=(300, 16))
    head = np.random.default_rng(9).normal(size=(16, 6))  # a fixed "source classifier"
    assert sorted(SCORES.names()) == sorted(
        ["gbc", "hscore", "hscore_shrinkage", "leep", "logme", "nce", "nleep"]
    )
    for name, score in SCORES.items():
        assert score.higher_is_better
        assert score.needs_source_probs == (name in ("leep", "nce"))
        s_good = score(good, y, source_probs=_softmax(good @ head))
        s_noise = score(noise, y, source_probs=_softmax(noise @ head))
        assert s_good > s_noise, name


def test_compute_scores_picks_applicable_scores_and_accepts_torch() -> None:
    f, y = _blobs(120, 6, 3, 1.0, seed=10)
    got = compute_scores(torch.tensor(f, dtype=torch.float32), torch.tensor(y))
    assert set(got) == {"gbc", "hscore", "hscore_shrinkage", "logme", "nleep"}
    assert got["logme"] == pytest.approx(logme(f.astype(np.float32), y), abs=1e-9)
    probs = _softmax(f[:, :4])
    assert set(compute_scores(f, y, source_probs=probs)) == set(SCORES.names())
    assert list(compute_scores(f, y, names=["hscore", "logme"])) == ["hscore", "logme"]
    with pytest.raises(DataError, match="source model"):
        compute_scores(f, y, names=["leep"])
    with pytest.raises(ConfigError, match="did you mean"):
        SCORES.get("logmee")


def test_nleep_is_deterministic_for_a_seed_and_bounded() -> None:
    f, y = _blobs(200, 12, 3, 0.6, seed=11)
    a = nleep(f, y, seed=3)
    assert a == nleep(f, y, seed=3)
    assert a <= 0
    assert nleep(f, y, pca_dim=4, n_components_ratio=2) <= 0
    with pytest.raises(ConfigError, match="pca_dim"):
        nleep(f, y, pca_dim=1.5)
    with pytest.raises(ConfigError, match="n_components_ratio"):
        nleep(f, y, n_components_ratio=0)


@pytest.mark.parametrize("fn", [logme, hscore, hscore_shrinkage, gbc, nleep])
def test_feature_scores_reject_bad_input(fn: object) -> None:
    f, y = _blobs(40, 4, 2, 1.0, seed=12)
    with pytest.raises(DataError, match="40 rows"):
        fn(f, y[:30])  # type: ignore[operator]
    with pytest.raises(DataError, match="at least 2"):
        fn(f, np.zeros(40, dtype=int))  # type: ignore[operator]
    bad = f.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fn(bad, y)  # type: ignore[operator]


def test_prediction_scores_reject_bad_input() -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match="not a probability vector") as err:
        leep(np.array([[2.0, -1.0]] * 4), y)
    assert err.value.where is not None and "row 0" in err.value.where
    with pytest.raises(DataError, match="3 rows"):
        leep(np.full((3, 2), 0.5), y)
    with pytest.raises(DataError, match="do not match"):
        nce(np.array([0, 1]), y)
    with pytest.raises(DataError, match="at least 2"):
        nce(np.array([0, 1, 0, 1]), np.ones(4, dtype=int))
    with pytest.raises(DataError, match="source_probs"):
        SCORES.get("leep")(None, y)
    with pytest.raises(DataError, match="NaN"):
        logme(np.ones((4, 2)), np.array([0.0, np.nan, 1.0, 2.0]))
    with pytest.raises(DataError, match="1-D"):
        leep(np.full((4, 2), 0.5), 1)
    with pytest.raises(DataError, match="1-D"):
        hscore(np.ones((4, 2)), np.eye(2)[[0, 1, 0, 1]])
    with pytest.raises(DataError, match="all zeros"):
        logme(np.ones((4, 2)), np.zeros(4))
    with pytest.raises(DataError, match="per class"):
        gbc(np.random.default_rng(0).normal(size=(5, 3)), [0, 0, 0, 0, 1])


@pytest.mark.integration
def test_real_digits_trained_features_score_higher_than_random_ones() -> None:
    from torch import nn

    from transferkit.backbones import create_backbone
    from transferkit.data import load_dataset

    splits = load_dataset("digits", seed=0)
    train, test = splits.train, splits.test
    pixels = test.x.reshape(len(test), -1).astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    noise = rng.normal(size=pixels.shape) @ rng.normal(size=(64, 64))
    assert logme(pixels, test.y) > logme(noise, test.y)

    torch.manual_seed(0)
    random_cnn = create_backbone("tk:smallcnn", pretrained=False, in_chans=1)
    trained = create_backbone("tk:smallcnn", pretrained=False, in_chans=1)
    trained.load_state_dict(random_cnn.state_dict())
    head = nn.Linear(trained.num_features, 10)
    opt = torch.optim.Adam([*trained.parameters(), *head.parameters()], lr=3e-3)
    x_train, y_train = trained.prepare(train.x), torch.from_numpy(train.y)
    trained.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread avoids OpenMP spinning on shared cores
    try:
        for _ in range(3):
            for idx in torch.randperm(len(x_train)).split(64):
                loss = nn.functional.cross_entropy(head(trained(x_train[idx])), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)

    def feats(model: nn.Module) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model(trained.prepare(test.x)).double().numpy()

    f_random, f_trained = feats(random_cnn), feats(trained)
    assert logme(f_trained, test.y) > logme(f_random, test.y)
    assert hscore(f_trained, test.y) > hscore(f_random, test.y)
