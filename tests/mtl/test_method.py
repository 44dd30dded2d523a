"""The registered ``multitask`` method: parameters, outputs, optimizer groups, evaluation."""

from __future__ import annotations

import pytest
import torch

from tests.mtl.helpers import TASKS, MultiTaskData, full_batch, make_mtl
from transferkit.errors import ConfigError
from transferkit.methods.base import METHODS
from transferkit.methods.multitask import MultiTask, MultiTaskParams, WeightingCallback


def test_registered_with_its_family_and_documented_params() -> None:
    cls = METHODS.get("multitask")
    assert cls is MultiTask and cls.family == "multi-task"
    doc = cls.describe_params()
    assert {"tasks", "architecture", "weighting", "backbone_lr_mult"} <= set(doc)


def test_params_accept_a_weighting_name_and_reject_bad_settings() -> None:
    p = MultiTaskParams(tasks=TASKS, weighting="pcgrad")
    assert p.weighting.name == "pcgrad" and p.weighting.params == {}
    with pytest.raises(ConfigError, match="did you mean cagrad"):
        MultiTaskParams(tasks=TASKS, weighting="cagrd")
    with pytest.raises(ConfigError, match="invalid parameters for weighting 'cagrad'"):
        MultiTaskParams(tasks=TASKS, weighting={"name": "cagrad", "params": {"c": -1}})
    with pytest.raises(ConfigError, match="used twice"):
        MultiTaskParams(tasks=[TASKS[0], TASKS[0]])


def test_training_step_outputs_and_weights() -> None:
    m = make_mtl("uncertainty")
    out = m.training_step(full_batch(MultiTaskData(8)))
    assert set(out) == {"loss", "loss_a", "loss_b", "weight_a", "weight_b"}
    assert float(out["weight_a"]) == 1.0 and float(out["weight_b"]) == 0.5  # exp(0) (/2)
    assert all(v.ndim == 0 for v in out.values())
    cbs = m.training_callbacks()
    assert len(cbs) == 1 and isinstance(cbs[0], WeightingCallback)


def test_param_groups_cover_every_trainable_parameter_once() -> None:
    m = make_mtl(
        {"name": "gradnorm", "params": {"lr_mult": 3.0}}, architecture="mmoe", backbone_lr_mult=0.5
    )
    groups = {g["name"]: g for g in m.param_groups(0.1)}
    assert set(groups) == {"backbone", "mtl", "heads", "weighting"}
    assert groups["backbone"]["lr"] == pytest.approx(0.05)
    assert groups["mtl"]["lr"] == groups["heads"]["lr"] == 0.1
    assert groups["weighting"]["lr"] == pytest.approx(0.3)
    assert groups["weighting"]["weight_decay"] == 0.0
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in m.parameters() if p.requires_grad)


def test_predict_predict_task_and_evaluate() -> None:
    m = make_mtl("equal")
    m.eval()
    data = MultiTaskData(12)
    batch = full_batch(data)
    out = m.predict(batch["x"])
    torch.testing.assert_close(m.predict_task(batch["x"], "a"), out["a"])
    scores = m.evaluate(batch)
    acc = float((out["a"].argmax(-1) == data.y_a).float().mean())
    assert set(scores) == {"a_accuracy", "b_r2"} and scores["a_accuracy"] == pytest.approx(acc)
    with pytest.raises(ConfigError, match="unknown task 'c'"):
        m.predict_task(batch["x"], "c")


def test_training_reduces_every_task_loss() -> None:
    m = make_mtl("pcgrad")
    batch = full_batch(MultiTaskData(32))
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    first = m.training_step(batch)
    m.zero_grad()
    for _ in range(40):
        out = m.training_step(batch)
        opt.zero_grad()
        m.backward(out)
        opt.step()
    assert float(out["loss_a"]) < 0.7 * float(first["loss_a"])
    assert float(out["loss_b"]) < 0.7 * float(first["loss_b"])
