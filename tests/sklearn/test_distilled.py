"""DistilledClassifier: teacher fitted first or taken as given, student distilled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from tests.sklearn.conftest import FAST, blobs
from transferkit.sklearn import DistilledClassifier, EstimatorParamError, TransferClassifier

TEACHER = {**FAST, "backbone_options": {"hidden": [32, 32]}, "epochs": 8}
STUDENT = {"student_options": {"hidden": [8]}, "lr": 3e-2, "epochs": 15, "random_state": 0}


def test_unfitted_teacher_is_cloned_and_fitted_first(xy) -> None:
    X, y = xy
    teacher = TransferClassifier(**TEACHER)
    est = DistilledClassifier(teacher=teacher, **STUDENT).fit(X, y)
    assert not hasattr(teacher, "model_")  # the parameter is left as it was given
    assert est.teacher_ is not teacher and est.teacher_.score(X, y) > 0.95
    assert type(est.model_).__name__ == "Distill" and est.backbone_ == "tk:mlp"
    assert est.model_.backbone.num_features == 8 and est.transform(X).shape == (120, 8)
    agreement = np.mean(est.predict(X) == est.teacher_.predict(X))
    assert agreement > 0.95 and est.score(X, y) > 0.9
    assert "teacher__lr" in est.get_params(deep=True)
    assert clone(est).set_params(teacher__lr=1e-3).teacher.lr == 1e-3


def test_fitted_teacher_is_used_as_given_and_left_untouched(xy) -> None:
    X, y = xy
    teacher = TransferClassifier(**TEACHER).fit(X, y)
    state = {k: v.clone() for k, v in teacher.model_.state_dict().items()}
    flags = [p.requires_grad for p in teacher.model_.parameters()]
    model = teacher.model_
    est = DistilledClassifier(teacher=teacher, **STUDENT).fit(X, y)
    assert est.teacher_ is teacher and teacher.model_ is model  # not refitted
    for k, v in teacher.model_.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [p.requires_grad for p in teacher.model_.parameters()] == flags


def test_without_labels_the_student_learns_from_the_teacher_alone(xy) -> None:
    """ce_weight = 0: the labels never reach the student's loss, so agreeing with the
    teacher (and hence being accurate) can only come from the distillation term."""
    X, y = xy
    teacher = TransferClassifier(**TEACHER).fit(X, y)
    kd_only = {"losses": {"kd": 1.0}, "ce_weight": 0.0, "temperature": 2.0}
    est = DistilledClassifier(teacher=teacher, method_params=kd_only, **STUDENT).fit(X, y)
    agreement = np.mean(est.predict(X) == teacher.predict(X))
    assert agreement > 0.9 and est.score(X, y) > 0.9


def test_teacher_from_a_spec_and_mismatched_teachers() -> None:
    X, y = blobs(60)
    est = DistilledClassifier(teacher="tk:mlp", **{**STUDENT, "epochs": 2}).fit(X, y)
    assert isinstance(est.teacher_, TransferClassifier) and est.teacher_.backbone_ == "tk:mlp"
    assert est.teacher_.random_state == est.random_state == 0
    two = y != "c"
    wrong = TransferClassifier(**{**FAST, "epochs": 1}).fit(X[two], y[two])
    with pytest.raises(EstimatorParamError, match="classes") as info:
        DistilledClassifier(teacher=wrong, **STUDENT).fit(X, y)
    assert info.value.where == "teacher.classes_"
    with pytest.raises(EstimatorParamError, match="teacher must be"):
        DistilledClassifier(teacher=42, **STUDENT).fit(X, y)
    with pytest.raises(EstimatorParamError, match="no automatic student"):
        DistilledClassifier(teacher=wrong)._model_spec("text")
