"""Mixing single-task datasets into one masked multi-task stream."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tests.mtl.helpers import make_mtl
from transferkit.data.loaders import collate_with
from transferkit.data.types import Dataset
from transferkit.errors import DataError
from transferkit.mtl.mixture import Source, TaskMixture, epoch_counts, sources_from_datasets
from transferkit.mtl.tasks import TaskSpec

TASKS = [
    TaskSpec(name="a", kind="classification", num_outputs=3),
    TaskSpec(name="b", kind="regression", num_outputs=1),
]


def _sources(n_a: int = 90, n_b: int = 10) -> list[Source]:
    rng = np.random.default_rng(0)
    a = Dataset(
        "da", "tabular", rng.normal(size=(n_a, 6)).astype(np.float32), rng.integers(0, 3, n_a)
    )
    b = Dataset(
        "db",
        "tabular",
        rng.normal(size=(n_b, 6)).astype(np.float32),
        rng.normal(size=n_b).astype(np.float32),
        task="regression",
    )
    return sources_from_datasets({"a": a, "b": b})


def test_epoch_counts_by_sampling_rule() -> None:
    assert epoch_counts([90, 10], 100, "proportional", 2.0).tolist() == [90, 10]
    assert epoch_counts([90, 10], 100, "equal", 2.0).tolist() == [50, 50]
    p = np.sqrt([90, 10]) / np.sqrt([90, 10]).sum()  # T = 2: 0.75 / 0.25
    assert epoch_counts([90, 10], 100, "temperature", 2.0).tolist() == np.round(p * 100).tolist()
    assert epoch_counts([5, 5, 5], 10, "equal", 1.0).sum() == 10


def test_proportional_mixture_covers_every_example_once_per_epoch() -> None:
    mix = TaskMixture(_sources(), TASKS, seed=3)
    for epoch in (0, 1):
        mix.set_epoch(epoch)
        assert sorted(mix.index) == [(0, i) for i in range(90)] + [(1, i) for i in range(10)]


def test_equal_sampling_cycles_the_small_source_deterministically() -> None:
    mix = TaskMixture(_sources(), TASKS, sampling="equal", size=40, seed=1)
    first = list(mix.index)
    assert Counter(s for s, _ in first) == {0: 20, 1: 20}
    assert Counter(i for s, i in first if s == 1) == dict.fromkeys(range(10), 2)
    mix.set_epoch(1)
    assert mix.index != first
    mix.set_epoch(0)
    assert mix.index == first


def test_items_collate_into_a_masked_training_batch() -> None:
    mix = TaskMixture(_sources(8, 4), TASKS)
    items = [mix[i] for i in (0, 9)]  # one example of each source
    assert items[0]["m_a"] and not items[0]["m_b"] and items[1]["m_b"] and not items[1]["m_a"]
    batch = collate_with(lambda raw: torch.as_tensor(np.asarray(raw)))([mix[i] for i in range(12)])
    assert batch["x"].shape == (12, 6) and batch["y_a"].dtype == torch.int64
    assert batch["m_a"].tolist() == [1] * 8 + [0] * 4
    out = make_mtl("pcgrad", tasks=[t.model_dump() for t in TASKS]).training_step(batch)
    assert {"loss_a", "loss_b"} <= set(out)


def test_mixture_checks_its_sources() -> None:
    with pytest.raises(DataError, match="no source labels task"):
        TaskMixture(_sources()[:1], TASKS)
    bad = Source(np.zeros((3, 2)), {"a": np.zeros(2, dtype=np.int64)}, name="s")
    with pytest.raises(DataError, match="3 examples but 2 labels"):
        TaskMixture([bad, *_sources()[1:]], TASKS)
