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


def test_with_a_label_budget_the_student_distils_on_the_unlabelled_pool_too(
    data: Path, tmp_path: Path
) -> None:
    from transferkit.experiment import kd_stages, stages
    from transferkit.experiment.runner import load_splits

    doc = _cfg(data)
    doc["data"]["label_budget"] = 5
    cfg = load_config(doc)
    splits = load_splits(cfg, 0)
    ctx = stages.StageContext(cfg, splits, 0, tmp_path, False, True)
    ds, mask = kd_stages._labelled_plus_pool(ctx)
    assert len(ds) == len(splits.train) + len(splits.unlabelled) and mask.sum() == 15
    np.testing.assert_array_equal(ds.y[: len(splits.train)], splits.train.y)
    m = run(cfg, out=tmp_path / "r", quiet=True).metrics
    assert m["dataset"]["sizes"]["train"] == 15 and "student_labels_only" in m["baselines"]


def test_cross_entropy_reads_only_labelled_rows() -> None:
    import torch

    from tests.conftest import TinyVectorBackbone
    from transferkit.methods.distill import Distill, DistillParams
    from transferkit.methods.heads import make_head

    torch.manual_seed(0)
    m = Distill(
        TinyVectorBackbone(6, 8),
        make_head(8, 3),
        "classification",
        DistillParams(),
        teacher_backbone=TinyVectorBackbone(6, 8),
        teacher_head=make_head(8, 3),
    )
    x = torch.randn(4, 6)
    t_logits = torch.randn(4, 3)
    base = {"x": x, "y": torch.tensor([0, 1, 2, 0]), "t_logits": t_logits, "t_embed": x}
    none = m.training_step({**base, "y_mask": torch.zeros(4, dtype=torch.long)})
    assert float(none["ce"]) == 0.0
    assert float(none["loss"].detach()) == pytest.approx(float(none["kd"].detach()))
    two = m.training_step({**base, "y_mask": torch.tensor([1, 1, 0, 0])})
    with torch.no_grad():  # train mode, like the step: BatchNorm uses the batch statistics
        logits = m.predict(x)
    want = torch.nn.functional.cross_entropy(logits[:2], base["y"][:2])
    assert float(two["ce"]) == pytest.approx(float(want), rel=1e-5)
