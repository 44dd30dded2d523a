"""Torch datasets, collate functions and the paired (source, target) loader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from transferkit.data import Dataset
from transferkit.data.loaders import (
    ExampleDataset,
    PairedDataset,
    collate_with,
    make_loader,
    make_paired_loader,
)
from transferkit.errors import DataError


def _images(n: int, label_offset: int = 0) -> Dataset:
    x = np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2)
    return Dataset("img", "image", x, (np.arange(n) + label_offset) % 3, classes=["a", "b", "c"])


def _as_float(raw):  # a stand-in for Backbone.prepare
    return torch.as_tensor(np.asarray(raw), dtype=torch.float32)


def test_example_dataset_items() -> None:
    ds = _images(5)
    x, y = ExampleDataset(ds)[3]
    assert np.array_equal(x, ds.x[3]) and y == 0
    assert np.array_equal(ExampleDataset(ds.unlabelled())[3], ds.x[3])
    assert np.array_equal(ExampleDataset(ds, with_labels=False)[1], ds.x[1])
    assert len(ExampleDataset(ds)) == 5


def test_collate_stacks_arrays_and_types_labels() -> None:
    ds = _images(4)
    batch = collate_with(_as_float)([ExampleDataset(ds)[i] for i in range(4)])
    assert batch["x"].shape == (4, 2, 2) and torch.equal(batch["x"], _as_float(ds.x))
    assert batch["y"].dtype == torch.int64 and batch["y"].tolist() == [0, 1, 2, 0]
    reg = collate_with(_as_float)([(np.zeros(2), np.float32(0.5)), (np.ones(2), 1.5)])
    assert reg["y"].dtype == torch.float32 and reg["y"].tolist() == [0.5, 1.5]
    unl = collate_with(_as_float)([np.zeros((2, 2)), np.ones((2, 2))])
    assert set(unl) == {"x"} and unl["x"].shape == (2, 2, 2)


def test_collate_keeps_text_as_a_list() -> None:
    seen = []
    collate = collate_with(lambda raw: seen.append(raw) or torch.zeros(len(raw)))
    out = collate([("hello", np.int64(1)), ("world", np.int64(0))])
    assert seen == [["hello", "world"]] and out["y"].tolist() == [1, 0]


def test_collate_is_picklable_with_a_picklable_prepare() -> None:
    c = pickle.loads(pickle.dumps(collate_with(_as_float)))
    assert c([np.zeros(1)])["x"].shape == (1, 1)


def test_paired_dataset_cycles_a_seeded_permutation() -> None:
    src, tgt = _images(7), _images(3).unlabelled()
    pair = PairedDataset(src, tgt, seed=4)
    assert len(pair) == 7
    idx = [pair.target_index(i) for i in range(6)]
    assert sorted(idx[:3]) == [0, 1, 2] and idx[3:] == idx[:3]  # each target once per cycle
    assert idx == [PairedDataset(src, tgt, seed=4).target_index(i) for i in range(6)]
    item = pair[5]
    assert set(item) == {"x", "y", "x_t"} and item["y"] == src.y[5]
    assert np.array_equal(item["x_t"], tgt.x[pair.target_index(5)])
    pair.set_epoch(1)
    assert [pair.target_index(i) for i in range(3)] == idx[1:4]  # shifted by 7 = 1 mod 3


def test_paired_loader_batches() -> None:
    src, tgt = _images(10), _images(4, label_offset=1)
    batches = list(make_paired_loader(src, tgt, _as_float, batch_size=4, seed=0))
    assert [b["x"].shape[0] for b in batches] == [4, 4, 2]
    assert set(batches[0]) == {"x", "y", "x_t"} and batches[0]["x_t"].shape == (4, 2, 2)
    assert batches[0]["y"].dtype == torch.int64


def test_paired_dataset_needs_labelled_source() -> None:
    with pytest.raises(DataError, match="needs labels"):
        PairedDataset(_images(3).unlabelled(), _images(3))


def test_make_loader_shuffle_is_seeded() -> None:
    ds = _images(12)

    def order(seed: int) -> list[int]:
        return torch.cat(
            [b["y"] for b in make_loader(ds, _as_float, batch_size=5, shuffle=True, seed=seed)]
        ).tolist()

    assert order(1) == order(1) and order(1) != order(2)
    assert sorted(order(1)) == sorted(ds.y.tolist())
    plain = torch.cat([b["y"] for b in make_loader(ds, _as_float, batch_size=5)]).tolist()
    assert plain == ds.y.tolist()
