"""A run used as the source of another: its backbone and head, LwF, and the forgetting report
(source-task accuracy before and after fine-tuning on the target)."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferkit.errors import ConfigError
from transferkit.experiment import load_config, run

TRAIN = {
    "epochs": 2,
    "batch_size": 32,
    "lr": 0.01,
    "mixed_precision": "no",
    "early_stopping": {"enabled": False},
}
SOURCE = {
    "name": "src",
    "data": {"target": "digits", "max_examples": 600, "max_eval_examples": 150},
    "model": {"backbone": "tk:smallcnn", "backbone_options": {"width": 8, "depth": 2}},
    "method": {"name": "finetune", "params": {"backbone_lr_mult": 1.0}},
    "train": TRAIN,
    "baselines": {"enabled": False},
    "seeds": [0],
    "report": False,
}


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("src") / "run"
    run(SOURCE, out=out, quiet=True)
    return out


def _target(source_dir: Path, lwf: bool) -> dict:
    params: dict = {"backbone_lr_mult": 1.0}
    if lwf:
        params["lwf"] = {"lambda": 1.0, "temperature": 2.0}
    return {
        "name": "tgt",
        "data": {"target": "mnist5k", "max_examples": 400, "max_eval_examples": 100},
        "model": {"backbone": "source", "source_run": str(source_dir)},
        "method": {"name": "finetune", "params": params},
        "train": TRAIN,
        "baselines": {"classical": False},
        "seeds": [0],
        "report": False,
    }


@pytest.mark.parametrize("lwf", [False, True])
def test_forgetting_report_from_source_run(source_dir: Path, tmp_path: Path, lwf: bool) -> None:
    res = run(_target(source_dir, lwf), out=tmp_path / "t", quiet=True)
    f = res.metrics["forgetting"]
    src = f["source_task"]
    assert src["source_dataset"] == "digits" and src["source_run"] == str(source_dir)
    import json

    own = json.loads((source_dir / "metrics.json").read_text())["target_per_seed"][0]
    # "before" re-measures the source model on its own test split: same number as its run
    assert src["before"] == pytest.approx(own["accuracy"], abs=1e-9)
    assert src["drop"] == pytest.approx(src["before"] - src["after"])
    assert "representation_drift" in f
    assert "random_init" in res.metrics["baselines"]


def test_source_backbone_needs_source_run() -> None:
    doc = {"data": {"target": "digits"}, "model": {"backbone": "source"}}
    with pytest.raises(ConfigError, match="source_run"):
        load_config(doc)


def test_lwf_without_source_head_is_a_config_error(tmp_path: Path) -> None:
    doc = {**SOURCE, "method": {"name": "finetune", "params": {"lwf": {}}}}
    with pytest.raises(ConfigError, match="source"):
        run(doc, out=tmp_path / "x", quiet=True)
