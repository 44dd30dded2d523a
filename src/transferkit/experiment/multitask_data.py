"""Data of a multi-task run: per-task splits and the task-sampling training dataset.

Tasks (``tasks:`` in the config) name a dataset each (default ``data.target``). Tasks on
the *same* dataset share examples: the dataset is split once (by the group's first task)
and every task of the group takes its labels at the same rows — one batch then carries
several labels per example (e.g. ``digits`` class + parity, or a sentiment domain's
polarity + its continuous score via ``data_options: {target: score}``). Tasks on
different datasets form separate groups; a batch mixes groups and marks, per task, which
examples carry its label (``m_<task>``).

Sampling across groups, per epoch (``data.task_sampling``):

* ``proportional`` — every example of every group once (group share ∝ its size ``n_g``);
* ``round_robin`` — every group contributes ``max_g n_g`` examples (small groups cycle);
* ``temperature`` — ``sum_g n_g`` draws, group ``g`` with probability ∝ ``n_g^(1/T)``
  (``T = 1`` proportional, ``T -> inf`` uniform over groups).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from transferkit.data import load_full_dataset
from transferkit.data.files import TABLE_SUFFIXES, read_table, require_column
from transferkit.data.splits import make_splits
from transferkit.data.types import Dataset, Splits
from transferkit.errors import ConfigError, DataError
from transferkit.experiment.config import ExperimentConfig, TaskConfig
from transferkit.experiment.subsets import cap_positions


@dataclass
class TaskInfo:
    """One task as the method and the report see it."""

    name: str
    kind: str  # "classification" | "multilabel" | "regression"
    classes: list[str] | None  # class names, or the K label names of a multilabel task
    weight: float
    group: int

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.classes or [])


#: The multi-label digit attributes of ``derive: attributes`` (label ``k`` of digit ``d``):
#: ``even`` (d % 2 == 0), ``greater_than_4`` (d > 4), ``prime`` (d in {2, 3, 5, 7}),
#: ``closed_loop`` (a closed loop in the usual glyph: d in {0, 6, 8, 9}) and
#: ``multiple_of_3`` (d % 3 == 0, so 0 counts).
DIGIT_ATTRIBUTES: dict[str, frozenset[int]] = {
    "even": frozenset({0, 2, 4, 6, 8}),
    "greater_than_4": frozenset({5, 6, 7, 8, 9}),
    "prime": frozenset({2, 3, 5, 7}),
    "closed_loop": frozenset({0, 6, 8, 9}),
    "multiple_of_3": frozenset({0, 3, 6, 9}),
}


def attribute_matrix() -> np.ndarray:
    """``A`` ``[10, K]`` int64: ``A[d, k] = 1`` when digit ``d`` has attribute ``k``."""
    return np.asarray(
        [[int(d in members) for members in DIGIT_ATTRIBUTES.values()] for d in range(10)],
        dtype=np.int64,
    )


def digit_attributes(ds: Dataset, task: TaskConfig) -> Dataset:
    """``derive: attributes``: multi-hot ``y`` ``[N, K]`` (K = 5) from digit classes 0-9.

    Needs a classification dataset whose class names are the digits ``"0"``..``"9"``
    (``digits``, ``mnist5k``, ...); ``y[i] = A[digit_i]`` with ``A`` from
    :func:`attribute_matrix`.
    """
    where, names = f"tasks[{task.name}].derive", [str(c) for c in ds.classes or []]
    digits = [int(c) if c.strip().isdigit() else -1 for c in names]
    if ds.task != "classification" or not digits or not all(0 <= d <= 9 for d in digits):
        raise ConfigError(
            f"task {task.name!r}: derive='attributes' needs digit classes 0-9, but the data is "
            f"{ds.task} with classes {names[:10] or None}",
            where=where,
            fix="derive attributes only from a digit dataset (digits, mnist5k), or give "
            "your own 0/1 columns with labels_from: [col_a, col_b]",
        )
    table = attribute_matrix()[np.asarray(digits, dtype=np.int64)]
    y = table[np.asarray(ds.y, dtype=np.int64)]
    return replace(ds, y=y, classes=list(DIGIT_ATTRIBUTES), task="multilabel")  # type: ignore[arg-type]


def table_path(data: Any, task: TaskConfig) -> str:
    """The table file of a ``labels_from`` task (its ``data`` spec must name one)."""
    path = data.get("path") if isinstance(data, Mapping) else data
    if path is None or Path(str(path)).suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError(
            f"task {task.name!r}: labels_from reads columns of a table, but its data is {data!r}",
            where=f"tasks[{task.name}].labels_from",
            fix=f"give the task a table file ({', '.join(TABLE_SUFFIXES)}) as data",
        )
    return str(path)


def labels_from_columns(ds: Dataset, task: TaskConfig) -> Dataset:
    """``labels_from: [c_1..c_K]``: multi-hot ``y`` ``[N, K]`` from 0/1 table columns.

    The loader keeps every table row in order, so row ``i`` of the table is example ``i``.
    """
    assert task.labels_from is not None
    path = str(ds.meta["table"])
    df = read_table(Path(path), str(ds.meta.get("encoding", "utf-8")))
    cols = []
    for c in task.labels_from:
        col = require_column(df, c, f"tasks[{task.name}].labels_from", path)
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isin(v, (0.0, 1.0)))
        if len(bad):
            raise DataError(
                f"task {task.name!r}: column {c!r} holds {col.iloc[bad[0]]!r}, not 0 or 1",
                where=f"{path}, row {bad[0] + 1}, column {c!r}",
                fix="labels_from columns must hold only 0 and 1",
            )
        cols.append(v.astype(np.int64))
    if len(df) != len(ds):
        raise DataError(
            f"task {task.name!r}: the table has {len(df)} rows but the dataset {len(ds)}",
            where=path,
            fix="use a plain table file as the task's data",
        )
    y = np.stack(cols, axis=1)
    return replace(ds, y=y, classes=list(task.labels_from), task="multilabel")  # type: ignore[arg-type]


def derive_labels(ds: Dataset, task: TaskConfig) -> Dataset:
    """Apply ``task.derive``: parity of numeric class names, or ``value > threshold``.

    ``greater_than`` reads numeric class names (classification) or the raw targets
    (regression): e.g. a sentiment score with ``threshold: 0`` gives its polarity.
    """
    if task.labels_from is not None:
        return labels_from_columns(ds, task)
    if task.derive is None:
        return ds
    assert ds.y is not None
    if task.derive == "attributes":
        return digit_attributes(ds, task)
    if ds.task == "regression":
        v = np.asarray(ds.y, dtype=np.float64)
    else:
        try:
            values = np.asarray([float(c) for c in ds.classes or []])
        except ValueError:
            raise ConfigError(
                f"task {task.name!r}: derive={task.derive!r} needs numeric class names, got "
                f"{(ds.classes or [])[:5]}",
                where=f"tasks[{task.name}].derive",
                fix="derive only from numeric classes (e.g. digits) or regression targets",
            ) from None
        v = values[np.asarray(ds.y, dtype=np.int64)]
    if task.derive == "parity":
        y, classes = np.rint(v).astype(np.int64) % 2, ["even", "odd"]
    else:
        th = task.threshold
        y, classes = (v > th).astype(np.int64), [f"<= {th:g}", f"> {th:g}"]
    if len(np.unique(y)) < 2:
        raise DataError(
            f"task {task.name!r}: derived labels have a single class",
            where=f"tasks[{task.name}].threshold",
            fix="choose a threshold inside the range",
        )
    return replace(ds, y=y, classes=classes, task="classification")


def _group_key(cfg: ExperimentConfig, t: TaskConfig) -> str:
    data = t.data if t.data is not None else cfg.data.target
    return json.dumps(data, sort_keys=True, default=str)


def _load_task_full(cfg: ExperimentConfig, t: TaskConfig) -> tuple[Dataset, Dataset]:
    """``(derived, raw)``: the task's labels, and the loaded dataset they came from."""
    data = t.data if t.data is not None else cfg.data.target
    opts = {**(cfg.data.target_options if t.data is None else {}), **t.data_options}
    raw = load_full_dataset(data, **opts)
    if t.labels_from is not None:
        raw.meta.setdefault("table", table_path(data, t))
        raw.meta.setdefault("encoding", opts.get("encoding", "utf-8"))
    return derive_labels(raw, t), raw


