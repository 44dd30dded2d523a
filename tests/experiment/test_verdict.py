"""Transfer gain, confidence intervals and verdicts against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from transferkit.diagnostics.metrics import classification_details, compute_metrics
from transferkit.diagnostics.verdict import (
    paired_bootstrap,
    t_interval,
    transfer_gain,
    verdict_from_interval,
)


def test_verdict_rules() -> None:
    assert verdict_from_interval(0.01, 0.2) == "positive"
    assert verdict_from_interval(-0.2, -0.01) == "negative"
    assert verdict_from_interval(-0.1, 0.1) == "inconclusive"
    assert verdict_from_interval(0.0, 0.1) == "inconclusive"


def test_t_interval_hand_computed() -> None:
    # deltas 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t_{0.975, 2} = 4.302653
    lo, hi = t_interval([0.1, 0.2, 0.3])
    half = 4.302652729911275 * 0.1 / np.sqrt(3)
    assert lo == pytest.approx(0.2 - half) and hi == pytest.approx(0.2 + half)
    assert stats.t.ppf(0.975, 2) == pytest.approx(4.302652729911275)


def test_paired_bootstrap_identical_models_is_zero() -> None:
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    p = np.array([0, 1, 0, 0, 1, 1, 1, 1])
    delta, lo, hi = paired_bootstrap(y, p, p, "accuracy", n_boot=200)
    assert delta == lo == hi == 0.0


def test_paired_bootstrap_clear_win() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = y.copy()
    bad = np.where(rng.random(400) < 0.5, 1 - y, y)  # ~50% wrong
    delta, lo, hi = paired_bootstrap(y, good, bad, "accuracy", n_boot=500)
    assert delta == pytest.approx(1 - (bad == y).mean())
    assert 0 < lo < delta < hi


def test_lower_is_better_metrics_flip_sign() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    a = y + 0.1
    b = y + 1.0
    delta, _, _ = paired_bootstrap(y, a, b, "mae", n_boot=100)
    assert delta == pytest.approx(0.9)  # a has lower error: transfer is better


def test_transfer_gain_seeds_and_single_seed() -> None:
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    perfect = np.eye(2)[y]
    half = np.eye(2)[np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])]  # 6/10 right
    runs = [{"y": y, "transfer": perfect, "baseline": half}] * 3
    g = transfer_gain(runs, "accuracy", "classification")
    assert g["delta"] == pytest.approx(0.4) and g["ci95"] == pytest.approx([0.4, 0.4])
    assert g["verdict"] == "positive" and "3 seeds" in g["method"]
    g1 = transfer_gain(runs[:1], "accuracy", "classification", n_boot=300)
    assert g1["delta"] == pytest.approx(0.4) and "bootstrap" in g1["method"]
    neg = transfer_gain(
        [{"y": y, "transfer": half, "baseline": perfect}] * 2, "accuracy", "classification"
    )
    assert neg["verdict"] == "negative"


def test_metrics_and_details() -> None:
    y = np.array([0, 0, 1, 1])
    out = np.array([[2.0, 1.0], [0.0, 1.0], [0.0, 3.0], [0.0, 1.0]])
    m = compute_metrics(out, y, "classification")
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.75
    d = classification_details(out, y, ["neg", "pos"])
    assert d["confusion_matrix"] == [[1, 1], [0, 2]]
    assert d["per_class"]["neg"]["recall"] == 0.5 and d["per_class"]["pos"]["precision"] == 2 / 3
    r = compute_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), "regression")
    assert r["mae"] == pytest.approx(1 / 3) and r["rmse"] == pytest.approx(np.sqrt(1 / 3))
