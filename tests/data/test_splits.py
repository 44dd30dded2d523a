"""Deterministic stratified splits, label budgets and subsampling."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.data import Dataset, load_dataset, make_splits
from transferkit.errors import ConfigError, DataError


def _toy(counts: list[int], task: str = "classification") -> Dataset:
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)]).astype(np.int64)
    x = np.arange(len(y) * 2, dtype=np.float32).reshape(len(y), 2)
    if task == "regression":
        return Dataset("toy", "tabular", x, y.astype(np.float32), task="regression")
    return Dataset("toy", "tabular", x, y, classes=[f"c{k}" for k in range(len(counts))])


def _idx(ds: Dataset) -> list[int]:
    return ds.meta["indices"].tolist()


def test_same_seed_same_split_other_seed_other_split() -> None:
    ds = _toy([60, 40])
    a, b = make_splits(ds, seed=5), make_splits(ds, seed=5)
    c = make_splits(ds, seed=6)
    for part in ("train", "val", "test"):
        assert _idx(getattr(a, part)) == _idx(getattr(b, part))
    assert _idx(a.test) != _idx(c.test)


def test_splits_partition_the_data_with_the_asked_sizes() -> None:
    ds = _toy([60, 40])
    s = make_splits(ds, seed=0, val_fraction=0.15, test_fraction=0.2)
    parts = [_idx(s.train), _idx(s.val), _idx(s.test)]
    assert sorted(i for p in parts for i in p) == list(range(100))
    assert [len(p) for p in parts] == [65, 15, 20]
    assert s.unlabelled is None
    # rows travel with their labels
    assert np.array_equal(s.test.x, ds.x[s.test.meta["indices"]])
    assert np.array_equal(s.test.y, ds.y[s.test.meta["indices"]])


def test_splits_are_stratified() -> None:
    s = make_splits(_toy([80, 20]), seed=1, val_fraction=0.25, test_fraction=0.25)
    assert np.bincount(s.test.y).tolist() == [20, 5]
    assert np.bincount(s.val.y).tolist() == [20, 5]
    assert np.bincount(s.train.y).tolist() == [40, 10]


def test_label_budget_counts_and_unlabelled_pool() -> None:
    ds = _toy([50, 30, 20])
    s = make_splits(ds, seed=2, label_budget=4)
    assert np.bincount(s.train.y).tolist() == [4, 4, 4]
    assert s.unlabelled is not None and s.unlabelled.y is None
    full = make_splits(ds, seed=2)
    assert sorted(_idx(s.train) + _idx(s.unlabelled)) == _idx(full.train)
    assert _idx(s.val) == _idx(full.val) and _idx(s.test) == _idx(full.test)
    again = make_splits(ds, seed=2, label_budget=4)
    assert _idx(again.train) == _idx(s.train)
    assert _idx(make_splits(ds, seed=3, label_budget=4).train) != _idx(s.train)


def test_budget_larger_than_a_class_suggests_the_maximum() -> None:
    s = make_splits(_toy([50, 10]), seed=0)
    smallest = int(np.bincount(s.train.y).min())
    with pytest.raises(DataError) as err:
        make_splits(_toy([50, 10]), seed=0, label_budget=smallest + 1)
    assert f"label_budget <= {smallest}" in err.value.fix
    assert "'c1'" in err.value.what
    assert make_splits(_toy([50, 10]), seed=0, label_budget=smallest).train.y.size == 2 * smallest


def test_max_examples_subsamples_stratified_before_splitting() -> None:
    s = make_splits(_toy([300, 100]), seed=0, max_examples=40)
    ys = np.concatenate([s.train.y, s.val.y, s.test.y])
    assert len(ys) == 40 and np.bincount(ys).tolist() == [30, 10]
    assert make_splits(_toy([30, 10]), seed=0, max_examples=1000).train.y.size == 26


def test_regression_splits_and_total_budget() -> None:
    s = make_splits(_toy([50, 50], task="regression"), seed=0, label_budget=7)
    assert s.train.task == "regression" and len(s.train) == 7
    assert len(s.unlabelled) == 65 - 7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"test_fraction": 1.2}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "nothing to train"),
        ({"label_budget": 0}, "label_budget"),
        ({"seed": -1}, "seed"),
        ({"max_examples": 1}, "max_examples"),
    ],
)
def test_bad_split_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_splits(_toy([20, 20]), **kwargs)


def test_too_rare_class_is_reported_with_counts() -> None:
    with pytest.raises(DataError) as err:
        make_splits(_toy([40, 1]), seed=0)
    assert "c1: 1" in err.value.what


def test_load_dataset_digits_determinism_and_budget(data_cache) -> None:
    a = load_dataset("digits", seed=11, label_budget=5, max_examples=600)
    b = load_dataset("digits", seed=11, label_budget=5, max_examples=600)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.y, b.test.y)
    assert np.bincount(a.train.y).tolist() == [5] * 10
    assert a.info["sizes"] == {"train": 50, "val": 90, "test": 120, "unlabelled": 340}