def _same_examples(a: Dataset, b: Dataset) -> bool:
    if len(a) != len(b):
        return False
    if isinstance(a.x, np.ndarray) and isinstance(b.x, np.ndarray):
        return a.x.shape == b.x.shape and bool(np.array_equal(a.x, b.x))
    return list(a.x) == list(b.x)


def _split_group(
    cfg: ExperimentConfig, fulls: list[Dataset], names: list[str], seed: int, split_on: Dataset
) -> list[Splits]:
    """Split ``split_on`` (the group's first dataset, with one label per example: the raw
    labels when the first task is multi-label); give every task the same rows."""
    d = cfg.data
    base = make_splits(
        split_on,
        seed=seed,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        label_budget=d.label_budget,
        max_examples=d.max_examples,
    )
    for full, name in zip(fulls[1:], names[1:], strict=True):
        if not _same_examples(fulls[0], full):
            raise DataError(
                f"tasks {names[0]!r} and {name!r} name the same dataset but their examples differ",
                where=f"tasks[{name}].data_options",
                fix="give tasks on different example sets different datasets",
            )
    pos = {
        "val": cap_positions(base.val, d.max_eval_examples, seed, d.label_budget),
        "test": cap_positions(base.test, d.max_eval_examples, seed, None),
    }
    out = []
    for full in fulls:
        parts = {}
        for split in ("train", "val", "test"):
            ref = getattr(base, split)
            ds = full.subset(ref.meta["indices"])
            p = pos.get(split)
            parts[split] = ds if p is None else ds.subset(p)
        out.append(Splits(parts["train"], parts["val"], parts["test"]))
    return out


