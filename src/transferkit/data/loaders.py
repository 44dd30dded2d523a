"""Torch datasets and collate functions that feed a :class:`Dataset` to the trainer.

Raw examples stay raw until collation, where the backbone's ``prepare`` turns a batch of
them into tensors (tokenising text, decoding and resizing images). Batches are dicts:

* ``{"x": prepare(raw batch), "y": LongTensor [B] | FloatTensor [B]}`` for labelled data,
  ``{"x": ...}`` for unlabelled data;
* ``{"x": ..., "y": ..., "x_t": prepare(target raw batch)}`` for domain adaptation
  (:class:`PairedDataset`).

Numpy image arrays are stacked into one ``[B, H, W(, C)]`` array before ``prepare``.
Everything is deterministic given the seeds; no worker processes are needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from transferkit.data.types import Dataset
from transferkit.errors import DataError

Prepare = Callable[[Any], Any]


class ExampleDataset(torch.utils.data.Dataset):
    """Index a :class:`Dataset`: item ``i`` is ``(raw_x, y)``, or ``raw_x`` when unlabelled."""

    def __init__(self, dataset: Dataset, *, with_labels: bool = True) -> None:
        self.dataset = dataset
        self.with_labels = with_labels and dataset.y is not None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        x = self.dataset.x[i]
        if not self.with_labels:
            return x
        assert self.dataset.y is not None
        return x, self.dataset.y[i]


class PairedDataset(torch.utils.data.Dataset):
    """Labelled source examples paired with target examples for domain adaptation.

    The length is ``len(source)``. Source item ``i`` is paired with target example
    ``perm[(i + epoch * len(source)) % len(target)]``, where ``perm`` is a permutation of the
    target indices drawn once from ``seed``: within ``len(target)`` consecutive source items
    every target example is used once, and :meth:`set_epoch` moves the pairing along.
    Items are dicts ``{"x": raw source, "y": source label, "x_t": raw target}``.
    """

    def __init__(self, source: Dataset, target: Dataset, *, seed: int = 0) -> None:
        if source.y is None:
            raise DataError(
                "the source dataset of a paired loader needs labels",
                where=f"dataset {source.name}",
                fix="load a labelled source",
            )
        if len(source) == 0 or len(target) == 0:
            raise DataError(
                "paired loader needs non-empty source and target datasets",
                where=f"source {source.name} ({len(source)}), target {target.name} ({len(target)})",
                fix="give both domains at least one example",
            )
        self.source = source
        self.target = target
        self.perm = np.random.default_rng(seed).permutation(len(target))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shift the source -> target pairing (call once per epoch for fresh pairs)."""
        self.epoch = int(epoch)

    def target_index(self, i: int) -> int:
        return int(self.perm[(i + self.epoch * len(self.source)) % len(self.target)])

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        assert self.source.y is not None
        return {
            "x": self.source.x[i],
            "y": self.source.y[i],
            "x_t": self.target.x[self.target_index(i)],
        }


def stack_raw(raw: Sequence[Any]) -> Any:
    """Stack numpy examples into one array; leave strings / paths as a list."""
    if raw and isinstance(raw[0], np.ndarray):
        return np.stack(raw)
    return list(raw)


def label_tensor(ys: Sequence[Any]) -> torch.Tensor:
    """Integer labels -> LongTensor ``[B]``; real-valued targets -> FloatTensor ``[B]``."""
    arr = np.asarray(ys)
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return torch.as_tensor(arr.astype(np.int64))
    return torch.as_tensor(arr.astype(np.float32))


class collate_with:  # lower-case: it is used like a function, collate_with(prepare)
    """Collate function for ``DataLoader``: raw items -> ``{"x": prepare(...), "y": ...}``.

    A class rather than a closure so that it pickles (for worker processes) whenever
    ``prepare`` does. Items may be ``(raw_x, y)`` tuples, raw examples, or dicts whose
    ``x*`` keys are inputs and whose other keys are labels.
    """

    def __init__(self, prepare: Prepare) -> None:
        self.prepare = prepare

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        first = items[0]
        if isinstance(first, dict):
            return {k: self._field(k, [it[k] for it in items]) for k in first}
        if isinstance(first, tuple) and len(first) == 2:
            return {
                "x": self.prepare(stack_raw([it[0] for it in items])),
                "y": label_tensor([it[1] for it in items]),
            }
        return {"x": self.prepare(stack_raw(list(items)))}

    def _field(self, key: str, values: list[Any]) -> Any:
        if key.startswith("x"):
            return self.prepare(stack_raw(values))
        return label_tensor(values)


def make_loader(
    dataset: Dataset | torch.utils.data.Dataset,
    prepare: Prepare,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over ``dataset`` whose shuffling order is fixed by ``seed``."""
    ds = ExampleDataset(dataset) if isinstance(dataset, Dataset) else dataset
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_with(prepare),
    )


def make_paired_loader(
    source: Dataset,
    target: Dataset,
    prepare: Prepare,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of ``{"x", "y", "x_t"}`` batches (see :class:`PairedDataset`)."""
    return make_loader(
        PairedDataset(source, target, seed=seed),
        prepare,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
