"""Multi-task learning core: tasks, sharing architectures, task weightings, gradient surgery.

* :mod:`~transferkit.mtl.tasks`: task specs, labels / masks in a batch, losses, metrics;
* :mod:`~transferkit.mtl.architectures`: hard sharing and MMoE;
  :mod:`~transferkit.mtl.adapters`: one peft adapter per task;
* :mod:`~transferkit.mtl.weighting`: the weighting interface and registry
  (:data:`WEIGHTINGS`), equal / uncertainty / DWA; :mod:`~transferkit.mtl.gradnorm`;
* :mod:`~transferkit.mtl.gradient_methods`: PCGrad, MGDA(-UB), CAGrad, Nash-MTL, whose math
  is in :mod:`~transferkit.mtl.gradients`; :mod:`~transferkit.mtl.surgery` applies them;
* :mod:`~transferkit.mtl.mixture`: several labelled datasets as one masked stream.

The registered method is :class:`transferkit.methods.multitask.MultiTask`.
"""

from transferkit.mtl import gradient_methods, gradnorm  # noqa: F401  (registration)
from transferkit.mtl.architectures import HardSharing, MMoE, TaskArchitecture
from transferkit.mtl.gradient_methods import MGDA, CAGrad, GradientMethod, NashMTL, PCGrad
from transferkit.mtl.gradnorm import GradNorm
from transferkit.mtl.mixture import Source, TaskMixture, sources_from_datasets
from transferkit.mtl.surgery import GradientSurgery, PendingStep
from transferkit.mtl.tasks import METRICS, TaskSpec, task_loss, task_metric
from transferkit.mtl.weighting import (
    WEIGHTINGS,
    DynamicWeightAverage,
    EqualWeighting,
    UncertaintyWeighting,
    Weighted,
    Weighting,
    build_weighting,
    register_weighting,
)

__all__ = [
    "METRICS",
    "MGDA",
    "WEIGHTINGS",
    "CAGrad",
    "DynamicWeightAverage",
    "EqualWeighting",
    "GradNorm",
    "GradientMethod",
    "GradientSurgery",
    "HardSharing",
    "MMoE",
    "NashMTL",
    "PCGrad",
    "PendingStep",
    "Source",
    "TaskArchitecture",
    "TaskMixture",
    "TaskSpec",
    "UncertaintyWeighting",
    "Weighted",
    "Weighting",
    "build_weighting",
    "register_weighting",
    "sources_from_datasets",
    "task_loss",
    "task_metric",
]
