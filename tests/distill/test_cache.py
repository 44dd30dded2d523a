"""Teacher cache: equals the live teacher, reused from disk, carried by the DataLoader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.distill.conftest import cnn, toy_images
from transferkit.backbones.base import Backbone
from transferkit.data.loaders import make_loader
from transferkit.distill import (
    DistillCollate,
    FrozenTeacher,
    TeacherCachedDataset,
    TeacherInputDataset,
    clear_teacher_memory,
    teacher_cache_key,
    teacher_outputs,
)
from transferkit.errors import ConfigError, DataError


def _teacher(seed: int = 0) -> FrozenTeacher:
    backbone = cnn(8, 3, seed=seed)
    torch.manual_seed(seed)
    return FrozenTeacher(backbone, nn.Linear(backbone.num_features, 3))


def test_cached_outputs_equal_live_teacher(tmp_path: Path) -> None:
    teacher, data = _teacher(), toy_images(20)
    cached = teacher_outputs(teacher, data.x, layers=[1, -1], batch_size=8, cache_dir=tmp_path)
    assert set(cached) == {"t_logits", "t_embed", "t_feats_1", "t_feats_2"}
    assert cached["t_feats_1"].shape == (20, 16, 4, 4) and cached["t_logits"].dtype == np.float32
    live = teacher.outputs(teacher.prepare(data.x[5:12]), [1, -1])
    for key, value in live.items():
        np.testing.assert_allclose(cached[key][5:12], value.numpy(), rtol=1e-5, atol=1e-6)
    pooled = teacher_outputs(teacher, data.x, layers=[1], pool=True)
    np.testing.assert_allclose(pooled["t_feats_1"], cached["t_feats_1"].mean((2, 3)), atol=1e-5)


def test_disk_cache_is_reused_and_keyed_by_weights_and_inputs(tmp_path: Path) -> None:
    teacher, data = _teacher(), toy_images(12)
    first = teacher_outputs(teacher, data.x, cache_dir=tmp_path)
    files = list(tmp_path.glob("teacher-*.safetensors"))
    assert len(files) == 1
    clear_teacher_memory()  # same weights and inputs -> same key: read from disk
    again = teacher_outputs(teacher, data.x, cache_dir=tmp_path)
    np.testing.assert_array_equal(first["t_logits"], again["t_logits"])
    key = teacher_cache_key(teacher, data.x, [], False)
    assert key != teacher_cache_key(teacher, data.x[:-1], [], False)
    assert key != teacher_cache_key(teacher, data.x, [1], False)
    assert key != teacher_cache_key(_teacher(seed=1), data.x, [], False)


def test_loader_carries_cached_outputs_as_float_tensors() -> None:
    teacher, data = _teacher(), toy_images(10)
    outs = teacher_outputs(teacher, data.x, layers=[0])
    student: Backbone = cnn(4, 2, seed=2)
    loader = make_loader(TeacherCachedDataset(data, outs), student.prepare, batch_size=4)
    b = next(iter(loader))
    assert b["x"].shape == (4, 1, 8, 8) and b["y"].dtype == torch.int64
    assert b["t_logits"].dtype == torch.float32 and b["t_logits"].shape == (4, 3)
    assert b["t_feats_0"].shape == (4, 8, 8, 8)
    torch.testing.assert_close(b["t_logits"], torch.from_numpy(outs["t_logits"][:4]))
    unlabelled = TeacherCachedDataset(data, outs, with_labels=False)
    assert "y" not in unlabelled[0]


def test_live_teacher_inputs_get_the_teachers_preprocessing() -> None:
    teacher, data = _teacher(), toy_images(6)
    student = cnn(4, 2, seed=2)
    collate = DistillCollate(lambda raw: student.prepare(raw) * 0.0, teacher.prepare)
    b = collate([TeacherInputDataset(data)[i] for i in range(3)])
    assert b["x"].abs().sum() == 0
    torch.testing.assert_close(b["x_teacher"], teacher.prepare(data.x[:3]))


def test_text_teachers_cache_pooled_hints_and_bad_inputs_are_clear_errors(
    bert_teacher: Backbone,
) -> None:
    data = toy_images(6)
    outs = {"t_logits": np.zeros((5, 3), np.float32)}
    with pytest.raises(DataError, match="5 rows for 6 examples"):
        TeacherCachedDataset(data, outs)
    with pytest.raises(DataError, match="clashes"):
        TeacherCachedDataset(data, {"x_t": np.zeros((6, 3))})
    text_teacher = FrozenTeacher(bert_teacher, nn.Linear(32, 2))
    texts = ["good movie", "awful boring plot", "fun"]
    pooled = teacher_outputs(text_teacher, texts, layers=[1], pool=True)
    live = text_teacher.outputs(text_teacher.prepare(texts), [1], pool=True)
    np.testing.assert_allclose(pooled["t_feats_1"], live["t_feats_1"].numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="cannot be cached"):
        teacher_outputs(text_teacher, ["good movie"], layers=[1])
    with pytest.raises(ConfigError, match="exceed"):
        teacher_outputs(_teacher(), data.x, layers=[0], max_bytes=100)
