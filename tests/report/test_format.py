"""Number formatting and the verdict sentence, against hand-written expectations."""

from __future__ import annotations

import pytest

from transferkit.report.format import (
    baseline_label,
    fmt_ci,
    fmt_delta,
    fmt_duration,
    fmt_metric,
    fmt_number,
    metric_label,
    verdict_class,
    verdict_sentence,
)

BASELINES = {
    "tfidf_logreg": {"description": "TF-IDF + logistic regression"},
    "random_init": {"description": "same architecture from random initialisation, same data"},
}


def test_verdict_sentence_positive_matches_the_documented_wording() -> None:
    gain = {"delta": 0.11, "ci95": [0.06, 0.16], "verdict": "positive", "baseline": "tfidf_logreg"}
    assert verdict_sentence(gain, BASELINES, "accuracy") == (
        "Transfer helped: +11.0 points accuracy vs the best target-only baseline "
        "(TF-IDF + logistic regression), 95% CI [+6.0, +16.0]."
    )


def test_verdict_sentence_negative_and_inconclusive() -> None:
    neg = {
        "delta": -0.042,
        "ci95": [-0.07, -0.013],
        "verdict": "negative",
        "baseline": "random_init",
        "metric": "macro_f1",
    }
    text = verdict_sentence(neg, BASELINES, "accuracy")
    # the long description is replaced by the key; the gain metric wins over the primary
    assert text.startswith(
        "Negative transfer: −4.2 points macro-F1 vs the best target-only "
        "baseline (random init), 95% CI [−7.0, −1.3]."
    )
    assert "baseline did better" in text
    inc = {
        "delta": 0.012,
        "ci95": [-0.02, 0.045],
        "verdict": "inconclusive",
        "metric": "r2",
        "confidence": 0.9,
    }
    text = verdict_sentence(inc, None, None)
    assert text.startswith(
        "Inconclusive: +0.012 R² vs the best target-only baseline, 90% CI [−0.020, +0.045]"
    )
    assert "includes zero" in text


def test_verdict_sentence_lower_is_better_metric_says_lower_or_higher() -> None:
    better = {"delta": 0.12, "ci95": [0.05, 0.19], "verdict": "positive", "metric": "mae"}
    assert "MAE 0.120 lower (better)" in verdict_sentence(better)
    assert "CI of the reduction [+0.050, +0.190]" in verdict_sentence(better)
    worse = {"delta": -0.3, "ci95": [-0.5, -0.1], "verdict": "negative", "metric": "mae"}
    assert "MAE 0.300 higher (worse)" in verdict_sentence(worse)


@pytest.mark.parametrize("gain", [None, {}, {"delta": None}, {"delta": "big"}, "positive"])
def test_verdict_sentence_without_a_usable_gain(gain: object) -> None:
    assert verdict_sentence(gain).startswith("No verdict")


def test_verdict_class() -> None:
    assert [verdict_class(v) for v in ("positive", "negative", "inconclusive", None, "x")] == [
        "positive",
        "negative",
        "inconclusive",
        "none",
        "none",
    ]


def test_metric_and_delta_formatting() -> None:
    assert fmt_metric("accuracy", 0.8123) == "81.23%"
    assert fmt_metric("r2", 0.41234) == "0.4123"
    assert fmt_metric("accuracy", None) == "—"
    assert fmt_metric("accuracy", float("nan")) == "NaN"
    assert fmt_delta("accuracy", 0.1149) == "+11.5"
    assert fmt_delta("accuracy", -0.05, unit=True) == "−5.0 pts"
    assert fmt_delta("rmse", 0.0204) == "+0.020"
    assert fmt_ci("accuracy", [0.06, 0.16]) == "[+6.0, +16.0]"
    assert fmt_ci("accuracy", [0.06]) == fmt_ci("accuracy", None) == "—"
    assert fmt_ci("accuracy", ["a", "b"]) == "—"


def test_number_formatting() -> None:
    assert fmt_number(3) == "3"
    assert fmt_number(123456) == "123,456"
    assert fmt_number(0.5) == "0.5000"
    assert fmt_number(1e-4) == "1.00e-04"
    assert fmt_number(2500.25) == "2,500.2"
    assert fmt_number(True) == "yes"
    assert fmt_number(float("inf")) == "∞"
    assert fmt_number(None) == "—"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (4.23, "4.2 s"),
        (59.96, "1 min 00 s"),
        (119.7, "2 min 00 s"),
        (123.4, "2 min 03 s"),
        (3599.6, "1 h 00 min"),
        (3725, "1 h 02 min"),
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_labels() -> None:
    assert metric_label("macro_f1") == "macro-F1"
    assert metric_label("val_accuracy") == "validation accuracy"
    assert metric_label("top_k_hits") == "top k hits"
    assert (
        baseline_label("tfidf_logreg", BASELINES["tfidf_logreg"]) == "TF-IDF + logistic regression"
    )
    assert baseline_label("random_init", BASELINES["random_init"]) == "random init"
    assert baseline_label("gbm", None) == "gbm"
