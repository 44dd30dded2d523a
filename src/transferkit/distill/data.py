"""Datasets and collation that carry teacher outputs (or teacher inputs) into batches.

Both datasets yield dict items, which :class:`transferkit.data.loaders.collate_with`
turns into batches: keys starting with ``"x"`` are prepared inputs, the others become
tensors (integer labels -> ``LongTensor [B]``, float arrays -> ``FloatTensor [B, ...]``).

* :class:`TeacherCachedDataset`: ``{"x", "y"?, "t_logits", "t_embed", "t_feats_<k>"...}``,
  replaying cached teacher outputs (:func:`~transferkit.distill.cache.teacher_outputs`);
* :class:`TeacherInputDataset`: ``{"x", "x_teacher", "y"?}`` for a live teacher whose
  preprocessing differs from the student's; :class:`DistillCollate` prepares ``"x"`` with
  the student's ``prepare`` and ``"x_teacher"`` with the teacher's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from transferkit.data.loaders import Prepare, collate_with, stack_raw
from transferkit.data.types import Dataset
from transferkit.errors import DataError

__all__ = ["DistillCollate", "TeacherCachedDataset", "TeacherInputDataset"]


class TeacherCachedDataset(torch.utils.data.Dataset):
    """Examples of ``dataset`` with the cached teacher outputs of the same index.

    Args:
        dataset: the training set (the one the outputs were computed on, same order).
        outputs: ``{key: array [N, ...]}`` from ``teacher_outputs``.
        with_labels: include ``"y"`` when the dataset has labels.
    """

    def __init__(
        self, dataset: Dataset, outputs: Mapping[str, np.ndarray], *, with_labels: bool = True
    ) -> None:
        for key, arr in outputs.items():
            if key.startswith("x") or key == "y":
                raise DataError(
                    f"teacher output key {key!r} clashes with the input/label keys",
                    where="TeacherCachedDataset(outputs)",
                    fix='name teacher outputs "t_..."',
                )
            if len(arr) != len(dataset):
                raise DataError(
                    f"teacher output {key!r} has {len(arr)} rows for {len(dataset)} examples",
                    where=f"dataset {dataset.name}",
                    fix="compute the teacher outputs on this very dataset (same order)",
                )
        self.dataset = dataset
        self.outputs = dict(outputs)
        self.with_labels = with_labels and dataset.y is not None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"x": self.dataset.x[i]}
        if self.with_labels:
            assert self.dataset.y is not None
            item["y"] = self.dataset.y[i]
        for key, arr in self.outputs.items():
            item[key] = arr[i]
        return item


class TeacherInputDataset(torch.utils.data.Dataset):
    """Items ``{"x": raw, "x_teacher": the same raw, "y"?}`` for a live teacher."""

    def __init__(self, dataset: Dataset, *, with_labels: bool = True) -> None:
        self.dataset = dataset
        self.with_labels = with_labels and dataset.y is not None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        raw = self.dataset.x[i]
        item: dict[str, Any] = {"x": raw, "x_teacher": raw}
        if self.with_labels:
            assert self.dataset.y is not None
            item["y"] = self.dataset.y[i]
        return item


class DistillCollate(collate_with):
    """``collate_with`` that prepares ``"x_teacher"`` with the teacher's own ``prepare``."""

    def __init__(self, prepare: Prepare, teacher_prepare: Prepare) -> None:
        super().__init__(prepare)
        self.teacher_prepare = teacher_prepare

    def _field(self, key: str, values: list[Any]) -> Any:
        if key == "x_teacher":
            return self.teacher_prepare(stack_raw(values))
        return super()._field(key, values)
