"""Read a run directory for reporting, tolerating missing or damaged files.

A report is most needed when a run went wrong, so nothing here raises on a missing or
partly written file: :func:`load_run` returns what it could read plus human-readable
``notes`` that the report shows. Only a path that is not a directory at all, or a
directory with none of the three run files, is an error.

Log records are grouped into curves by their ``"run"`` key (several trainings may log
into one ``log.jsonl``): records with a ``"val_*"`` key are epoch-end validation records,
records with ``"loss"`` are training steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferkit.errors import CheckpointError

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
DEFAULT_RUN = "main"


@dataclass
class Curves:
    """Learning curves of one training: ``(x, y)`` point lists keyed by quantity."""

    train_loss: list[tuple[float, float]] = field(default_factory=list)
    val: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


@dataclass
class RunData:
    """Everything a report shows about one run directory."""

    path: Path
    metrics: dict[str, Any] | None = None
    config_text: str | None = None
    curves: dict[str, Curves] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path.name or str(self.path)

    def get(self, key: str, kind: type | tuple[type, ...] = object) -> Any:
        """``metrics[key]`` if present and of type ``kind``, else None."""
        if self.metrics is None:
            return None
        value = self.metrics.get(key)
        return value if isinstance(value, kind) else None


def load_run(run_dir: str | Path) -> RunData:
    """Read ``metrics.json``, ``config.yaml`` and ``log.jsonl`` of ``run_dir``.

    Raises:
        CheckpointError: ``run_dir`` is not a directory or holds none of the three files.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise CheckpointError(
            "run directory not found",
            where=str(d),
            fix="pass the directory given to `transferkit run --out`",
        )
    names = (METRICS_FILE, CONFIG_FILE, LOG_FILE)
    if not any((d / n).is_file() for n in names):
        raise CheckpointError(
            f"{str(d)!r} is not a transferkit run directory: it has no {', '.join(names)}",
            where=str(d),
            fix="pass the directory given to `transferkit run --out`",
        )
    run = RunData(path=d)
    run.metrics = _read_metrics(d / METRICS_FILE, run.notes)
    run.config_text = _read_text(d / CONFIG_FILE, run.notes)
    records = _read_log(d / LOG_FILE, run.notes)
    if records is not None:
        run.curves = build_curves(records)
        if not run.curves:
            run.notes.append(f"{LOG_FILE} holds no loss or validation records to plot.")
    return run


def _read_text(path: Path, notes: list[str]) -> str | None:
    if not path.is_file():
        notes.append(f"{path.name} is missing.")
        return None
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        notes.append(f"{path.name} could not be read ({exc.strerror}).")
        return None


def _read_metrics(path: Path, notes: list[str]) -> dict[str, Any] | None:
    text = _read_text(path, notes)
    if text is None:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        notes.append(f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg}).")
        return None
    if not isinstance(obj, dict):
        notes.append(f"{path.name} holds a JSON {type(obj).__name__}, not an object.")
        return None
    return obj


def _read_log(path: Path, notes: list[str]) -> list[dict[str, Any]] | None:
    """Parsed log records; lines that are not JSON objects are skipped with one note."""
    text = _read_text(path, notes)
    if text is None:
        return None
    records, bad = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            records.append(obj)
        else:
            bad.append(lineno)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        notes.append(
            f"{len(bad)} line(s) of {path.name} were not valid JSON records and were "
            f"skipped (line {shown}); a run killed mid-write leaves such a line."
        )
    return records


def _num(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def build_curves(records: list[dict[str, Any]]) -> dict[str, Curves]:
    """Group log records into per-run curves.

    Training loss is ``loss`` against ``step`` (the record's position when it has no step);
    validation metrics are the ``val_*`` keys against ``epoch`` (or ``step``).
    """
    curves: dict[str, Curves] = {}
    for i, rec in enumerate(records):
        run = str(rec.get("run", DEFAULT_RUN))
        vals = {k: _num(v) for k, v in rec.items() if k.startswith("val_")}
        vals = {k: v for k, v in vals.items() if v is not None}
        if vals:
            x = _num(rec.get("epoch"))
            x = _num(rec.get("step")) if x is None else x
            x = float(i) if x is None else x
            c = curves.setdefault(run, Curves())
            for k, v in vals.items():
                c.val.setdefault(k, []).append((x, v))
            continue
        loss = _num(rec.get("loss"))
        if loss is not None:
            step = _num(rec.get("step"))
            curves.setdefault(run, Curves()).train_loss.append(
                (float(i) if step is None else step, loss)
            )
    return curves
