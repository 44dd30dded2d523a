"""The two domains of a domain-adaptation run: labelled source, (mostly) unlabelled target.

``data.source`` names the labelled source dataset; ``data.target`` the target. The source
is split like the target (train / val / test, same fractions and seed). Both must share
the class set: when the names agree but the order differs the source labels are remapped
to the target's order; otherwise the run stops with a :class:`DataError` naming the
classes that do not match.

The adaptation set is every target *training* input with its label removed (the labelled
budget subset and the leftover pool alike): target labels never reach the adaptation
losses. Target validation labels are used only for the oracle shown next to the
label-free selection, and target test labels only for the final evaluation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from transferkit.data import load_dataset
from transferkit.data.types import Dataset, Splits
from transferkit.errors import DataError
from transferkit.experiment.config import ExperimentConfig
from transferkit.experiment.subsets import random_subset


def align_classes(source: Dataset, target: Dataset) -> Dataset:
    """``source`` with its labels expressed in the target's class order.

    Raises:
        DataError: the class sets differ, or either dataset is not classification.
    """
    if source.task != "classification" or target.task != "classification":
        raise DataError(
            "domain adaptation needs classification data in both domains",
            where=f"data.source {source.name!r} ({source.task}), "
            f"data.target {target.name!r} ({target.task})",
            fix="choose classification datasets for both domains",
        )
    s, t = list(source.classes or []), list(target.classes or [])
    if s == t:
        return source
    if sorted(s) != sorted(t):
        only_s = sorted(set(s) - set(t))
        only_t = sorted(set(t) - set(s))
        raise DataError(
            "source and target have different classes: "
            f"only in source {only_s}, only in target {only_t}",
            where=f"data.source {source.name!r} / data.target {target.name!r}",
            fix="use domains with the same label set (rename or drop classes in your files, "
            "or pass the same label mapping to both)",
        )
    mapping = np.asarray([t.index(c) for c in s], dtype=np.int64)
    assert source.y is not None
    return replace(source, y=mapping[np.asarray(source.y, dtype=np.int64)], classes=t)


def concat_raw(a: Any, b: Any) -> Any:
    """Concatenate two raw input collections of the same kind (lists or arrays)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.concatenate([a, b])
    return list(a) + list(b)


def adaptation_pool(target: Splits) -> Dataset:
    """Every target training input, unlabelled (budget subset + leftover pool)."""
    pool = target.train.unlabelled()
    if target.unlabelled is not None and len(target.unlabelled):
        pool = replace(pool, x=concat_raw(pool.x, target.unlabelled.x))
    return pool


def load_source_splits(cfg: ExperimentConfig, seed: int, target: Splits) -> Splits:
    """The labelled source domain's splits for ``seed``, classes aligned to the target.

    The source is never label-budgeted (it is the labelled domain); ``max_examples`` and
    ``max_eval_examples`` apply as for the target.
    """
    d = cfg.data
    assert d.source is not None
    src = load_dataset(
        d.source,
        seed=seed,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        max_examples=d.max_examples,
        **d.source_options,
    )
    if src.train.modality != target.train.modality:
        raise DataError(
            f"source is {src.train.modality} data but target is {target.train.modality}",
            where=f"data.source {src.train.name!r} / data.target {target.train.name!r}",
            fix="adapt between domains of the same modality",
        )
    return Splits(
        train=align_classes(src.train, target.train),
        val=align_classes(random_subset(src.val, d.max_eval_examples, seed + 104729), target.train),
        test=align_classes(
            random_subset(src.test, d.max_eval_examples, seed + 104729), target.train
        ),
    )
