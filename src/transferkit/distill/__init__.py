"""Knowledge-distillation building blocks: frozen teacher, hint maps, teacher cache,
students initialised from their teacher.

The losses live in :mod:`transferkit.losses.distill` (KD, DKD),
:mod:`transferkit.losses.distill_features` (FitNets, attention transfer) and
:mod:`transferkit.losses.distill_relational` (RKD); the registered method is
:mod:`transferkit.methods.distill`.
"""

from transferkit.distill.cache import clear_teacher_memory, teacher_cache_key, teacher_outputs
from transferkit.distill.data import DistillCollate, TeacherCachedDataset, TeacherInputDataset
from transferkit.distill.features import HintTap, forward_with_hints, hint_dims
from transferkit.distill.student import kept_layers, student_from_teacher
from transferkit.distill.teacher import FrozenTeacher, feature_key

__all__ = [
    "DistillCollate",
    "FrozenTeacher",
    "HintTap",
    "TeacherCachedDataset",
    "TeacherInputDataset",
    "clear_teacher_memory",
    "feature_key",
    "forward_with_hints",
    "hint_dims",
    "kept_layers",
    "student_from_teacher",
    "teacher_cache_key",
    "teacher_outputs",
]
