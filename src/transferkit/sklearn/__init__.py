"""scikit-learn estimators over transferkit's backbones and methods.

* :class:`TransferClassifier` / :class:`TransferRegressor` — ``backbone`` + ``method``
  (``finetune``, ``linear_probe``, ...) with ``method_params``;
* :class:`DomainAdaptationClassifier` — skada's convention: ``fit(X, y, sample_domain)``,
  positive domain ids are labelled source rows, negative ones unlabelled target rows;
* :class:`DistilledClassifier` — a teacher (fitted first, or given fitted) distilled into a
  smaller student.

See ``docs/sklearn.md`` for quick starts and which ``check_estimator`` checks apply.
"""

from transferkit.sklearn._inputs import (
    EstimatorInputError,
    EstimatorNotFittedError,
    EstimatorParamError,
    EstimatorTypeError,
)
from transferkit.sklearn.distilled import DistilledClassifier
from transferkit.sklearn.domain import DomainAdaptationClassifier
from transferkit.sklearn.estimators import TransferClassifier, TransferRegressor

__all__ = [
    "DistilledClassifier",
    "DomainAdaptationClassifier",
    "EstimatorInputError",
    "EstimatorNotFittedError",
    "EstimatorParamError",
    "EstimatorTypeError",
    "TransferClassifier",
    "TransferRegressor",
]
