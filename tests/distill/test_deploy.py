"""Deployment numbers and exports of a distilled student."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from tests.distill.conftest import cnn
from transferkit.backbones.base import Backbone
from transferkit.deploy import (
    ExportError,
    compare_deployment,
    count_parameters,
    export_model,
    load_safetensors,
    measure_deployment,
    predict_module,
)
from transferkit.distill import student_from_teacher
from transferkit.errors import ConfigError
from transferkit.methods.distill import Distill, DistillParams


def distilled(seed: int = 1) -> Distill:
    teacher, student = cnn(8, 3, seed=0), cnn(4, 2, seed=seed)
    torch.manual_seed(seed)
    return Distill(
        student,
        nn.Linear(student.num_features, 3),
        "classification",
        DistillParams(losses={"kd": 1.0, "fitnets": 1.0}),
        teacher_backbone=teacher,
        teacher_head=nn.Linear(teacher.num_features, 3),
    )


def example(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_measure_reports_positive_numbers_for_the_student_only() -> None:
    m = distilled()
    threads = torch.get_num_threads()
    stats = measure_deployment(m, example(), warmup=1, repeats=3)
    assert torch.get_num_threads() == threads
    student_params = count_parameters(m.backbone) + count_parameters(m.head)
    assert stats["params"] == student_params < count_parameters(m.teacher)
    assert stats["size_bytes"] > 4 * student_params  # float32 weights + header
    assert stats["latency_ms"] > 0 and stats["throughput_per_s"] > 0
    assert stats["throughput_batch"] == 64 and stats["threads"] == 1
    teacher_stats = measure_deployment(m.teacher, example(), warmup=1, repeats=3)
    ratios = compare_deployment(stats, teacher_stats)
    assert ratios["compression"] > 1 and ratios["size_ratio"] > 1
    assert ratios["speedup"] > 0 and ratios["throughput_gain"] > 0
    json.dumps(stats)
    assert m.training  # mode restored
    with pytest.raises(ConfigError, match="repeats"):
        measure_deployment(m, example(), repeats=0)


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    import onnxruntime as ort

    m = distilled()
    info = export_model(m, example(), tmp_path / "student.onnx")
    assert info["max_abs_diff"] <= 1e-4 and info["size_bytes"] > 0 and info["inputs"] == ["x"]
    session = ort.InferenceSession(str(tmp_path / "student.onnx"))
    x5 = example(5)
    ref = predict_module(m).eval()(x5).detach().numpy()
    got = session.run(None, {"x": x5.numpy()})[0]
    assert got.shape == (5, 3) and np.abs(got - ref).max() <= 1e-4
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_model(m, example(), tmp_path / "strict.onnx", tolerance=-1.0)
    assert not (tmp_path / "strict.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_dynamo_exporter_without_onnxscript_is_a_clear_error(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("onnxscript") is not None:
        pytest.skip("onnxscript is installed")
    with pytest.raises(ExportError, match="onnxscript"):
        export_model(distilled(), example(), tmp_path / "d.onnx", exporter="dynamo")
    assert not (tmp_path / "d.onnx").exists()


def test_onnx_export_of_a_text_student(bert_teacher: Backbone, tmp_path: Path) -> None:
    import onnxruntime as ort

    student = student_from_teacher(bert_teacher, keep_every=2)
    model = nn.Sequential(student, nn.Linear(32, 2)).eval()
    x = student.prepare(["good movie", "awful boring plot"])
    info = export_model(model, x, tmp_path / "text.onnx")
    assert info["inputs"] == list(x) and info["max_abs_diff"] <= 1e-4
    longer = student.prepare(["good fun film actor plot great movie", "bad", "fun"])
    session = ort.InferenceSession(str(tmp_path / "text.onnx"))
    got = session.run(None, {k: v.numpy() for k, v in longer.items()})[0]
    with torch.no_grad():
        ref = model(longer).numpy()
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_and_safetensors_reload_to_identical_outputs(tmp_path: Path) -> None:
    m = distilled().eval()
    x = example(4)
    with torch.no_grad():
        ref = m.predict(x)
    export_model(m, x, tmp_path / "student.pt", format="torchscript")
    loaded = torch.jit.load(str(tmp_path / "student.pt"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=0, atol=0)
    info = export_model(m, x, tmp_path / "student.safetensors", format="safetensors")
    assert info["max_abs_diff"] == 0.0
    with safe_open(str(tmp_path / "student.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith(("backbone.", "head.")) for k in keys)  # no teacher
    assert meta["transferkit_spec"] == "tk:smallcnn"
    fresh = distilled(seed=7).eval()
    assert not torch.equal(fresh.predict(x), ref)
    load_safetensors(fresh, tmp_path / "student.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(fresh.predict(x), ref, rtol=0, atol=0)
    with pytest.raises(ExportError, match="cannot load"):
        load_safetensors(nn.Linear(2, 2), tmp_path / "student.safetensors")
    with pytest.raises(ConfigError, match="format"):
        export_model(m, x, tmp_path / "m.bin", format="pickle")  # type: ignore[arg-type]
