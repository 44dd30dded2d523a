"""Multi-label tasks from the config: derived digit attributes, labels_from columns, the
multi-label single-task comparator, micro-F1 verdicts and Δm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transferkit.data.types import Dataset
from transferkit.errors import ConfigError, DataError
from transferkit.experiment import load_config, run
from transferkit.experiment.config import TaskConfig
from transferkit.experiment.mtl_metrics import delta_m, multilabel_gain, multilabel_metrics
from transferkit.experiment.multitask_data import (
    DIGIT_ATTRIBUTES,
    MultiTaskDataset,
    TaskInfo,
    derive_labels,
    load_task_splits,
)

# Hand-written: even, greater_than_4, prime, closed_loop, multiple_of_3.
HAND = {
    0: [1, 0, 0, 1, 1],
    1: [0, 0, 0, 0, 0],
    2: [1, 0, 1, 0, 0],
    3: [0, 0, 1, 0, 1],
    4: [1, 0, 0, 0, 0],
    5: [0, 1, 1, 0, 0],
    6: [1, 1, 0, 1, 1],
    7: [0, 1, 1, 0, 0],
    8: [1, 1, 0, 1, 0],
    9: [0, 1, 0, 1, 1],
}


def _digits_ds(classes: list[str] | None = None, task: str = "classification") -> Dataset:
    y = np.arange(10) if task == "classification" else np.linspace(0, 1, 10)
    names = classes or [str(d) for d in range(10)]
    return Dataset("d", "tabular", np.zeros((10, 2), np.float32), y, names, task)


def test_attributes_match_the_hand_table_for_all_ten_digits() -> None:
    assert list(DIGIT_ATTRIBUTES) == [
        "even",
        "greater_than_4",
        "prime",
        "closed_loop",
        "multiple_of_3",
    ]
    # class ids permuted against names: the names, not the ids, decide the digit
    ds = _digits_ds(classes=[str(d) for d in (3, 1, 4, 0, 5, 9, 2, 6, 8, 7)])
    out = derive_labels(ds, TaskConfig(name="a", derive="attributes"))
    assert out.task == "multilabel" and out.classes == list(DIGIT_ATTRIBUTES)
    for i, name in enumerate(ds.classes or []):
        assert out.y[i].tolist() == HAND[int(name)], name


@pytest.mark.parametrize(
    ("ds", "match"),
    [
        (_digits_ds(classes=[f"c{i}" for i in range(10)]), "digit classes 0-9"),
        (_digits_ds(classes=[str(d) for d in range(5, 15)]), "digit classes 0-9"),
        (_digits_ds(task="regression"), "regression"),
    ],
)
def test_attributes_on_non_digit_labels_is_a_config_error(ds: Dataset, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        derive_labels(ds, TaskConfig(name="a", derive="attributes"))
    assert e.value.fix and "labels_from" in e.value.fix and "tasks[a]" in str(e.value.where)


def test_config_accepts_multilabel_tasks_and_rejects_two_label_sources() -> None:
    base: dict[str, Any] = {
        "data": {"target": "digits"},
        "model": {"backbone": "tk:smallcnn", "pretrained": False},
        "method": {"name": "multitask", "params": {}},
    }
    cfg = load_config({**base, "tasks": [{"name": "d"}, {"name": "a", "derive": "attributes"}]})
    assert cfg.tasks is not None and [t.multilabel for t in cfg.tasks] == [False, True]
    both = [{"name": "a", "derive": "parity", "labels_from": ["x"]}]
    with pytest.raises(ConfigError, match="keep one of them"):
        load_config({**base, "tasks": both})
    with pytest.raises(ConfigError, match="repeats a column"):
        load_config({**base, "tasks": [{"name": "a", "labels_from": ["x", "x"]}]})


def _table(tmp_path: Path, bad: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    rows = ["f1,f2,label,red,round"]
    for i in range(60):
        red, rnd = i % 2, (i // 2) % 2
        rows.append(f"{i},{rng.normal() + rnd:.3f},{i % 3},{red},{rnd}")  # f1 = row id
    if bad is not None:
        rows[5] = rows[5].rsplit(",", 1)[0] + f",{bad}"
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _table_cfg(path: Path, **task: Any) -> Any:
    data = {"path": str(path), "feature_columns": ["f1", "f2"]}
    return load_config(
        {
            "data": {"target": data, "max_eval_examples": None},
            "model": {"backbone": "tk:mlp", "pretrained": False},
            "method": {"name": "multitask", "params": {}},
            "tasks": [{"name": "cls"}, {"name": "tags", **task}],
        }
    )


def test_labels_from_builds_a_multi_hot_target_on_the_shared_rows(tmp_path: Path) -> None:
    cfg = _table_cfg(_table(tmp_path), labels_from=["red", "round"])
    infos, splits = load_task_splits(cfg, seed=0)
    assert [(i.kind, i.num_outputs) for i in infos] == [("classification", 3), ("multilabel", 2)]
    tags, cls = splits["tags"].test, splits["cls"].test
    idx = np.rint(tags.x[:, 0]).astype(np.int64)
    assert np.array_equal(tags.x, cls.x) and len(idx) > 5
    want = np.stack([idx % 2, (idx // 2) % 2], axis=1)  # row i: red = i % 2, round = i//2 % 2
    assert np.array_equal(tags.y, want)
    item = MultiTaskDataset(infos, splits)[0]
    assert item["y_tags"].dtype == np.float32 and item["y_tags"].shape == (2,)


def test_labels_from_bad_cell_and_missing_column_name_where(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not 0 or 1") as e:
        load_task_splits(_table_cfg(_table(tmp_path, bad="2"), labels_from=["red", "round"]), 0)
    assert "row 5" in str(e.value.where) and "round" in str(e.value.where)
    with pytest.raises(DataError, match="no column 'rond'"):
        load_task_splits(_table_cfg(_table(tmp_path), labels_from=["red", "rond"]), 0)


def test_multilabel_metrics_by_hand() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0]])
    z = np.array([[2.0, 1.0, -1.0], [-1.0, 3.0, -2.0]])  # preds [[1,1,0],[0,1,0]]
    m = multilabel_metrics(z, y)
    # TP = 2 (cells (0,0), (1,1)), FP = 1 (0,1), FN = 1 (0,2): F1 = 4 / (4 + 2)
    assert m["micro_f1"] == pytest.approx(2 / 3)
    # per label F1: l0 = 1, l1 = 2/3 (tp 1, fp 1), l2 = 0
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["subset_accuracy"] == pytest.approx(0.5)


def test_delta_m_and_gain_treat_higher_micro_f1_as_better() -> None:
    tasks = [TaskInfo("t", "multilabel", ["a", "b"], 1.0, 0)]
    assert delta_m({"t": {"micro_f1": 0.6}}, {"t": {"micro_f1": 0.5}}, tasks) == pytest.approx(0.2)
    y = np.tile(np.array([[1, 0], [0, 1]]), (40, 1))
    good = np.where(y == 1, 1.0, -1.0)
    bad = -good
    g = multilabel_gain([{"y": y, "transfer": good, "baseline": bad}], 0.95, 200)
    assert g["delta"] == pytest.approx(1.0) and g["verdict"] == "positive"
    g = multilabel_gain([{"y": y, "transfer": bad, "baseline": good}] * 2, 0.95, 200)
    assert g["delta"] == pytest.approx(-1.0) and g["per_seed"] == [-1.0, -1.0]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = {
        "name": "mtl-ml",
        "data": {"target": "digits", "max_examples": 400, "max_eval_examples": 120},
        "model": {
            "backbone": "tk:smallcnn",
            "pretrained": False,
            "backbone_options": {"width": 8},
        },
        "tasks": [{"name": "digit"}, {"name": "attrs", "derive": "attributes"}],
        "method": {"name": "multitask", "params": {"weighting": "equal", "backbone_lr_mult": 1.0}},
        "train": {"epochs": 2, "max_steps": 12, "lr": 0.01, "batch_size": 32},
        "seeds": [0],
    }
    out = tmp_path_factory.mktemp("runs") / "ml"
    run(cfg, out=out, quiet=True)
    return out


def test_end_to_end_multilabel_task_gets_micro_f1_and_a_single_task_baseline(
    digits_run: Path,
) -> None:
    m = json.loads((digits_run / "metrics.json").read_text())
    attrs = m["tasks"]["attrs"]
    assert attrs["kind"] == "multilabel" and attrs["primary_metric"] == "micro_f1"
    assert 0.0 <= attrs["multitask"]["micro_f1"] <= 1.0
    assert 0.0 <= attrs["single_task"]["micro_f1"] <= 1.0
    assert attrs["gain"]["baseline"] == "single_task" and attrs["gain"]["metric"] == "micro_f1"
    assert m["dataset"]["tasks"]["attrs"]["classes"] == list(DIGIT_ATTRIBUTES)
    stages = {p.stem: json.loads(p.read_text()) for p in (digits_run / "stages").glob("*.json")}
    single = stages["single_attrs__seed0"]
    assert np.asarray(single["outputs"]).shape[1] == len(DIGIT_ATTRIBUTES)
    shared = stages["target__seed0"]["extra"]["tasks"]
    want = np.mean(
        [
            (
                shared["digit"]["metrics"]["accuracy"]
                - stages["single_digit__seed0"]["metrics"]["accuracy"]
            )
            / stages["single_digit__seed0"]["metrics"]["accuracy"],
            (shared["attrs"]["metrics"]["micro_f1"] - single["metrics"]["micro_f1"])
            / single["metrics"]["micro_f1"],
        ]
    )
    assert m["delta_m"]["per_seed"][0] == pytest.approx(want)
    assert m["delta_m"]["metrics"] == {"digit": "accuracy", "attrs": "micro_f1"}
