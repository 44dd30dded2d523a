"""Distillation through the runner: teacher stage, comparator, deployment, export CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load_file

from transferkit.cli import main
from transferkit.errors import ConfigError
from transferkit.experiment import load_config, resume, run


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, 8)).astype(np.float32)
    x[:, 0] += y * 1.5
    x[:, 1] += np.sin(y * 2.0) * 2
    path = tmp_path_factory.mktemp("kd") / "d.npz"
    np.savez(path, x=x, y=y)
    return path


def _cfg(data: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "kd",
        "data": {"target": str(data)},
        "model": {
            "backbone": "tk:mlp",
            "pretrained": False,
            "backbone_options": {"in_features": 8, "hidden": [6]},
        },
        "teacher": {
            "backbone": "tk:mlp",
            "backbone_lr_mult": 1.0,
            "backbone_options": {"in_features": 8, "hidden": [32, 32]},
        },
        "method": {"name": "distill", "params": {"losses": {"kd": 1.0}}},
        "train": {"epochs": 2, "lr": 0.01, "batch_size": 32},
        "baselines": {"classical": False},
        "seeds": [0],
        "report": False,
    }
    cfg.update(over)
    return cfg


def test_teacher_is_required_and_only_for_distillation(data: Path) -> None:
    cfg = _cfg(data)
    del cfg["teacher"]
    with pytest.raises(ConfigError, match="needs a teacher"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="does not distil"):
        load_config(_cfg(data, method={"name": "finetune", "params": {}}))


@pytest.fixture(scope="module")
def kd_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "kd"
    run(_cfg(data), out=out, quiet=True)
    return out


def test_metrics_compare_with_student_on_labels_and_show_the_teacher(kd_run: Path) -> None:
    m = json.loads((kd_run / "metrics.json").read_text())
    assert m["family"] == "distillation"
    assert set(m["baselines"]) == {"teacher", "student_labels_only"}
    assert m["transfer_gain"]["baseline"] == "student_labels_only"
    dep = m["deployment"]
    assert dep["teacher"]["params"] > dep["student"]["params"] > 0
    assert dep["compression"] == pytest.approx(dep["teacher"]["params"] / dep["student"]["params"])


def test_student_weights_hold_no_teacher_and_teacher_weights_are_kept(kd_run: Path) -> None:
    student = load_file(str(kd_run / "checkpoints" / "target-seed0" / "model.safetensors"))
    teacher = load_file(str(kd_run / "checkpoints" / "teacher-seed0" / "model.safetensors"))
    assert student["head.0.weight"].shape[1] == 6 and teacher["head.0.weight"].shape[1] == 32
    assert not any("teacher" in k for k in student)


def test_resume_of_a_finished_run_reuses_every_stage(kd_run: Path) -> None:
    before = json.loads((kd_run / "metrics.json").read_text())
    after = resume(kd_run, quiet=True).metrics
    assert after["target"] == before["target"]
    assert after["baselines"]["teacher"]["accuracy"] == before["baselines"]["teacher"]["accuracy"]


def test_export_cli_checks_onnx_parity_and_never_overwrites(
    kd_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = kd_run / "student.onnx"
    main(["export", str(kd_run), "--format", "onnx", "--out", str(out)])
    assert out.is_file()
    assert "max |difference|" in capsys.readouterr().out
    with pytest.raises(SystemExit) as again:
        main(["export", str(kd_run), "--format", "onnx", "--out", str(out)])
    assert again.value.code == 2
    assert "already exists" in capsys.readouterr().err
