"""Generic rendering of metrics.json keys the report has no dedicated section for.

Later features add keys such as ``domain_gap``, ``deployment``, ``tasks`` or a
``forgetting`` dict; rather than being dropped they are shown as compact tables:

* a mapping of scalars -> a two-column key/value table (nested keys joined with ``.``);
* a mapping of mappings (e.g. one entry per task) -> one row per key, one column per field;
* a list of mappings -> one row per item;
* a list of scalars or a scalar -> one line.
"""

from __future__ import annotations

import json
from typing import Any

from transferkit.report import html as h
from transferkit.report.format import fmt_number, is_number

#: metrics.json keys that have their own section (or are shown in the header/banner).
KNOWN_KEYS = frozenset(
    {
        "method",
        "family",
        "backbone",
        "dataset",
        "primary_metric",
        "target",
        "target_per_seed",
        "baselines",
        "best_baseline",
        "transfer_gain",
        "details",
        "timing",
        "seeds",
        "label_free_selection",
        "domain_gap",
        "tasks",
        "delta_m",
        "negative_transfer_tasks",
    }
)
MAX_ROWS = 100


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def fmt_value(v: Any) -> str:
    """A value for a table cell: numbers formatted, containers as compact JSON."""
    if is_number(v) or v is None or isinstance(v, bool):
        return fmt_number(v)
    if isinstance(v, str):
        return v
    text = json.dumps(v, default=str, ensure_ascii=False)
    return text if len(text) <= 160 else text[:159] + "…"


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _row_table(rows: list[tuple[str, dict[str, Any]]], first: str) -> str:
    """One row per entry, one column per (flattened) field; numeric columns right-aligned."""
    flats = [(name, dict(_flatten(r))) for name, r in rows[:MAX_ROWS]]
    cols: list[str] = []
    for _, flat in flats:
        cols += [k for k in flat if k not in cols]
    numeric = {c: all(is_number(f.get(c)) or f.get(c) is None for _, f in flats) for c in cols}
    body = [
        [name] + [h.Cell(fmt_value(flat.get(c)), num=numeric[c]) for c in cols]
        for name, flat in flats
    ]
    header = [first, *[h.Cell(c, num=numeric[c]) for c in cols]]
    return h.table(header, body, compact=len(cols) <= 3) + _cut(len(rows))


def _cut(n: int) -> str:
    return h.note(f"Showing the first {MAX_ROWS} of {n} entries.") if n > MAX_ROWS else ""


def render_value(value: Any) -> str:
    """Safe HTML for one extra metrics value (see the module docstring for the layouts)."""
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) for v in value.values()):
            return _row_table([(str(k), v) for k, v in value.items()], "Name")
        flat = _flatten(value)
        rows = [[k, h.Cell(fmt_value(v), num=is_number(v))] for k, v in flat[:MAX_ROWS]]
        return h.table(["Key", h.Cell("Value", num=True)], rows, compact=True) + _cut(len(flat))
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _row_table([(str(i), v) for i, v in enumerate(value)], "#")
    if isinstance(value, list) and all(_scalar(v) for v in value):
        return f"<p>{h.esc(', '.join(fmt_value(v) for v in value))}</p>"
    return f"<p>{h.esc(fmt_value(value))}</p>"


def extra_sections(metrics: dict[str, Any] | None) -> list[str]:
    """One section per unknown, non-null metrics key, in file order."""
    if not metrics:
        return []
    out = []
    for key, value in metrics.items():
        if key in KNOWN_KEYS or value is None or value == {} or value == []:
            continue
        title = str(key).replace("_", " ")
        out.append(
            h.section(title[:1].upper() + title[1:], render_value(value), sid=f"extra-{key}")
        )
    return out
