"""Multi-task data: derived labels, shared rows, task sampling, masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transferkit.data.types import Dataset, Splits
from transferkit.errors import ConfigError, DataError
from transferkit.experiment.config import TaskConfig, load_config
from transferkit.experiment.multitask_data import (
    MultiTaskDataset,
    TaskInfo,
    derive_labels,
    load_task_splits,
)


def _ds(y: list, classes: list[str] | None, task: str = "classification") -> Dataset:
    return Dataset(
        "d", "tabular", np.arange(len(y), dtype=np.float32)[:, None], np.asarray(y), classes, task
    )


def test_parity_and_threshold_from_numeric_classes() -> None:
    ds = _ds([0, 3, 7, 9], [str(i) for i in range(10)])
    par = derive_labels(ds, TaskConfig(name="p", derive="parity"))
    assert par.y.tolist() == [0, 1, 1, 1] and par.classes == ["even", "odd"]
    gt = derive_labels(ds, TaskConfig(name="g", derive="greater_than", threshold=4))
    assert gt.y.tolist() == [0, 0, 1, 1]


def test_threshold_on_regression_targets_and_bad_inputs() -> None:
    ds = _ds([-1.5, 0.2, 3.0], None, "regression")
    pol = derive_labels(ds, TaskConfig(name="pol", derive="greater_than", threshold=0))
    assert pol.y.tolist() == [0, 1, 1] and pol.task == "classification"
    with pytest.raises(DataError, match="single class"):
        derive_labels(ds, TaskConfig(name="pol", derive="greater_than", threshold=10))
    with pytest.raises(ConfigError, match="numeric class names"):
        derive_labels(_ds([0, 1], ["cat", "dog"]), TaskConfig(name="p", derive="parity"))


def _npz(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(n, 3)).astype(np.float32), y=rng.integers(0, 10, n))
    return path


def test_tasks_on_one_dataset_share_rows_others_do_not(tmp_path: Path) -> None:
    a, b = _npz(tmp_path / "a.npz", 120, 0), _npz(tmp_path / "b.npz", 150, 1)
    cfg = load_config(
        {
            "data": {"target": str(a), "max_eval_examples": 10},
            "model": {"backbone": "tk:mlp"},
            "method": {"name": "multitask"},
            "tasks": [
                {"name": "digit"},
                {"name": "parity", "derive": "parity"},
                {"name": "other", "data": str(b)},
            ],
        }
    )
    infos, sp = load_task_splits(cfg, seed=3)
    assert [i.group for i in infos] == [0, 0, 1]
    for split in ("train", "val", "test"):
        d, p = getattr(sp["digit"], split), getattr(sp["parity"], split)
        np.testing.assert_array_equal(d.x, p.x)
        assert (d.y % 2 == p.y).all()
    assert len(sp["digit"].test) == 10 and len(sp["other"].test) == 10
    assert infos[1].num_outputs == 2 and infos[0].num_outputs == 10


def _mtl(sizes: tuple[int, int], sampling: str, **kw: float) -> MultiTaskDataset:
    infos = [
        TaskInfo("a", "classification", ["0", "1"], 1.0, 0),
        TaskInfo("r", "regression", None, 1.0, 1),
    ]
    sp = {
        "a": Splits(_ds([0, 1] * (sizes[0] // 2), ["0", "1"]), None, None),  # type: ignore[arg-type]
        "r": Splits(_ds([0.5] * sizes[1], None, "regression"), None, None),
    }  # type: ignore[arg-type]
    return MultiTaskDataset(infos, sp, sampling=sampling, seed=0, **kw)


def test_sampling_modes_counts() -> None:
    prop = _mtl((40, 10), "proportional")
    assert len(prop) == 50 and np.bincount(prop.map[:, 0]).tolist() == [40, 10]
    rr = _mtl((40, 10), "round_robin")
    assert len(rr) == 80 and np.bincount(rr.map[:, 0]).tolist() == [40, 40]
    # small group cycles through all its rows before repeating
    assert sorted(rr.map[rr.map[:, 0] == 1, 1][:10].tolist()) == list(range(10))
    temp = _mtl((400, 100), "temperature", temperature=1e6)  # ~uniform over groups
    share = np.bincount(temp.map[:, 0]) / len(temp)
    assert len(temp) == 500 and abs(share[0] - 0.5) < 0.08


def test_items_masks_fillers_and_epoch_determinism() -> None:
    ds = _mtl((4, 2), "proportional")
    items = [ds[i] for i in range(len(ds))]
    a_items = [it for it in items if it["m_a"]]
    assert len(a_items) == 4 and all(not it["m_r"] and it["y_r"] == 0.0 for it in a_items)
    r_items = [it for it in items if it["m_r"]]
    assert all(it["y_r"] == 0.5 and it["y_a"] == 0 for it in r_items)
    ds.set_epoch(1)
    m1 = ds.map.copy()
    ds.set_epoch(2)
    ds.set_epoch(1)
    np.testing.assert_array_equal(ds.map, m1)
