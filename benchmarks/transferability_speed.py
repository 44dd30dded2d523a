"""Speed of the transferability scores on 10,000 x 1,024 features with 10 classes.

Features are float32 ``[N, D]``: a class-dependent mean (``sep * M[y]``, ``M`` standard
normal, ``sep = 0.05`` so classes overlap: a linear fit reaches ~0.75 training accuracy,
not 1.0) plus unit Gaussian noise, the size of pooled features of a mid-sized backbone on a
small target set. Each score is timed on the same data, and so is the reference: a plain
scikit-learn ``LogisticRegression()`` fit (lbfgs, default ``max_iter=100``), the cheapest
thing a user would otherwise do to check the features. Absolute times on the shared 2-core
machines are noisy (other processes compete for the cores), so the ratio score / logistic
fit, measured in the same run, is what to compare. Reference fits run before and after
the scores and their median is used; with ``--repeats R`` every timing is a median of R.

    .venv/bin/python benchmarks/transferability_speed.py
    .venv/bin/python benchmarks/transferability_speed.py --scores logme hscore --repeats 3

Target (issue "transferability scores"): LogME in a few seconds on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from transferkit.diagnostics.transferability import SCORES

DEFAULT_SCORES = ["logme", "hscore", "hscore_shrinkage", "gbc", "nleep", "leep", "nce"]


def make_data(
    n: int, d: int, k: int, sep: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``[n, d]`` float32, labels ``[n]`` and source probabilities ``[n, 2k]``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    f = (sep * rng.normal(size=(k, d))[y] + rng.normal(size=(n, d))).astype(np.float32)
    logits = f[:, : 2 * k].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return f, y, probs / probs.sum(axis=1, keepdims=True)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall seconds of ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def logistic_fit(f: np.ndarray, y: np.ndarray) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(LogisticRegression().fit(f, y).score(f, y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--sep", type=float, default=0.05, help="class-mean scale")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scores", nargs="+", default=DEFAULT_SCORES, choices=SCORES.names())
    args = ap.parse_args()

    f, y, probs = make_data(args.n, args.d, args.classes, args.sep, args.seed)
    print(f"features {f.shape} float32, {args.classes} classes, repeats={args.repeats}")
    ref_before, acc = timed(lambda: logistic_fit(f, y), args.repeats)
    rows = []
    for name in args.scores:
        score = SCORES.get(name)
        sec, value = timed(lambda s=score: s(f, y, source_probs=probs), args.repeats)
        rows.append((name, sec, value))
    ref_after, _ = timed(lambda: logistic_fit(f, y), args.repeats)
    ref = statistics.median([ref_before, ref_after])
    print(
        f"  LogisticRegression fit   {ref:8.2f} s  (before {ref_before:.2f}, after "
        f"{ref_after:.2f}; train acc {acc:.3f})"
    )
    for name, sec, value in rows:
        print(f"  {name:<24} {sec:8.2f} s  ratio {sec / ref:6.3f}  score {value:.5g}")


if __name__ == "__main__":
    main()
