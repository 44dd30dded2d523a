"""Label-free model selection: entropy, SND, DEV and select_best's directions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from transferkit.diagnostics.selection import (
    SELECTORS,
    density_ratio_weights,
    dev_risk,
    dev_risk_from_weights,
    is_collapsed,
    prediction_diversity,
    prediction_entropy,
    score_candidates,
    select_best,
    snd_score,
)
from transferkit.errors import ConfigError, DataError


def _dirichlet(n: int, c: int, seed: int) -> np.ndarray:
    """Random probability vectors, uniform on the simplex: a model that ignores its input."""
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=n)


def _clustered(n: int, c: int, seed: int) -> np.ndarray:
    """Confident predictions: mass ~0.9 on one of ``c`` classes, small noise."""
    rng = np.random.default_rng(seed)
    logits = 4.0 * np.eye(c)[rng.integers(0, c, n)] + 0.1 * rng.normal(size=(n, c))
    return softmax(logits, axis=1)


def test_entropy_one_hot_zero_uniform_log_c() -> None:
    assert prediction_entropy(np.eye(4)[[0, 1, 3, 3, 2]]) == 0.0
    assert prediction_entropy(np.full((7, 5), 0.2)) == pytest.approx(np.log(5))
    p = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    assert prediction_entropy(p) == pytest.approx((np.log(2) + 1.5 * np.log(2)) / 2)


def test_entropy_rejects_non_probabilities() -> None:
    with pytest.raises(DataError, match="row 1"):
        prediction_entropy(np.array([[0.5, 0.5], [2.0, -1.0]]))
    with pytest.raises(DataError, match="softmax"):
        prediction_entropy(np.array([[1.0, 2.0]]))


def _naive_snd(x: np.ndarray, tau: float) -> float:
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    n, total = len(z), 0.0
    for i in range(n):
        sims = np.array([z[i] @ z[j] for j in range(n) if j != i]) / tau
        p = np.exp(sims - sims.max())
        p /= p.sum()
        total += -(p * np.log(p)).sum()
    return total / n


def test_snd_matches_naive_and_chunking() -> None:
    x = _dirichlet(40, 4, 0)
    want = _naive_snd(x, 0.05)
    assert snd_score(x) == pytest.approx(want, rel=1e-10)
    assert snd_score(x, chunk=7) == pytest.approx(want, rel=1e-10)
    logits = np.log(x)
    assert snd_score(logits, apply_softmax=True) == pytest.approx(want, rel=1e-10)


def test_snd_bounds_and_clustered_beats_noise() -> None:
    n = 300
    rng = np.random.default_rng(2)
    clustered = snd_score(_clustered(n, 5, 1))
    noise = snd_score(rng.uniform(-1.0, 1.0, size=(n, 5)))  # uniform noise outputs
    assert clustered > noise + 1.0
    assert 0.0 < noise < clustered <= np.log(n - 1) + 1e-9
    # identical outputs: every neighbour equally close -> maximal entropy log(N - 1)
    assert snd_score(np.tile([0.7, 0.3], (10, 1))) == pytest.approx(np.log(9))
    with pytest.raises(ConfigError):
        snd_score(_dirichlet(5, 3, 0), temperature=0.0)


def test_snd_known_failure_collapsed_outputs_score_high() -> None:
    """Documented limitation: near-uniform (collapsed) outputs look dense to SND, while
    entropy flags them. This is why SND should not be the only check."""
    collapsed = softmax(0.3 * np.random.default_rng(0).normal(size=(300, 5)), axis=1)
    clustered = _clustered(300, 5, 1)
    assert snd_score(collapsed) > snd_score(clustered)
    assert prediction_entropy(collapsed) > prediction_entropy(clustered) + 1.0


def test_dev_from_weights_hand_computed() -> None:
    # L W = [0, 2, 3, 16]: mean 5.25; mean W = 1.5; Cov(LW, W) = 37.5 / 3 = 12.5;
    # Var W = 9 / 3 = 3; eta = -12.5 / 3; risk = 5.25 + eta * 1.5 - eta = 5.25 + eta / 2 = 19 / 6
    assert dev_risk_from_weights([1, 2, 3, 4], [0, 1, 1, 4]) == pytest.approx(19 / 6)
    # equal weights: no control variate, plain weighted mean
    assert dev_risk_from_weights([1.0, 2.0, 6.0], [2.0, 2.0, 2.0]) == pytest.approx(6.0)
    with pytest.raises(DataError, match="one weight per loss"):
        dev_risk_from_weights([1.0, 2.0], [1.0])


def test_dev_equals_mean_loss_for_identical_domains() -> None:
    rng = np.random.default_rng(0)
    src, val, tgt = (rng.normal(size=(n, 6)) for n in (600, 300, 400))
    losses = rng.gamma(2.0, 0.5, size=300) + 0.3 * val[:, 0] ** 2
    w = density_ratio_weights(src, tgt, val)
    assert np.abs(w - 1.0).max() < 0.25 and abs(w.mean() - 1.0) < 0.05
    assert dev_risk(src, val, losses, tgt) == pytest.approx(losses.mean(), rel=0.03)


def test_density_ratio_recovers_known_gaussian_ratio() -> None:
    # source N(0, 1), target N(1, 1) in one dimension: p_t / p_s = exp(x - 1/2)
    rng = np.random.default_rng(1)
    src, tgt = rng.normal(size=(3000, 1)), rng.normal(1.0, size=(3000, 1))
    val = np.linspace(-1.5, 2.0, 15)[:, None]
    w = density_ratio_weights(src, tgt, val)
    np.testing.assert_allclose(w, np.exp(val[:, 0] - 0.5), rtol=0.2)


def _task(seed: int) -> dict[str, np.ndarray]:
    """5 Gaussian classes in 8-D; target = source shifted by 0.5 in every feature."""
    rng = np.random.default_rng(seed)
    means = 3.0 * rng.normal(size=(5, 8))

    def draw(n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 5, n)
        return means[y] + rng.normal(size=(n, 8)) + shift, y

    (xs, ys), (xv, yv), (xt, _) = draw(400, 0.0), draw(200, 0.0), draw(300, 0.5)
    return {"xs": xs, "ys": ys, "xv": xv, "yv": yv, "xt": xt}


def _candidate(d: dict[str, np.ndarray], probs_v: np.ndarray, probs_t: np.ndarray) -> dict:
    losses = -np.log(np.clip(probs_v[np.arange(len(d["yv"])), d["yv"]], 1e-12, None))
    return {
        "probs_t": probs_t,
        "source_train_feats": d["xs"],
        "source_val_feats": d["xv"],
        "val_losses": losses,
        "target_feats": d["xt"],
    }


@pytest.mark.parametrize(
    ("criterion", "broken_first"),
    [("dev", True), ("snd", True), ("snd", False), ("entropy", True), ("entropy", False)],
)
def test_select_best_prefers_good_over_random_checkpoint(
    criterion: str, broken_first: bool
) -> None:
    from sklearn.linear_model import LogisticRegression

    d = _task(0)
    model = LogisticRegression(max_iter=1000).fit(d["xs"], d["ys"])
    good = _candidate(d, model.predict_proba(d["xv"]), model.predict_proba(d["xt"]))
    rng = np.random.default_rng(1)  # a broken checkpoint: random logits, unrelated to x
    random_v, random_t = (softmax(2.0 * rng.normal(size=(n, 5)), axis=1) for n in (200, 300))
    broken = _candidate(d, random_v, random_t)
    cands = [broken, good] if broken_first else [good, broken]
    assert select_best(cands, criterion) == (1 if broken_first else 0)
    scores = score_candidates(cands, criterion)
    assert len(scores) == 2 and all(np.isfinite(scores))


def test_select_best_directions_nan_and_errors() -> None:
    assert SELECTORS.get("snd").higher_is_better
    assert not SELECTORS.get("dev").higher_is_better
    assert not SELECTORS.get("entropy").higher_is_better
    # feats_t works for SND; ties go to the earliest candidate
    same = {"feats_t": _clustered(30, 3, 0)}
    assert select_best([same, same], "snd") == 0
    with pytest.raises(ConfigError, match="entropy"):
        select_best([same], "entrop")
    with pytest.raises(DataError, match=r"candidates\[0\].*probs_t"):
        select_best([same], "entropy")
    with pytest.raises(DataError, match="no candidates"):
        select_best([], "dev")


def test_diversity_hand_values() -> None:
    assert prediction_diversity(np.eye(3)[[1, 1, 1, 1]]) == 0.0
    assert prediction_diversity(np.eye(4)[[0, 1, 2, 3, 3, 2, 1, 0]]) == pytest.approx(1.0)
    nine_one = np.eye(2)[[0] * 9 + [1]]
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)
    assert prediction_diversity(nine_one) == pytest.approx(h) == pytest.approx(0.469, abs=1e-3)
    assert prediction_diversity(np.ones((5, 1))) == 1.0
    # uncertain but collapsed: every argmax is class 0 although the mean prediction is
    # nearly uniform (its entropy is ~log 3), so soft statistics would miss the collapse
    p = np.tile([0.34, 0.33, 0.33], (50, 1))
    assert prediction_diversity(p) == 0.0
    assert prediction_entropy(p) == pytest.approx(np.log(3), abs=1e-3)


def test_is_collapsed_threshold() -> None:
    p = np.eye(2)[[0] * 97 + [1] * 3]
    assert prediction_diversity(p) == pytest.approx(0.194, abs=1e-3)
    assert is_collapsed(p, 0.25) and not is_collapsed(p, 0.1)
    assert not is_collapsed(np.eye(2)[[0] * 100], 0.0)  # 0 switches the guard off


def test_select_best_collapse_guard_passes_over_collapsed_candidates() -> None:
    collapsed = {"probs_t": softmax(8.0 * np.eye(3)[np.zeros(60, dtype=int)], axis=1)}
    healthy = {"probs_t": _clustered(60, 3, 0)}
    # entropy prefers the (more confident) collapsed model ...
    assert prediction_entropy(collapsed["probs_t"]) < prediction_entropy(healthy["probs_t"])
    assert select_best([collapsed, healthy], "entropy") == 0
    # ... the guard does not; with every candidate collapsed the criterion decides again
    assert select_best([collapsed, healthy], "entropy", collapse_guard=0.25) == 1
    soft = {"probs_t": softmax(2.0 * np.eye(3)[np.zeros(60, dtype=int)], axis=1)}
    assert select_best([soft, collapsed], "entropy", collapse_guard=0.25) == 1
