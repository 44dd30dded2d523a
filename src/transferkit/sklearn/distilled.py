"""``DistilledClassifier``: a large teacher distilled into a small student.

``fit(X, y)`` first gets a fitted teacher — the ``teacher`` estimator as given when it is
already fitted (it is not refitted or modified), a clone of it fitted on ``(X, y)``
otherwise, or a :class:`~transferkit.sklearn.TransferClassifier` built from a backbone
spec string — and then trains the ``student`` backbone + head with the registered
``distill`` method: ``ce_weight * CE(z_s, y) + sum_k w_k L_k`` with, by default,
Hinton et al.'s ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``
(https://arxiv.org/abs/1503.02531; ``method_params`` selects ``dkd``, ``fitnets``, ``at``,
``rkd`` and their weights). The teacher runs frozen, on inputs prepared its own way.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from transferkit.data.types import Dataset
from transferkit.sklearn._inputs import EstimatorParamError, encode_classes
from transferkit.sklearn.estimators import TransferClassifier

#: ``student="auto"``: the student for each input modality (text has none: name one).
AUTO_STUDENTS = {"tabular": ("tk:mlp", {"hidden": [64]}), "image": ("tk:smallcnn", {})}


class DistilledClassifier(TransferClassifier):
    """Distil a teacher classifier into a smaller student.

    Args:
        teacher: a :class:`TransferClassifier` (fitted: used as is; unfitted: a clone is
            fitted on ``(X, y)`` first), a backbone spec string (a ``TransferClassifier``
            with that backbone and this estimator's ``lr`` / ``epochs`` / ``batch_size``)
            or ``None`` (``TransferClassifier(backbone="auto")`` with those settings).
        student: the student's backbone spec, or ``"auto"``: ``tk:mlp`` with one hidden
            layer of 64 for tabular inputs, ``tk:smallcnn`` for images (text: name one,
            e.g. a small ``hf:`` directory).
        student_options: options of the student backbone.
        method_params: :class:`~transferkit.methods.distill.DistillParams`
            (``{"losses": {"kd": 1.0}, "temperature": 4.0, "ce_weight": 1.0}`` by default).
        Other parameters: as for :class:`TransferClassifier`; they train the student.

    Attributes:
        teacher_: the fitted teacher; ``classes_`` and the attributes of
        :mod:`transferkit.sklearn.base` describe the student.
    """

    _families = ("distillation",)

    def __init__(
        self,
        teacher: TransferClassifier | str | None = None,
        student: str = "auto",
        student_options: dict[str, Any] | None = None,
        method_params: dict[str, Any] | None = None,
        *,
        pretrained: bool = True,
        head: str = "linear",
        lr: float = 1e-3,
        epochs: int = 10,
        batch_size: int = 32,
        validation_fraction: float | None = None,
        train_params: dict[str, Any] | None = None,
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
        verbose: bool = False,
    ) -> None:
        self.teacher = teacher
        self.student = student
        self.student_options = student_options
        self.method_params = method_params
        self.pretrained = pretrained
        self.head = head
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.train_params = train_params
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _model_spec(self, modality: str) -> tuple[Any, Any, Any]:
        if self.student == "auto" and modality in AUTO_STUDENTS:
            spec, default = AUTO_STUDENTS[modality]
            options = default if self.student_options is None else self.student_options
            return spec, options, "distill"
        if self.student == "auto":
            raise EstimatorParamError(
                f"there is no automatic student for {modality} inputs",
                where="student",
                fix="name a small backbone, e.g. student='hf:<a small encoder directory>'",
            )
        return self.student, self.student_options, "distill"

    def _fitted_teacher(self, X: Any, y: Any, seed: int) -> TransferClassifier:
        """The teacher given (fitted), or a fitted clone / a new one."""
        t = self.teacher
        if isinstance(t, TransferClassifier):
            try:
                check_is_fitted(t, "model_")
                return t
            except NotFittedError:
                t = clone(t)
                if t.random_state is None:
                    t.set_params(random_state=seed)
        elif t is None or isinstance(t, str):
            t = TransferClassifier(
                backbone=t or "auto",
                lr=self.lr,
                epochs=self.epochs,
                batch_size=self.batch_size,
                random_state=seed,
                device=self.device,
                verbose=self.verbose,
            )
        else:
            raise EstimatorParamError(
                f"teacher must be a TransferClassifier, a backbone spec or None, got "
                f"{type(t).__name__}",
                where="teacher",
                fix="e.g. teacher=TransferClassifier(backbone='packaged:minilm-l6')",
            )
        return t.fit(X, y)

    def fit(self, X: Any, y: Any) -> DistilledClassifier:
        """Fit (or take) the teacher, then distil it into the student on ``(X, y)``."""
        from transferkit.sklearn._training import resolve_seed

        raw, modality, y_arr = self._read_fit_inputs(X, y, numeric=False)
        classes, codes = encode_classes(y_arr)
        seed = resolve_seed(self.random_state)
        teacher = self._fitted_teacher(X, y, seed)
        _check_teacher(teacher, classes, modality)
        self.classes_ = classes
        ds = Dataset("X", modality, raw, codes, classes=[str(c) for c in classes])  # type: ignore[arg-type]
        modules = {  # copies: distillation freezes them in place, the teacher stays as it is
            "teacher_backbone": copy.deepcopy(teacher.model_.backbone),
            "teacher_head": copy.deepcopy(teacher.model_.head),
        }
        prepare = modules["teacher_backbone"].prepare
        self._fit_dataset(ds, seed, extra=modules, teacher_prepare=prepare)
        self.teacher_ = teacher
        return self


def _check_teacher(teacher: TransferClassifier, classes: np.ndarray, modality: str) -> None:
    """The teacher must read the same inputs and predict the same classes."""
    if teacher.modality_ != modality:
        raise EstimatorParamError(
            f"the teacher was fitted on {teacher.modality_} inputs, X holds {modality}",
            where="teacher",
            fix="give a teacher fitted on the same kind of inputs",
        )
    if len(teacher.classes_) != len(classes) or not np.array_equal(teacher.classes_, classes):
        raise EstimatorParamError(
            f"the teacher predicts classes {list(teacher.classes_)[:10]}, y holds "
            f"{list(classes)[:10]}",
            where="teacher.classes_",
            fix="fit the teacher on the same labels (or let fit() fit it)",
        )
    if getattr(teacher.model_, "layers", None) is not None:
        raise EstimatorParamError(
            "the teacher's linear probe reads concatenated layers; distillation needs a "
            "head on the backbone's final features",
            where="teacher.method_params['layers']",
            fix="fit the teacher without layers, or with method='finetune'",
        )
