"""Formatting helpers for reports: numbers, durations, metric names and the verdict sentence.

Everything here returns plain (unescaped) text; the HTML layer escapes it. Fraction metrics
(accuracy, F1, ...) are shown as percentages and their differences in *points*
(``0.11 -> +11.0 points``); other metrics (R^2, MAE, ...) keep their own units.
"""

from __future__ import annotations

import math
from typing import Any

#: Metrics that live in [0, 1] and read best as percentages / points.
FRACTION_METRICS = frozenset(
    {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "micro_f1",
        "weighted_f1",
        "f1",
        "precision",
        "recall",
        "auc",
        "roc_auc",
        "top5_accuracy",
        "top1_accuracy",
    }
)
#: Metrics where a smaller value is better (the transfer-gain delta is sign-flipped for them).
LOWER_IS_BETTER = frozenset({"mae", "rmse", "mse", "loss", "error", "log_loss", "nll"})

_METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro-F1",
    "micro_f1": "micro-F1",
    "weighted_f1": "weighted F1",
    "r2": "R²",
    "mae": "MAE",
    "rmse": "RMSE",
    "mse": "MSE",
    "roc_auc": "ROC AUC",
    "auc": "AUC",
}
_VERDICT_HEAD = {
    "positive": "Transfer helped",
    "negative": "Negative transfer",
    "inconclusive": "Inconclusive",
}
MISSING = "—"


def is_number(x: Any) -> bool:
    """True for real numbers (bool excluded), including NaN and inf."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def metric_label(name: str) -> str:
    """Human label of a metric key: ``macro_f1 -> macro-F1``, ``val_accuracy -> val accuracy``."""
    if name.startswith("val_"):
        return "validation " + metric_label(name[4:])
    return _METRIC_LABELS.get(name, name.replace("_", " "))


def fmt_number(x: Any, digits: int = 4) -> str:
    """A scalar for a table: floats to ``digits`` significant decimals, ints as is."""
    if x is None:
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return "NaN" if math.isnan(x) else ("∞" if x > 0 else "−∞")
        if x != 0 and (abs(x) >= 1e7 or abs(x) < 1e-3):
            return f"{x:.{max(digits - 2, 1)}e}"
        return f"{x:,.1f}" if abs(x) >= 1000 else f"{x:.{digits}f}"
    return str(x)


def fmt_metric(name: str, value: Any) -> str:
    """A metric value: fractions as percentages (``0.8123 -> 81.23%``), others 4 decimals."""
    if not is_number(value):
        return MISSING if value is None else str(value)
    if name in FRACTION_METRICS and math.isfinite(value):
        return f"{100 * value:.2f}%"
    return fmt_number(float(value))


def fmt_delta(metric: str, delta: Any, signed: bool = True, unit: bool = False) -> str:
    """A metric difference: ``+11.0`` points for fractions (``+11.0 pts`` with ``unit``),
    ``+0.052`` otherwise."""
    if not is_number(delta) or not math.isfinite(delta):
        return MISSING if delta is None else fmt_number(float(delta))
    sign = "+" if signed else ""
    if metric in FRACTION_METRICS:
        return f"{100 * delta:{sign}.1f}".replace("-", "−") + (" pts" if unit else "")
    return f"{delta:{sign}.3f}".replace("-", "−")


def delta_unit(metric: str) -> str:
    """``points`` for fraction metrics, else the metric label."""
    return "points" if metric in FRACTION_METRICS else metric_label(metric)


def fmt_ci(metric: str, ci: Any) -> str:
    """``[+6.0, +16.0]`` from a ``[lo, hi]`` pair; the missing mark if malformed."""
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(map(is_number, ci))):
        return MISSING
    return f"[{fmt_delta(metric, ci[0])}, {fmt_delta(metric, ci[1])}]"


def fmt_duration(seconds: Any) -> str:
    """``4.2 s``, ``2 min 03 s``, ``1 h 05 min``."""
    if not is_number(seconds) or not math.isfinite(seconds):
        return MISSING
    s = float(seconds)
    if s < 59.95:
        return f"{s:.1f} s"
    if s < 3600 - 0.5:
        minutes, secs = divmod(round(s), 60)
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(round(s / 60), 60)
    return f"{hours} h {minutes:02d} min"


def baseline_label(name: str, info: Any) -> str:
    """Short readable name of a baseline: its description if short, else its key."""
    desc = info.get("description") if isinstance(info, dict) else None
    if isinstance(desc, str) and 0 < len(desc) <= 48:
        return desc
    return str(name).replace("_", " ")


def verdict_class(verdict: Any) -> str:
    """CSS class suffix for a verdict: positive / negative / inconclusive / none."""
    return verdict if verdict in _VERDICT_HEAD else "none"


def verdict_sentence(gain: Any, baselines: Any = None, primary: str | None = None) -> str:
    """One sentence that states the verdict, the gain and its interval.

    ``delta`` is oriented so that positive always means "transfer is better" (for
    lower-is-better metrics the caller's verdict module already flipped the sign).

    >>> verdict_sentence({"delta": 0.11, "ci95": [0.06, 0.16], "verdict": "positive",
    ...                   "baseline": "tfidf"}, {"tfidf": {"description": "TF-IDF"}}, "accuracy")
    'Transfer helped: +11.0 points accuracy vs the best target-only baseline (TF-IDF), 95% CI [+6.0, +16.0].'
    """  # noqa: E501
    if not isinstance(gain, dict) or not is_number(gain.get("delta")):
        return "No verdict: no target-only baseline was compared with the transfer method."
    metric = str(gain.get("metric") or primary or "metric")
    verdict = gain.get("verdict")
    head = _VERDICT_HEAD.get(verdict, "Verdict unknown")
    name = gain.get("baseline")
    info = baselines.get(name) if isinstance(baselines, dict) and name is not None else None
    against = "the best target-only baseline"
    if name == "source_only":
        against = "the source-only model (no adaptation)"
    elif name is not None:
        against += f" ({baseline_label(str(name), info)})"
    delta = float(gain["delta"])
    amount = f"{fmt_delta(metric, delta)} {delta_unit(metric)}"
    if metric in FRACTION_METRICS:
        amount += f" {metric_label(metric)}"
    elif metric in LOWER_IS_BETTER:
        way = "lower (better)" if delta >= 0 else "higher (worse)"
        amount = f"{metric_label(metric)} {fmt_delta(metric, abs(delta), signed=False)} {way}"
    conf = gain.get("confidence")
    level = f"{100 * conf:g}%" if is_number(conf) and 0 < conf < 1 else "95%"
    ci = "CI of the reduction" if metric in LOWER_IS_BETTER else "CI"
    text = f"{head}: {amount} vs {against}, {level} {ci} {fmt_ci(metric, gain.get('ci95'))}"
    if verdict == "negative":
        text += ". The target-only baseline did better"
    elif verdict == "inconclusive":
        text += ", which includes zero: no reliable difference"
    return text + "."
