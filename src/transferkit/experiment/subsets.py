"""Deterministic evaluation subsets: cap a split's size (and its examples per class)."""

from __future__ import annotations

from typing import Any

import numpy as np

from transferkit.data.types import Dataset


def cap_positions(
    ds: Dataset, n: int | None, seed: int, per_class: int | None = None
) -> np.ndarray | None:
    """Sorted positions of at most ``per_class`` per class, then at most ``n`` overall.

    None when nothing is dropped. The draw depends on ``seed`` only, so every task that
    shares the rows of ``ds`` can take the same positions.
    """
    rng = np.random.default_rng(seed + 7919)
    idx = rng.permutation(len(ds))
    if per_class is not None and ds.y is not None and ds.task == "classification":
        counts: dict[int, int] = {}
        keep = []
        for i in idx:
            c = int(ds.y[i])
            if counts.get(c, 0) < per_class:
                counts[c] = counts.get(c, 0) + 1
                keep.append(i)
        idx = np.asarray(keep, dtype=np.int64)
    if n is not None:
        idx = idx[:n]
    if len(idx) == len(ds) and per_class is None:
        return None
    return np.sort(idx)


def cap(ds: Dataset, n: int | None, seed: int, per_class: int | None = None) -> Dataset:
    """``ds`` restricted to :func:`cap_positions` (unchanged when nothing is dropped)."""
    pos = cap_positions(ds, n, seed, per_class)
    return ds if pos is None else ds.subset(pos)


def random_subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """At most ``n`` examples of ``ds`` drawn with ``seed`` (order kept; ``ds`` if it fits)."""
    if n is None or len(ds) <= n:
        return ds
    return ds.subset(np.sort(np.random.default_rng(seed).permutation(len(ds))[:n]))


#: at most this many unlabelled rows refine a transductive head (features held in float64)
UNLABELLED_CAP = 5000


def unlabelled_features(
    ctx: Any, method: Any, f_va: Any, f_te: Any, cache: Any
) -> tuple[np.ndarray, str]:
    """Unlabelled target features for a transductive head, and where they came from.

    The rows a label budget left over (a seeded subset of at most ``UNLABELLED_CAP``) when
    there are any; otherwise the val and test INPUTS (their labels are never read), which
    is transductive inference as used in few-shot evaluation.
    """
    pool = ctx.splits.unlabelled
    if pool is not None and len(pool) > 0:
        pool = random_subset(pool, UNLABELLED_CAP, ctx.seed)
        f_un = method.extract(pool.x, batch_size=ctx.cfg.train.eval_batch_size, cache_dir=cache)
        return np.array(f_un), f"unlabelled pool ({len(pool)} rows left over by data.label_budget)"
    return np.concatenate([np.array(f_va), np.array(f_te)]), "val + test inputs (labels unused)"
