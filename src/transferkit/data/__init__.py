"""Data: built-in and bring-your-own datasets, deterministic splits, a checksummed cache.

>>> from transferkit.data import load_dataset
>>> splits = load_dataset("digits", seed=0, label_budget=10)   # doctest: +SKIP
>>> splits.info["sizes"]                                        # doctest: +SKIP

``transferkit datasets`` prints :func:`list_datasets`.
"""

from __future__ import annotations

from typing import Any

from transferkit.data.builtin import DATASETS, BuiltinDataset, list_datasets
from transferkit.data.fetch import default_cache_dir, fetch_url, fetch_wheel_files
from transferkit.data.load import load_dataset, load_full_dataset
from transferkit.data.splits import apply_label_budget, make_splits
from transferkit.data.types import Dataset, Splits

_LOADERS = ("ExampleDataset", "PairedDataset", "collate_with", "make_loader", "make_paired_loader")


def __getattr__(name: str) -> Any:
    """Import the torch-based loaders lazily (``transferkit datasets`` needs no torch)."""
    if name in _LOADERS:
        from transferkit.data import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'transferkit.data' has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "BuiltinDataset",
    "Dataset",
    "ExampleDataset",
    "PairedDataset",
    "Splits",
    "apply_label_budget",
    "collate_with",
    "default_cache_dir",
    "fetch_url",
    "fetch_wheel_files",
    "list_datasets",
    "load_dataset",
    "load_full_dataset",
    "make_loader",
    "make_paired_loader",
    "make_splits",
]
