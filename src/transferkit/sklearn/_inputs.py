"""Reading estimator inputs: which modality ``X`` is, validated, plus the error types.

The modality is read off the inputs, never configured:

* a 2-D numeric array, a pandas ``DataFrame`` of numbers, a list of rows -> ``"tabular"``
  (feature vectors ``[N, F]``, float32; validated by scikit-learn's ``validate_data``, which
  also sets ``n_features_in_`` and ``feature_names_in_``);
* a list / tuple / 1-D array / pandas ``Series`` (or one-column ``DataFrame``) of ``str``
  -> ``"text"`` (a ``list[str]``);
* a list / tuple / ``Series`` of PIL images, or a 3-D ``[N, H, W]`` / 4-D ``[N, H, W, C]``
  numeric array -> ``"image"``.

Every user error is a :class:`~transferkit.errors.TransferkitError` (what / where / fix)
that is *also* the built-in exception scikit-learn's conventions ask for (``ValueError``,
``TypeError``, ``NotFittedError``), so ``check_estimator`` and user code catching
``ValueError`` both keep working. The message keeps scikit-learn's original wording
(``"X has 3 features, but ... is expecting 4 features as input"``) in ``what``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_array, check_consistent_length, validate_data

from transferkit.errors import ConfigError, DataError, TransferkitError

TABULAR, TEXT, IMAGE = "tabular", "text", "image"


class EstimatorInputError(DataError, ValueError):
    """Bad ``X`` / ``y`` / ``sample_domain`` given to an estimator (also a ``ValueError``)."""


class EstimatorTypeError(DataError, TypeError):
    """Inputs of a type that cannot be read at all (also a ``TypeError``)."""


class EstimatorParamError(ConfigError, ValueError):
    """An invalid estimator hyper-parameter, found at ``fit`` (also a ``ValueError``)."""


class EstimatorNotFittedError(TransferkitError, NotFittedError):
    """``predict`` / ``transform`` / ``score`` called before ``fit``."""


def reraise(exc: Exception, where: str, fix: str) -> TransferkitError:
    """``exc`` (a ValueError / TypeError from scikit-learn or numpy) as our error type."""
    cls = EstimatorTypeError if isinstance(exc, TypeError) else EstimatorInputError
    return cls(str(exc), where=where, fix=fix)


def _is_image(v: Any) -> bool:
    return isinstance(v, Image.Image)


def _column_values(X: Any) -> Sequence[Any] | None:
    """The values of a pandas Series / one-column DataFrame / 1-D array / list, else None."""
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # DataFrame
        return X.iloc[:, 0].tolist() if X.shape[1] == 1 else None
    if hasattr(X, "iloc"):  # Series
        return X.tolist()
    if isinstance(X, np.ndarray):
        return X.tolist() if X.ndim == 1 and X.dtype.kind in "OUS" else None
    if isinstance(X, list | tuple):
        return X
    return None


def detect_modality(X: Any) -> str:
    """``"tabular"``, ``"text"`` or ``"image"`` for the raw input ``X`` (see module doc)."""
    values = _column_values(X)
    if values is not None and len(values) > 0:
        if any(isinstance(v, str) for v in values[:256]):
            return TEXT
        if any(_is_image(v) for v in values[:256]):
            return IMAGE
    if isinstance(X, np.ndarray) and X.ndim in (3, 4) and X.dtype.kind in "uif":
        return IMAGE
    return TABULAR


def _check_all(values: Sequence[Any], ok: Any, kind: str, fix: str) -> None:
    for i, v in enumerate(values):
        if not ok(v):
            raise EstimatorInputError(
                f"X mixes {kind} with a {type(v).__name__} value",
                where=f"X[{i}] = {str(v)[:60]!r}",
                fix=fix,
            )


def read_X(est: Any, X: Any, *, reset: bool, modality: str | None = None) -> tuple[Any, str]:
    """``(raw inputs ready for a Dataset, modality)``; sets ``n_features_in_`` etc. on reset.

    ``modality`` (at predict time: the fitted one) must match what ``X`` holds.
    """
    found = detect_modality(X)
    if modality is not None and found != modality:
        raise EstimatorInputError(
            f"X holds {found} inputs but the estimator was fitted on {modality} inputs",
            where="X",
            fix=f"pass {modality} inputs, as in fit",
        )
    if found == TABULAR:
        try:
            arr = validate_data(est, X, reset=reset, dtype=np.float32)
        except TypeError as exc:
            raise reraise(exc, "X", "pass numbers: a 2-D array, a DataFrame or lists") from None
        except ValueError as exc:
            fix = "pass a finite numeric 2-D array [n_samples, n_features]"
            raise reraise(exc, "X", fix) from None
        return (arr if arr.flags.writeable else arr.copy()), TABULAR
    if reset:  # a refit on text / images forgets what a tabular fit learned
        for attr in ("n_features_in_", "feature_names_in_"):
            if attr in vars(est):
                delattr(est, attr)
    if isinstance(X, np.ndarray) and X.dtype.kind in "uif":
        return X, IMAGE  # [N, H, W] or [N, H, W, C]; the backbone's prepare checks pixels
    values = list(_column_values(X) or [])
    if found == IMAGE:
        _check_all(values, _is_image, "PIL images", "make every example a PIL.Image")
        return values, IMAGE
    _check_all(values, lambda v: isinstance(v, str), "text", "make every example a str")
    _check_text_column(est, X, reset)
    return values, TEXT


def _check_text_column(est: Any, X: Any, reset: bool) -> None:
    """A one-column DataFrame's column name: stored as ``feature_names_in_`` by fit,
    compared by predict."""
    if not hasattr(X, "columns"):
        return
    name = str(X.columns[0])
    if reset:
        est.feature_names_in_ = np.asarray([name], dtype=object)
        return
    fitted = getattr(est, "feature_names_in_", None)
    if fitted is not None and name != str(fitted[0]):
        raise EstimatorInputError(
            f"the text column is named {name!r} but was {fitted[0]!r} during fit",
            where="X.columns",
            fix="pass the same column as in fit",
        )


def read_y(y: Any, n: int, *, numeric: bool) -> np.ndarray:
    """A 1-D, finite target of length ``n`` (column vectors warn, as in scikit-learn)."""
    if y is None:
        raise EstimatorInputError(
            "this estimator requires y to be passed, but the target y is None",
            where="fit(X, y)",
            fix="pass the labels / targets as y",
        )
    try:
        arr = check_array(
            y,
            ensure_2d=False,
            dtype="numeric" if numeric else None,
            input_name="y",
            ensure_min_samples=1,
        )
        if arr.ndim == 2 and arr.shape[1] == 1:
            from sklearn.utils.validation import column_or_1d

            arr = column_or_1d(arr, warn=True)
        if arr.ndim != 1:
            raise ValueError(f"y should be a 1d array, got an array of shape {arr.shape}")
        check_consistent_length(np.empty((n, 0)), arr)
    except TypeError as exc:
        raise reraise(exc, "y", "pass one label per row of X") from None
    except ValueError as exc:
        raise reraise(exc, "y", "pass a 1-D array with one finite value per row of X") from None
    return arr


def check_min_samples(n: int, what: str = "X") -> None:
    if n < 2:
        raise EstimatorInputError(
            f"n_samples={n}: training needs at least 2 samples",
            where=what,
            fix="pass more examples",
        )


def encode_classes(y: np.ndarray, where: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """``(classes_, codes)``: the sorted distinct labels and each row's index into them."""
    from sklearn.utils.multiclass import check_classification_targets

    try:
        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as exc:
        raise reraise(exc, where, "use labels of one type (all str or all int)") from None
    except ValueError as exc:
        raise reraise(
            exc,
            where,
            "a classifier needs discrete labels; for real-valued targets use TransferRegressor",
        ) from None
    if len(classes) < 2:
        raise EstimatorInputError(
            f"y holds only one class ({classes[0]!r}): a classifier needs at least 2 classes",
            where=where,
            fix="pass examples of at least two classes",
        )
    return classes, codes.astype(np.int64).reshape(-1)
