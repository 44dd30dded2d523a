"""Deterministic, stratified train / validation / test splits and label budgets.

For ``N`` examples, ``round(test_fraction * N)`` go to test and ``round(val_fraction * N)``
to validation, both drawn stratified by class (classification) with
:func:`sklearn.model_selection.train_test_split` from one ``RandomState(seed)``: the same
seed always gives the same split. ``max_examples`` first draws a stratified subsample.

A ``label_budget`` of ``k`` keeps ``k`` labelled training examples per class (``k`` in
total for regression), drawn with ``numpy.random.default_rng(seed)``; the rest of the
training split goes, labels removed, to :attr:`Splits.unlabelled`.
"""

from __future__ import annotations

import numpy as np

from transferkit.data.types import Dataset, Splits
from transferkit.errors import ConfigError, DataError


def _check_args(
    n: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    label_budget: int | None,
    max_examples: int | None,
) -> None:
    if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ConfigError(
            f"seed must be an integer in [0, 2**32), got {seed!r}",
            where="seed",
            fix="use a non-negative integer seed such as 0",
        )
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < frac < 1:
            raise ConfigError(
                f"{name} must lie strictly between 0 and 1, got {frac}",
                where=name,
                fix="use e.g. 0.15 or 0.2",
            )
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} "
            "leaves nothing to train on",
            where="val_fraction, test_fraction",
            fix="keep their sum below 1 (e.g. 0.15 + 0.2)",
        )
    if label_budget is not None and label_budget < 1:
        raise ConfigError(
            f"label_budget must be a positive integer, got {label_budget}",
            where="label_budget",
            fix="use e.g. label_budget=16 or None",
        )
    if max_examples is not None and max_examples < 2:
        raise ConfigError(
            f"max_examples must be at least 2, got {max_examples}",
            where="max_examples",
            fix="use max_examples >= 2, or leave it unset for the whole dataset",
        )


def _class_counts(ds: Dataset, idx: np.ndarray) -> str:
    counts = np.bincount(ds.y[idx], minlength=ds.num_classes)
    assert ds.classes is not None
    return ", ".join(f"{c}: {int(k)}" for c, k in zip(ds.classes, counts, strict=True))


def _draw(
    ds: Dataset, idx: np.ndarray, n_out: int, rs: np.random.RandomState, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, drawn) with ``len(drawn) == n_out``, stratified by class."""
    from sklearn.model_selection import train_test_split  # slow import, only when splitting

    strat = ds.y[idx] if ds.task == "classification" else None
    try:
        rest, drawn = train_test_split(idx, test_size=n_out, stratify=strat, random_state=rs)
    except ValueError as exc:
        counts = f" (class counts: {_class_counts(ds, idx)})" if strat is not None else ""
        raise DataError(
            f"cannot draw a stratified {what} of {n_out} from {len(idx)} examples{counts}: {exc}",
            where=f"dataset {ds.name}",
            fix="every class needs a few examples in each split: add data, drop rare classes, "
            "or raise max_examples / the split fractions",
        ) from None
    return np.sort(rest), np.sort(drawn)


def apply_label_budget(
    ds: Dataset, train_idx: np.ndarray, budget: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled) training indices: ``budget`` per class, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    if ds.task != "classification":
        if budget > len(train_idx):
            raise DataError(
                f"label_budget={budget} exceeds the {len(train_idx)} training examples",
                where=f"dataset {ds.name}",
                fix=f"use label_budget <= {len(train_idx)}",
            )
        keep = rng.choice(train_idx, size=budget, replace=False)
    else:
        assert ds.y is not None and ds.classes is not None
        members = [train_idx[ds.y[train_idx] == c] for c in range(ds.num_classes)]
        smallest = min(len(m) for m in members)
        if budget > smallest:
            worst = ds.classes[int(np.argmin([len(m) for m in members]))]
            raise DataError(
                f"label_budget={budget} per class is more than class {worst!r} has in the "
                f"training split ({smallest})",
                where=f"dataset {ds.name} (training class counts: {_class_counts(ds, train_idx)})",
                fix=f"use label_budget <= {smallest}, or lower val_fraction/test_fraction",
            )
        keep = np.concatenate([rng.choice(m, size=budget, replace=False) for m in members])
    keep = np.sort(keep)
    return keep, np.setdiff1d(train_idx, keep)


def _tag(ds: Dataset, idx: np.ndarray, split: str) -> Dataset:
    sub = ds.subset(idx)
    sub.meta.update(split=split, indices=idx)
    return sub


def make_splits(
    ds: Dataset,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    label_budget: int | None = None,
    max_examples: int | None = None,
) -> Splits:
    """Split a labelled Dataset into train / val / test (+ unlabelled with a budget).

    Each split's ``meta["indices"]`` holds its example indices into ``ds`` (sorted).
    """
    if ds.y is None:
        raise DataError(
            "the dataset has no labels to split on",
            where=f"dataset {ds.name}",
            fix="load a labelled dataset",
        )
    _check_args(len(ds), seed, val_fraction, test_fraction, label_budget, max_examples)
    rs = np.random.RandomState(int(seed))
    idx = np.arange(len(ds))
    if max_examples is not None and max_examples < len(ds):
        _, idx = _draw(ds, idx, max_examples, rs, "subsample (max_examples)")
    n = len(idx)
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * n))
    if n - n_test - n_val < 1:
        raise DataError(
            f"{n} examples are too few for train/val/test splits",
            where=f"dataset {ds.name}",
            fix="use more examples",
        )
    rest, test_idx = _draw(ds, idx, n_test, rs, "test split")
    train_idx, val_idx = _draw(ds, rest, n_val, rs, "validation split")
    unlabelled = None
    if label_budget is not None:
        train_idx, pool = apply_label_budget(ds, train_idx, label_budget, seed)
        unlabelled = _tag(ds, pool, "unlabelled").unlabelled()
    return Splits(
        train=_tag(ds, train_idx, "train"),
        val=_tag(ds, val_idx, "val"),
        test=_tag(ds, test_idx, "test"),
        unlabelled=unlabelled,
    )
