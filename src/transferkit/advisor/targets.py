"""The target (and source) data the advisor measures: loading, capping, label statistics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.types import Dataset, Splits
from transferkit.errors import DataError
from transferkit.experiment.subsets import cap

DataSpec = str | Path | Mapping[str, Any]


def load_splits(
    data: DataSpec | Splits, *, seed: int = 0, label_budget: int | None = None
) -> Splits:
    """``data`` as deterministic splits (a :class:`Splits` is passed through unchanged)."""
    if isinstance(data, Splits):
        return data
    from transferkit.data import load_dataset

    return load_dataset(data, seed=seed, label_budget=label_budget)


def data_label(data: DataSpec | Splits) -> str:
    """A short display name for a data spec (the name, the path, or the splits' name)."""
    if isinstance(data, Splits):
        return data.train.name
    if isinstance(data, Mapping):
        return str(data.get("name") or data.get("path"))
    return str(data)


def labelled(ds: Dataset, role: str) -> Dataset:
    """``ds`` if it holds labels of at least two classes (or regression targets)."""
    if ds.y is None or len(ds) == 0:
        raise DataError(
            f"the {role} training split has no labelled examples",
            where=f"dataset {ds.name!r}",
            fix="give labelled data (a label column, a y array or class folders)",
        )
    if ds.task == "classification" and len(np.unique(ds.y)) < 2:
        raise DataError(
            f"the {role} training split holds a single class",
            where=f"dataset {ds.name!r}",
            fix="give data with at least two classes (or raise the label budget)",
        )
    return ds


def capped(ds: Dataset, max_examples: int | None, seed: int) -> Dataset:
    """At most ``max_examples`` rows, a seeded random subset (never the first rows)."""
    return cap(ds, max_examples, seed)


def label_stats(ds: Dataset) -> dict[str, Any]:
    """Labelled examples per class: ``{"per_class": {name: n}, "min", "median", "max"}``.

    Regression data (no classes) gives only ``{"n": N}``.
    """
    if ds.y is None:
        return {"n": 0}
    if ds.task != "classification":
        return {"n": len(ds)}
    k = max(ds.num_classes, int(np.max(ds.y)) + 1)
    counts = np.bincount(np.asarray(ds.y, dtype=np.int64), minlength=k)
    names = ds.classes or [str(i) for i in range(k)]
    return {
        "n": len(ds),
        "per_class": {str(names[i]): int(c) for i, c in enumerate(counts)},
        "min": int(counts.min()),
        "median": float(np.median(counts)),
        "max": int(counts.max()),
    }


def target_summary(splits: Splits) -> dict[str, Any]:
    """What the advice reports about the target: sizes, classes, labels per class, modality."""
    tr = splits.train
    return {
        "name": tr.name,
        "modality": tr.modality,
        "task": tr.task,
        "classes": tr.classes,
        "num_classes": tr.num_classes,
        "sizes": splits.info["sizes"],
        "labels_per_class": label_stats(tr),
    }
