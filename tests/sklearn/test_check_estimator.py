"""scikit-learn's own estimator checks, run on every estimator with a fast configuration.

TransferClassifier, TransferRegressor and DistilledClassifier pass every check that
applies (the array-API check is skipped by scikit-learn itself unless SCIPY_ARRAY_API=1).
DomainAdaptationClassifier's ``fit`` needs unlabelled target rows, which the generic
checks never pass (they call ``fit(X, y)`` with every row labelled and no
``sample_domain``), so exactly the checks that fit it are expected to fail — strictly: a
check listed here that starts passing fails the suite, so the list cannot go stale. The
API checks (parameters, clone, repr, unfitted errors, tags, ...) still run on it, and
tests/sklearn/test_domain.py covers what the fitting checks would (determinism, pickling,
label handling). See docs/sklearn.md for the table.
"""

from __future__ import annotations

from typing import Any

from sklearn.utils.estimator_checks import parametrize_with_checks

from tests.sklearn.conftest import FAST
from transferkit.sklearn import (
    DistilledClassifier,
    DomainAdaptationClassifier,
    TransferClassifier,
    TransferRegressor,
)

QUICK = {**FAST, "train_params": {"eval_batch_size": 512}}
NEEDS_TARGET = (
    "fit() needs unlabelled target rows (sample_domain < 0, or labels -1); the generic "
    "check fits on labelled rows only"
)
DA_FITTING_CHECKS = [
    "check_classifier_data_not_an_array",
    "check_classifiers_classes",
    "check_classifiers_train",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_supervised_y_2d",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
]


def expected_failed_checks(estimator: Any) -> dict[str, str]:
    if isinstance(estimator, DomainAdaptationClassifier):
        return dict.fromkeys(DA_FITTING_CHECKS, NEEDS_TARGET)
    return {}


ESTIMATORS = [
    TransferClassifier(**QUICK),
    TransferRegressor(**QUICK),
    DistilledClassifier(
        teacher=TransferClassifier(**{**QUICK, "epochs": 4}),
        student_options={"hidden": [8]},
        **{k: v for k, v in QUICK.items() if k != "backbone_options"},
    ),
    DomainAdaptationClassifier(**QUICK),
]


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=expected_failed_checks, xfail_strict=True
)
def test_sklearn_compatible_estimator(estimator: Any, check: Any) -> None:
    check(estimator)