def load_task_splits(cfg: ExperimentConfig, seed: int) -> tuple[list[TaskInfo], dict[str, Splits]]:
    """Every task's splits for ``seed`` (tasks of one dataset share their rows)."""
    assert cfg.tasks
    keys = [_group_key(cfg, t) for t in cfg.tasks]
    groups = list(dict.fromkeys(keys))
    infos: list[TaskInfo] = []
    splits: dict[str, Splits] = {}
    for g, key in enumerate(groups):
        members = [t for t, k in zip(cfg.tasks, keys, strict=True) if k == key]
        loaded = [_load_task_full(cfg, t) for t in members]
        fulls = [f for f, _ in loaded]
        split_on = loaded[0][1] if fulls[0].task == "multilabel" else fulls[0]
        names = [t.name for t in members]
        for t, full, sp in zip(
            members, fulls, _split_group(cfg, fulls, names, seed, split_on), strict=True
        ):
            splits[t.name] = sp
            infos.append(TaskInfo(t.name, full.task, full.classes, t.weight, g))
    order = {t.name: i for i, t in enumerate(cfg.tasks)}
    infos.sort(key=lambda i: order[i.name])
    return infos, splits


class MultiTaskDataset(torch.utils.data.Dataset):
    """Training items ``{"x", "y_<task>", "m_<task>"}`` drawn from every task group.

    ``y_<task>`` is the label (0 / 0.0 filler when the example's group lacks the task) and
    ``m_<task>`` says whether it is real. The index map is rebuilt by :meth:`set_epoch`
    from ``(seed, epoch)``; its length never changes, so samplers and resume stay valid.
    """

    def __init__(
        self,
        tasks: list[TaskInfo],
        splits: dict[str, Splits],
        *,
        sampling: str = "proportional",
        temperature: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.tasks, self.sampling, self.temperature, self.seed = tasks, sampling, temperature, seed
        self.groups: list[tuple[Any, dict[str, np.ndarray]]] = []
        for g in sorted({t.group for t in tasks}):
            members = [t for t in tasks if t.group == g]
            x = splits[members[0].name].train.x
            ys = {t.name: _train_labels(splits[t.name].train.y, t.kind) for t in members}
            self.groups.append((x, ys))
        self.sizes = np.asarray([len(ys[next(iter(ys))]) for _, ys in self.groups])
        if (self.sizes == 0).any():
            raise DataError(
                "a task group has no training examples",
                where="tasks",
                fix="check each task's dataset and label budget",
            )
        self.length = int(
            self.sizes.max() * len(self.sizes) if sampling == "round_robin" else self.sizes.sum()
        )
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Rebuild the ``(group, row)`` map for ``epoch`` (deterministic)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self.sampling == "temperature":
            p = self.sizes.astype(np.float64) ** (1.0 / self.temperature)
            counts = rng.multinomial(self.length, p / p.sum())
        elif self.sampling == "round_robin":
            counts = np.full(len(self.sizes), self.sizes.max())
        else:
            counts = self.sizes
        g_ids, rows = [], []
        for g, (n, c) in enumerate(zip(self.sizes, counts, strict=True)):
            reps = -(-int(c) // int(n)) if c else 0
            order = np.concatenate([rng.permutation(n) for _ in range(reps)]) if reps else []
            rows.append(np.asarray(order[: int(c)], dtype=np.int64))
            g_ids.append(np.full(int(c), g, dtype=np.int64))
        self.map = np.stack([np.concatenate(g_ids), np.concatenate(rows)], axis=1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        g, j = (int(v) for v in self.map[i])
        x, ys = self.groups[g]
        item: dict[str, Any] = {"x": x[j]}
        for t in self.tasks:
            has = t.name in ys
            item[f"y_{t.name}"] = ys[t.name][j] if has else _filler(t)
            item[f"m_{t.name}"] = has
        return item


def _train_labels(y: Any, kind: str) -> np.ndarray:
    """Training labels: multi-hot rows ``[N, K]`` as float32 (BCE targets)."""
    return np.asarray(y, dtype=np.float32) if kind == "multilabel" else np.asarray(y)


def _filler(t: TaskInfo) -> Any:
    """The label of an example whose group lacks task ``t`` (masked out by ``m_<task>``)."""
    if t.kind == "multilabel":
        return np.zeros(t.num_outputs, dtype=np.float32)
    return 0 if t.kind == "classification" else 0.0
