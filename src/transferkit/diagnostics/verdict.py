"""Did transfer help? The transfer gain, its confidence interval and the verdict.

``delta = m(transfer) - m(baseline)`` for the primary metric ``m`` (sign flipped for
metrics where lower is better, so a positive delta always means "transfer is better").

* Several seeds (n >= 2): per-seed deltas ``d_s`` (transfer and baseline trained with the
  same seed and the same split), and the Student-t interval
  ``mean(d) +- t_{(1+c)/2, n-1} * sd(d) / sqrt(n)``.
* One seed: a paired bootstrap over the test set: resample test indices with replacement
  ``B`` times and recompute the metric difference on the same resampled examples for both
  models; the interval is the (1-c)/2 and (1+c)/2 percentiles (Efron & Tibshirani 1993).

Verdict: ``positive`` if the interval lies above 0, ``negative`` (negative transfer) if it
lies below 0, else ``inconclusive``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from transferkit.diagnostics.metrics import higher_is_better, metric_fn, to_labels


def verdict_from_interval(lo: float, hi: float) -> str:
    """``positive`` when ``lo > 0``, ``negative`` when ``hi < 0``, else ``inconclusive``."""
    if lo > 0:
        return "positive"
    if hi < 0:
        return "negative"
    return "inconclusive"


def t_interval(deltas: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``deltas`` (needs >= 2 values)."""
    d = np.asarray(deltas, dtype=np.float64)
    if d.size < 2:
        raise ValueError("a t interval needs at least 2 values")
    half = stats.t.ppf((1 + confidence) / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def paired_bootstrap(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    metric: str,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(delta, lo, hi)`` of ``metric(a) - metric(b)`` with a paired bootstrap over examples.

    ``pred_a``/``pred_b`` are hard labels (classification) or values (regression), ``[N]``.
    """
    fn = metric_fn(metric)
    sign = 1.0 if higher_is_better(metric) else -1.0
    delta = sign * (fn(y, pred_a) - fn(y, pred_b))
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs[i] = sign * (fn(y[idx], pred_a[idx]) - fn(y[idx], pred_b[idx]))
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(delta), float(lo), float(hi)


def _hard(outputs: np.ndarray, task: str) -> np.ndarray:
    return to_labels(outputs) if task == "classification" else np.asarray(outputs).reshape(-1)


def transfer_gain(
    runs: Sequence[dict[str, Any]],
    metric: str,
    task: str,
    confidence: float = 0.95,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Transfer gain over seeds.

    Args:
        runs: one dict per seed with ``y`` (test labels ``[N]``), ``transfer`` and
            ``baseline`` (outputs of each model on the same test set).
        metric: the metric compared (``accuracy``, ``r2``, ...).
        task: ``classification`` or ``regression``.

    Returns:
        ``{"delta", "ci95": [lo, hi], "verdict", "method", "per_seed": [...]}``.
    """
    fn = metric_fn(metric)
    sign = 1.0 if higher_is_better(metric) else -1.0
    per_seed = []
    for r in runs:
        a, b = _hard(r["transfer"], task), _hard(r["baseline"], task)
        per_seed.append(sign * (fn(r["y"], a) - fn(r["y"], b)))
    if len(runs) >= 2:
        lo, hi = t_interval(per_seed, confidence)
        delta = float(np.mean(per_seed))
        how = f"Student-t interval over {len(runs)} seeds"
    else:
        r = runs[0]
        delta, lo, hi = paired_bootstrap(
            r["y"],
            _hard(r["transfer"], task),
            _hard(r["baseline"], task),
            metric,
            n_boot=n_boot,
            confidence=confidence,
        )
        how = f"paired bootstrap over {len(r['y'])} test examples ({n_boot} resamples)"
    return {
        "delta": delta,
        "ci95": [lo, hi],
        "verdict": verdict_from_interval(lo, hi),
        "method": how,
        "confidence": confidence,
        "per_seed": per_seed,
    }
