"""Turn raw label values into class ids (classification) or float targets (regression).

Class names are strings. Raw labels are keyed by their text, with integer-valued numbers
written without a decimal point, so ``1``, ``1.0`` and ``"1"`` are the same class. Without a
declared label set, the classes are the distinct labels in sorted order (numerically when
every label is a number, so ``2`` comes before ``10``); class id ``k`` is ``classes[k]``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transferkit.errors import DataError

TASKS = ("classification", "regression")
RowName = Callable[[int], str]


def default_row_name(i: int) -> str:
    """Human row name for 0-based example ``i``: ``row i+1``."""
    return f"row {i + 1}"


def check_task(task: str, where: str) -> str:
    if task not in TASKS:
        raise DataError(
            f"unknown task {task!r}",
            where=where,
            fix="use task='classification' or task='regression'",
        )
    return task


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_):
        return math.isnan(float(v))
    return False


def label_key(v: Any) -> str:
    """The class name of a raw label: integer-valued numbers lose their ``.0``."""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _sorted_classes(raw: Sequence[Any], keys: list[str]) -> list[str]:
    distinct = sorted(set(keys))
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in raw)
    return sorted(distinct, key=float) if numeric else distinct


def encode_labels(
    raw: Sequence[Any] | np.ndarray,
    *,
    task: str = "classification",
    classes: Sequence[Any] | None = None,
    where: str,
    row_name: RowName = default_row_name,
) -> tuple[np.ndarray, list[str] | None]:
    """Validate and encode raw labels.

    Args:
        raw: one label per example.
        task: ``"classification"`` -> int64 ids ``[N]`` and the class names;
            ``"regression"`` -> float32 targets ``[N]`` and ``None``.
        classes: the declared label set (classification); labels outside it are errors.
        where: the file / column, for error messages.
        row_name: maps a 0-based example index to how the user finds the row in the file.

    Raises:
        DataError: a missing (NaN) label, a label outside ``classes``, a non-numeric or
            infinite regression target, or fewer than two classes.
    """
    check_task(task, where)
    values = raw.tolist() if isinstance(raw, np.ndarray) else list(raw)
    if not values:
        raise DataError("no labelled examples", where=where, fix="add rows with labels")
    missing = [i for i, v in enumerate(values) if _is_missing(v)]
    if missing:
        raise DataError(
            f"missing (NaN/empty) label in {len(missing)} row(s), first at {row_name(missing[0])}",
            where=f"{where}, {row_name(missing[0])}",
            fix="fill in the labels or drop those rows",
        )
    if task == "regression":
        return _encode_regression(values, where, row_name), None
    return _encode_classes(values, classes, where, row_name)


def _encode_regression(values: list[Any], where: str, row_name: RowName) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float32)
    for i, v in enumerate(values):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise DataError(
                f"regression target {v!r} is not a number",
                where=f"{where}, {row_name(i)}",
                fix="fix the value or use task='classification'",
            ) from None
        if not math.isfinite(f):
            raise DataError(
                f"regression target {v!r} is not finite",
                where=f"{where}, {row_name(i)}",
                fix="fix or drop the row",
            )
        out[i] = f
    return out


def _encode_classes(
    values: list[Any], classes: Sequence[Any] | None, where: str, row_name: RowName
) -> tuple[np.ndarray, list[str]]:
    keys = [label_key(v) for v in values]
    if classes is None:
        names = _sorted_classes(values, keys)
    else:
        names = [label_key(c) for c in classes]
        if len(set(names)) != len(names):
            raise DataError(
                f"the declared classes {names} contain duplicates",
                where=where,
                fix="list each class once",
            )
    index = {name: k for k, name in enumerate(names)}
    for i, key in enumerate(keys):
        if key not in index:
            raise DataError(
                f"label {values[i]!r} is not one of the declared classes {names}",
                where=f"{where}, {row_name(i)}",
                fix="correct the label, or add it to classes=[...]",
            )
    y = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(
            f"only one class ({names[int(present[0])]!r}) occurs in the labels",
            where=where,
            fix="a classifier needs examples of at least two classes: check the labels "
            "(the label column, or the class sub-folders of an image folder)",
        )
    return y, names
