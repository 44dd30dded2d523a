"""Bring-your-own data: tables (CSV, TSV, JSONL, Parquet), ``.npz`` arrays, image folders.

* A table holds one example per row: a text column and a label column (defaults ``"text"``
  and ``"label"``), or numeric ``feature_columns`` for tabular data. Rows are named in
  errors as ``row N`` (1-based data rows, header excluded) or ``line N`` for JSONL.
* An ``.npz`` holds arrays ``x`` and ``y``: ``x`` ``[N, H, W]`` / ``[N, H, W, C]`` is an image
  set, ``[N, F]`` a tabular one.
* An image folder holds one sub-folder per class (sorted names are the classes); ``x`` is
  the sorted list of image paths, decoded later by the backbone's ``prepare``.
"""

from __future__ import annotations

import difflib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferkit.data.labels import check_task, encode_labels
from transferkit.data.types import Dataset
from transferkit.errors import DataError

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".ndjson": None, ".parquet": None}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SUPPORTED = "a .csv/.tsv/.jsonl/.parquet table, an .npz with x and y, or a folder of images"


def decode_text(data: bytes, encoding: str, where: str) -> str:
    """Decode ``data`` strictly; on failure name the line and the encoding tried."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"cannot decode byte {data[exc.start]:#04x} as {encoding}",
            where=f"{where}, line {line} (byte offset {exc.start})",
            fix="save the file as UTF-8, or pass encoding='latin-1' (or the file's encoding)",
        ) from None
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}",
            where=where,
            fix="pass a Python codec name such as 'utf-8' or 'latin-1'",
        ) from None


def read_table(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a table file into a DataFrame; raises :class:`DataError` on unreadable input."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    text = decode_text(path.read_bytes(), encoding, str(path))
    if not text.strip():
        raise DataError(
            "the file is empty",
            where=str(path),
            fix="give a file with a header row and at least one data row",
        )
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(text, path)
    try:
        # only empty fields are missing: a text "NA" or "null" stays text
        return pd.read_csv(
            io.StringIO(text), sep=TABLE_SUFFIXES[suffix], keep_default_na=False, na_values=[""]
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(
            f"cannot parse the table: {exc}",
            where=str(path),
            fix="check quoting and that every row has the same number of fields",
        ) from None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(
            f"reading Parquet needs pyarrow: {exc}",
            where=str(path),
            fix="pip install pyarrow, or convert the file to CSV",
        ) from None
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise DataError(
            f"cannot read the Parquet file: {exc}",
            where=str(path),
            fix="check that the file is a complete Parquet file",
        ) from None


def _read_jsonl(text: str, path: Path) -> pd.DataFrame:
    records, lines = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON: {exc.msg}",
                where=f"{path}, line {n}",
                fix="write one JSON object per line",
            ) from None
        if not isinstance(rec, dict):
            raise DataError(
                "each line must be a JSON object",
                where=f"{path}, line {n}",
                fix='write lines like {"text": "...", "label": "..."}',
            )
        records.append(rec)
        lines.append(n)
    df = pd.DataFrame.from_records(records)
    df.attrs["lines"] = lines
    return df


def _row_namer(df: pd.DataFrame) -> Any:
    lines = df.attrs.get("lines")
    if lines is not None:
        return lambda i: f"line {lines[i]}"
    return lambda i: f"row {i + 1}"


def require_column(df: pd.DataFrame, column: str, option: str, where: str) -> pd.Series:
    """``df[column]``, or a :class:`DataError` listing the columns and the closest match."""
    if column in df.columns:
        return df[column]
    available = [str(c) for c in df.columns]
    close = difflib.get_close_matches(str(column), available, n=1, cutoff=0.4)
    hint = f"did you mean {option}={close[0]!r}? " if close else ""
    raise DataError(
        f"no column {column!r}",
        where=where,
        fix=f"{hint}available columns: {', '.join(available)}; set {option}=...",
    )


def load_table(
    path: Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    feature_columns: Sequence[str] | None = None,
    task: str = "classification",
    classes: Sequence[Any] | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """A text (or, with ``feature_columns``, tabular) Dataset from a table file."""
    check_task(task, str(path))
    df = read_table(path, encoding)
    if len(df) == 0:
        raise DataError(
            "the table has a header but no data rows", where=str(path), fix="add rows to the file"
        )
    rows = _row_namer(df)
    labels = require_column(df, label_column, "label_column", str(path))
    y, names = encode_labels(
        labels.to_numpy(dtype=object),
        task=task,
        classes=classes,
        where=f"{path}, column {label_column!r}",
        row_name=rows,
    )
    if feature_columns is not None:
        x = _features(df, list(feature_columns), path, rows)
        return Dataset(
            name=path.stem,
            modality="tabular",
            x=x,
            y=y,
            classes=names,
            task=task,
            meta={"source": str(path), "columns": list(feature_columns)},
        )
    x = _texts(df, text_column, path, rows)
    return Dataset(
        name=path.stem,
        modality="text",
        x=x,
        y=y,
        classes=names,
        task=task,
        meta={"source": str(path)},
    )


def _texts(df: pd.DataFrame, column: str, path: Path, rows: Any) -> list[str]:
    texts = require_column(df, column, "text_column", str(path))
    missing = texts.isna().to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"missing text in {int(missing.sum())} row(s)",
            where=f"{path}, column {column!r}, {rows(i)}",
            fix="fill in the text or drop those rows",
        )
    return [str(t) for t in texts.tolist()]


def _features(df: pd.DataFrame, columns: list[str], path: Path, rows: Any) -> np.ndarray:
    cols = [require_column(df, c, "feature_columns", str(path)) for c in columns]
    out = np.empty((len(df), len(cols)), dtype=np.float32)
    for j, (name, col) in enumerate(zip(columns, cols, strict=True)):
        num = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(num)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raw = col.iloc[i]
            shown = "an empty field" if pd.isna(raw) else f"{str(raw)!r}"
            raise DataError(
                f"feature value {shown} is missing or not a finite number "
                f"({int(bad.sum())} such row(s) in this column)",
                where=f"{path}, column {name!r}, {rows(i)}",
                fix="clean the column (impute or drop rows) before loading",
            )
        out[:, j] = num
    return out


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # numpy would try to unpickle anything that is not a zip
        raise DataError(
            "not an .npz archive (an .npz is a zip file of arrays)",
            where=str(path),
            fix="save it with numpy.savez(path, x=inputs, y=labels)",
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read the .npz file: {exc}",
            where=str(path),
            fix="save it with numpy.savez(path, x=..., y=...) (no object arrays)",
        ) from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(
                f"the .npz has no array {key!r}",
                where=str(path),
                fix=f"arrays found: {sorted(arrays)}; save with np.savez(path, x=inputs, y=labels)",
            )
    return arrays


def _check_image_array(x: np.ndarray, path: Path) -> None:
    """``[N, H, W]`` / ``[N, H, W, C]`` / ``[N, C, H, W]`` with C in 1, 3, 4 and H, W >= 1."""
    where = f"{path}, array 'x' of shape {x.shape}"
    if x.ndim == 4:
        last, first = x.shape[-1] in (1, 3, 4), x.shape[1] in (1, 3)
        if not (last or first):
            raise DataError(
                f"images must have 1, 3 or 4 channels, got {x.shape[-1]} (last axis)",
                where=where,
                fix="save grayscale [N, H, W] / [N, H, W, 1], RGB [N, H, W, 3] or RGBA images",
            )
        hw = x.shape[1:3] if last else x.shape[2:4]
    else:
        hw = x.shape[1:3]
    if min(hw) < 1:
        raise DataError(
            f"images have no pixels (height x width {hw[0]} x {hw[1]})",
            where=where,
            fix="save images of at least 1 x 1 pixel",
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(
            f"image pixels must be numbers, got dtype {x.dtype}",
            where=where,
            fix="save uint8 (0..255) or float (0..1) pixel arrays",
        )


def _npz_inputs(x: np.ndarray, path: Path) -> tuple[str, np.ndarray]:
    """(modality, x): rank 3/4 -> image (dtype kept), rank 2 -> tabular float32."""
    if x.ndim == 2:
        try:
            x = x.astype(np.float32)
        except (TypeError, ValueError):
            raise DataError(
                f"tabular features must be numbers, got dtype {x.dtype}",
                where=f"{path}, array 'x'",
                fix="save a numeric [N, F] array",
            ) from None
    elif x.ndim in (3, 4):
        _check_image_array(x, path)
    else:
        raise DataError(
            f"x has shape {x.shape}",
            where=f"{path}, array 'x'",
            fix="use [N, F] (tabular) or [N, H, W] / [N, H, W, C] (images)",
        )
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise DataError(
            "x holds NaN or infinite values",
            where=f"{path}, array 'x', index {i}",
            fix="clean or impute the inputs before saving",
        )
    return ("tabular" if x.ndim == 2 else "image"), x


def load_npz(
    path: Path, *, task: str = "classification", classes: Sequence[Any] | None = None
) -> Dataset:
    """An image (``x`` rank 3/4) or tabular (``x`` rank 2) Dataset from an ``.npz`` file."""
    arrays = _read_npz(path)
    raw_y = arrays["y"]
    if raw_y.ndim != 1 or len(raw_y) != len(arrays["x"]):
        raise DataError(
            f"y has shape {raw_y.shape} but x has {len(arrays['x'])} examples",
            where=str(path),
            fix="y must be a 1-D array with one label per row of x",
        )
    modality, x = _npz_inputs(arrays["x"], path)
    y, names = encode_labels(
        raw_y,
        task=task,
        classes=classes,
        where=f"{path}, array 'y'",
        row_name=lambda i: f"index {i}",
    )
    return Dataset(
        name=path.stem,
        modality=modality,
        x=x,
        y=y,
        classes=names,
        task=task,
        meta={"source": str(path)},
    )
