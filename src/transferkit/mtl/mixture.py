"""Several labelled datasets mixed into one multi-task training stream.

Each *source* holds raw examples ``x`` and labels for one or more tasks. The mixture is a
map-style dataset whose item is a dict ``{"x": raw, "y_<task>": label, "m_<task>": bool}``
for EVERY task: a task the example's source does not label gets a placeholder label
(0, or zeros) and ``m_<task> = False``. ``transferkit.data.loaders.collate_with(prepare)``
turns a list of items into the batch :class:`~transferkit.methods.multitask.MultiTask`
expects (masks arrive as 0/1 integers, which it accepts).

How many examples of source ``i`` (``n_i`` examples) an epoch of ``N`` items holds:

* ``proportional``: every example once (``N = sum_i n_i``), the natural mixture;
* ``temperature``: ``N p_i`` with ``p_i = n_i^(1/T) / sum_k n_k^(1/T)`` (``T = 1`` is
  proportional, larger ``T`` flattens towards equal; e.g. Arivazhagan et al. 2019,
  https://arxiv.org/abs/1907.05019);
* ``equal``: ``N / S`` from each of the ``S`` sources (the limit ``T -> inf``; item-level
  round-robin over sources).

Within a source, examples are drawn without replacement from a permutation that
continues across epochs (a small source cycles, a large one is covered over several
epochs). The choice depends only on ``(seed, epoch)``; the trainer calls
:meth:`TaskMixture.set_epoch` at every epoch start, so runs and resumes are exact. The
trainer's loader shuffles the items, so batches mix the sources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from transferkit.data.types import Dataset
from transferkit.errors import DataError
from transferkit.mtl.tasks import TaskSpec

Sampling = Literal["proportional", "temperature", "equal"]


@dataclass
class Source:
    """Raw examples ``x`` (indexable, length ``n``) and ``labels`` ``{task: array [n, ...]}``."""

    x: Any
    labels: dict[str, np.ndarray]
    name: str = "source"


def sources_from_datasets(datasets: Mapping[str, Dataset]) -> list[Source]:
    """One source per task from labelled :class:`Dataset` s (``{task: dataset}``)."""
    out = []
    for task, ds in datasets.items():
        if ds.y is None:
            raise DataError(
                f"dataset {ds.name} has no labels",
                where=f"task {task}",
                fix="give each task a labelled dataset",
            )
        out.append(Source(ds.x, {task: np.asarray(ds.y)}, name=ds.name))
    return out


def epoch_counts(
    sizes: Sequence[int], total: int, sampling: Sampling, temperature: float
) -> np.ndarray:
    """Examples per source in an epoch of ``total`` items (largest-remainder rounding)."""
    n = np.asarray(sizes, dtype=np.float64)
    if sampling == "proportional":
        p = n / n.sum()
    elif sampling == "equal":
        p = np.full(len(n), 1.0 / len(n))
    else:
        w = n ** (1.0 / temperature)
        p = w / w.sum()
    raw = p * total
    counts = np.floor(raw).astype(np.int64)
    extra = total - int(counts.sum())
    counts[np.argsort(-(raw - counts), kind="stable")[:extra]] += 1
    return counts


class TaskMixture(torch.utils.data.Dataset):
    """Multi-task items from several sources (module docstring).

    Args:
        sources: the sources (see :func:`sources_from_datasets`).
        tasks: every task of the model; each must be labelled by at least one source.
        sampling: ``proportional``, ``temperature`` or ``equal``.
        temperature: ``T`` of ``temperature`` sampling.
        size: items per epoch (default: the total number of examples).
        seed: seed of the per-source permutations.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        tasks: Sequence[TaskSpec],
        sampling: Sampling = "proportional",
        temperature: float = 2.0,
        size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.sources, self.tasks = list(sources), list(tasks)
        self.sampling, self.temperature, self.seed = sampling, float(temperature), int(seed)
        self._check()
        self.sizes = [len(s.x) for s in self.sources]
        self.size = int(size) if size is not None else sum(self.sizes)
        self.counts = epoch_counts(self.sizes, self.size, sampling, self.temperature)
        rng = np.random.default_rng(self.seed)
        self.perms = [rng.permutation(n) for n in self.sizes]
        self.set_epoch(0)

    def _check(self) -> None:
        names = {t.name for t in self.tasks}
        if not self.sources:
            raise DataError("the mixture has no source", where="TaskMixture(sources)")
        for s in self.sources:
            n = len(s.x)
            for task, y in s.labels.items():
                if task not in names:
                    raise DataError(
                        f"source {s.name} labels unknown task {task!r}",
                        where=f"source {s.name}",
                        fix=f"tasks: {sorted(names)}",
                    )
                if len(y) != n:
                    raise DataError(
                        f"source {s.name} has {n} examples but {len(y)} labels for task {task!r}",
                        where=f"source {s.name}",
                    )
        unlabelled = names - {t for s in self.sources for t in s.labels}
        if unlabelled:
            raise DataError(
                f"no source labels task(s) {sorted(unlabelled)}",
                where="TaskMixture(sources)",
                fix="add a source for each task",
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose this epoch's examples: ``(source, index)`` per item (deterministic)."""
        index = []
        for s, (n, c) in enumerate(zip(self.sizes, self.counts, strict=True)):
            start = int(epoch) * int(c)
            picks = self.perms[s][(start + np.arange(c)) % n]
            index.extend((s, int(i)) for i in picks)
        self.index = index

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Any]:
        s, j = self.index[i]
        src = self.sources[s]
        item: dict[str, Any] = {"x": src.x[j]}
        for t in self.tasks:
            if t.name in src.labels:
                item[f"y_{t.name}"], item[f"m_{t.name}"] = src.labels[t.name][j], True
            else:
                item[f"y_{t.name}"], item[f"m_{t.name}"] = _placeholder(t), False
        return item


def _placeholder(task: TaskSpec) -> Any:
    if task.kind == "classification":
        return 0
    if task.kind == "multilabel" or task.num_outputs > 1:
        return np.zeros(task.num_outputs, dtype=np.float32)
    return np.float32(0.0)
