"""Multi-task runs through the runner: validation, per-task verdicts, Δm, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transferkit.errors import ConfigError
from transferkit.experiment import load_config, run
from transferkit.experiment.mtl_metrics import delta_m
from transferkit.experiment.multitask_data import TaskInfo


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 10, n)
    x = rng.normal(0, 1, (n, 8)).astype(np.float32)
    x[:, 0] += y * 0.5
    x[:, 1] += (y % 2) * 2
    path = tmp_path_factory.mktemp("mtl") / "d.npz"
    np.savez(path, x=x, y=y)
    return path


def _cfg(data: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "mtl",
        "data": {"target": str(data)},
        "model": {
            "backbone": "tk:mlp",
            "pretrained": False,
            "backbone_options": {"in_features": 8, "hidden": [16]},
        },
        "tasks": [{"name": "digit"}, {"name": "parity", "derive": "parity"}],
        "method": {"name": "multitask", "params": {"weighting": "pcgrad", "backbone_lr_mult": 1.0}},
        "train": {"epochs": 2, "lr": 0.01, "batch_size": 32},
        "seeds": [0, 1],
    }
    cfg.update(over)
    return cfg


def test_tasks_validation(data: Path) -> None:
    cfg = _cfg(data)
    del cfg["tasks"]
    with pytest.raises(ConfigError, match="needs tasks"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="is single-task"):
        load_config(_cfg(data, method={"name": "finetune", "params": {}}))
    bad = _cfg(data, tasks=[{"name": "a"}, {"name": "a", "derive": "parity"}])
    with pytest.raises(ConfigError, match="repeat"):
        load_config(bad)
    with pytest.raises(ConfigError, match="weighting"):
        load_config(_cfg(data, method={"name": "multitask", "params": {"weighting": "nope"}}))


def test_delta_m_matches_the_formula() -> None:
    tasks = [
        TaskInfo("a", "classification", ["x", "y"], 1.0, 0),
        TaskInfo("r", "regression", None, 1.0, 0),
    ]
    mtl = {"a": {"accuracy": 0.9}, "r": {"rmse": 1.5}}
    single = {"a": {"accuracy": 0.8}, "r": {"rmse": 1.0}}
    # ((0.9 - 0.8) / 0.8 - (1.5 - 1.0) / 1.0) / 2
    assert delta_m(mtl, single, tasks) == pytest.approx((0.125 - 0.5) / 2)


@pytest.fixture(scope="module")
def mtl_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "mtl"
    run(_cfg(data), out=out, quiet=True)
    return out


def test_per_task_verdicts_and_delta_m_per_seed(mtl_run: Path) -> None:
    m = json.loads((mtl_run / "metrics.json").read_text())
    assert m["family"] == "multi-task" and set(m["tasks"]) == {"digit", "parity"}
    stages = {p.stem: json.loads(p.read_text()) for p in (mtl_run / "stages").glob("*.json")}
    for i, seed in enumerate(m["seeds"]):
        shared = stages[f"target__seed{seed}"]["extra"]["tasks"]
        single = {t: stages[f"single_{t}__seed{seed}"]["metrics"] for t in ("digit", "parity")}
        want = np.mean(
            [
                (shared[t]["metrics"]["accuracy"] - single[t]["accuracy"]) / single[t]["accuracy"]
                for t in ("digit", "parity")
            ]
        )
        assert m["delta_m"]["per_seed"][i] == pytest.approx(want)
    for t in m["tasks"].values():
        assert t["gain"]["baseline"] == "single_task" and "verdict" in t["gain"]
    assert m["transfer_gain"]["metric"] == "delta_m"
    assert m["best_baseline"] == "single_task"


def test_report_has_the_task_section_with_weights_and_cosines(mtl_run: Path) -> None:
    html = (mtl_run / "report.html").read_text()
    assert "Tasks: shared model vs each task alone" in html
    assert "task weights" in html and "gradient cosine" in html
