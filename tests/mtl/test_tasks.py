"""Task specs, labels and masks in a batch, per-kind losses and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from transferkit.errors import ConfigError, DataError
from transferkit.mtl.tasks import (
    TaskLabels,
    TaskSpec,
    check_tasks,
    gather_labels,
    present_tasks,
    task_loss,
    task_metric,
)

CLS = TaskSpec(name="cls", kind="classification", num_outputs=3)
MULTI = TaskSpec(name="tags", kind="multilabel", num_outputs=2)
REG = TaskSpec(name="score", kind="regression", num_outputs=1)
REG2 = TaskSpec(name="box", kind="regression", num_outputs=2)


def test_losses_by_kind_match_hand_computation() -> None:
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    lse = [math.log(math.exp(2) + 2), math.log(math.e + 2)]
    want = ((lse[0] - 2.0) + (lse[1] - 0.0)) / 2
    assert float(task_loss(z, TaskLabels(y, None), "classification")) == pytest.approx(want)

    zm, ym = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    bce = (math.log(2) + math.log(1 + math.e)) / 2  # -log s(0) and -log(1 - s(1))
    assert float(task_loss(zm, TaskLabels(ym, None), "multilabel")) == pytest.approx(bce)

    zr, yr = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    assert float(task_loss(zr, TaskLabels(yr, None), "regression")) == pytest.approx(2.5)
    z2, y2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    assert float(task_loss(z2, TaskLabels(y2, None), "regression")) == pytest.approx(0.5)


def test_masked_loss_is_the_mean_over_labelled_rows() -> None:
    batch = {
        "x": torch.zeros(4, 2),
        "y_score": torch.tensor([1.0, float("nan"), 3.0, float("inf")]),
        "m_score": torch.tensor([True, False, True, False]),
    }
    lab = gather_labels(batch, [REG])["score"]
    out = torch.tensor([0.0, 5.0, 0.0, 5.0], requires_grad=True)
    loss = task_loss(out, lab, "regression")
    assert float(loss.detach()) == pytest.approx((1 + 9) / 2)
    loss.backward()
    assert out.grad is not None and out.grad[1] == 0 and out.grad[3] == 0  # no leak


def test_presence_and_absent_tasks() -> None:
    batch = {
        "x": torch.zeros(3, 2),
        "y_cls": torch.tensor([0, -1, 2]),
        "m_cls": torch.tensor([1, 0, 1]),  # integer masks are accepted
        "y_score": torch.zeros(3),
        "m_score": torch.zeros(3, dtype=torch.bool),
    }
    labels = gather_labels(batch, [CLS, MULTI, REG])
    assert set(labels) == {"cls", "score"}  # no y_tags: tags absent
    assert labels["cls"].y.tolist() == [0, 0, 2]  # the unlabelled -1 is zeroed
    assert present_tasks(labels, [CLS, MULTI, REG]) == ["cls"]


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("y_cls", torch.tensor([0, 3, 1]), "invalid classification label"),
        ("y_cls", torch.tensor([0.0, 1.0, 1.0]), "expected int64"),
        ("y_tags", torch.tensor([[0.0, 2.0]] * 3), "invalid multilabel label"),
        ("y_tags", torch.zeros(3, 3), r"expected \(3, 2\)"),
        ("y_score", torch.tensor([0.0, float("nan"), 1.0]), "invalid regression label"),
        ("y_oops", torch.zeros(3), "names no configured task"),
        ("m_score", torch.ones(2, dtype=torch.bool), r"not \(3,\)"),
    ],
)
def test_bad_labels_raise_data_errors(key: str, value: torch.Tensor, match: str) -> None:
    batch = {
        "x": torch.zeros(3, 2),
        "y_cls": torch.tensor([0, 1, 2]),
        "y_tags": torch.zeros(3, 2),
        "y_score": torch.zeros(3),
        key: value,
    }
    with pytest.raises(DataError, match=match) as err:
        present_tasks(gather_labels(batch, [CLS, MULTI, REG]), [CLS, MULTI, REG])
    assert err.value.where is not None and key in err.value.where


def test_invalid_label_on_an_unlabelled_row_is_fine() -> None:
    batch = {"x": torch.zeros(2, 2), "y_cls": torch.tensor([7, 1]), "m_cls": torch.tensor([0, 1])}
    assert present_tasks(gather_labels(batch, [CLS]), [CLS]) == ["cls"]


def test_regression_with_several_outputs_and_missing_inputs() -> None:
    lab = gather_labels({"x": torch.zeros(2, 1), "y_box": torch.ones(2, 2)}, [REG2])
    assert lab["box"].y.shape == (2, 2)
    with pytest.raises(DataError, match="no inputs"):
        gather_labels({"y_box": torch.ones(2, 2)}, [REG2])


def test_task_specs_are_validated() -> None:
    with pytest.raises(ValidationError):
        TaskSpec(name="bad name", num_outputs=2)
    with pytest.raises(ValidationError, match="num_outputs >= 2"):
        TaskSpec(name="c", kind="classification", num_outputs=1)
    with pytest.raises(ConfigError, match="used twice") as err:
        check_tasks([CLS, CLS])
    assert err.value.where == "method.params.tasks[1].name"
    with pytest.raises(ConfigError, match="no task"):
        check_tasks([])


def test_metrics() -> None:
    out = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert task_metric(CLS, out, [0, 1, 0]) == pytest.approx(2 / 3)
    assert task_metric(CLS, out, [0, 1, 0], mask=[1, 1, 0]) == 1.0
    assert math.isnan(task_metric(CLS, out, [0, 1, 0], mask=[0, 0, 0]))
    tags = np.array([[1.0, -1.0], [1.0, 1.0]])
    assert task_metric(MULTI, tags, [[1, 0], [0, 1]]) == pytest.approx(0.8)  # tp 2 fp 1 fn 0
    assert task_metric(REG, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
