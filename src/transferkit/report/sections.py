"""The sections of a single-run report, each built from a :class:`RunData`.

Every function returns safe HTML (or ``""`` when its data is absent) and never raises on
missing or mistyped metrics keys: a report must render for a half-finished run too.
"""

from __future__ import annotations

from typing import Any

from transferkit.report import html as h
from transferkit.report import plots
from transferkit.report.extras import render_value
from transferkit.report.format import (
    LOWER_IS_BETTER,
    MISSING,
    baseline_label,
    fmt_delta,
    fmt_duration,
    fmt_metric,
    fmt_number,
    is_number,
    metric_label,
    verdict_class,
    verdict_sentence,
)
from transferkit.report.load import RunData

_BANNER_LABELS = {
    "positive": "Positive transfer",
    "negative": "Negative transfer",
    "inconclusive": "Inconclusive",
    "none": "No verdict",
}


def numeric_items(d: Any) -> dict[str, float]:
    """The numeric entries of a metrics mapping (descriptions, lists, ... dropped)."""
    if not isinstance(d, dict):
        return {}
    return {str(k): v for k, v in d.items() if is_number(v) and k != "seed"}


def metric_order(primary: str | None, *dicts: dict[str, float]) -> list[str]:
    """Union of metric names, primary metric first, then first-seen order."""
    names: list[str] = [primary] if primary and any(primary in d for d in dicts) else []
    for d in dicts:
        names += [k for k in d if k not in names]
    return names


def header(run: RunData) -> str:
    """Title (method on dataset), backbone line and the run-facts chips."""
    m = run.metrics or {}
    ds = m.get("dataset") if isinstance(m.get("dataset"), dict) else {}
    method, name = m.get("method") or "run", ds.get("name") or "an unnamed dataset"
    sub = " · ".join(str(x) for x in (m.get("backbone"), m.get("family")) if x)
    facts: list[tuple[str, str]] = [(k, str(ds[k])) for k in ("task", "modality") if ds.get(k)]
    classes = ds.get("classes")
    if isinstance(classes, list) and classes:
        shown = ", ".join(map(str, classes[:6])) + (", …" if len(classes) > 6 else "")
        facts.append((f"{len(classes)} classes", shown))
    sizes = ds.get("sizes")
    if isinstance(sizes, dict):
        facts += [(str(k), fmt_number(v)) for k, v in sizes.items() if v is not None]
    if m.get("primary_metric"):
        facts.append(("primary metric", metric_label(str(m["primary_metric"]))))
    seeds = m.get("seeds")
    if isinstance(seeds, list) and seeds:
        facts.append(("seeds", ", ".join(map(str, seeds))))
    facts.append(("run", run.label))
    return (
        f"<header><h1>{h.esc(method)} on {h.esc(name)}</h1>"
        f'<p class="sub">{h.esc(sub or "transferkit run report")}</p></header>' + h.chips(facts)
    )


def verdict_banner(run: RunData) -> str:
    """The coloured verdict banner that opens the report."""
    if run.metrics is None:
        return h.banner(
            "none",
            "No verdict",
            "No verdict: metrics.json is missing or unreadable, so the run cannot be judged.",
        )
    gain, base = run.get("transfer_gain", dict), run.get("baselines", dict) or {}
    pm = run.get("primary_metric", str)
    cls = verdict_class(gain.get("verdict") if gain else None)
    sentence = verdict_sentence(gain, base, pm)
    how = []
    metric = str((gain or {}).get("metric") or pm or "")
    target = numeric_items(run.get("target", dict)).get(metric)
    best = base.get(gain.get("baseline")) if gain else None
    if target is not None and isinstance(best, dict) and is_number(best.get(metric)):
        how.append(
            f"Target {metric_label(metric)} {fmt_metric(metric, target)} vs "
            f"{fmt_metric(metric, best[metric])} for "
            + ("source-only." if gain.get("baseline") == "source_only" else "the best baseline.")
        )
    if gain and gain.get("method"):
        how.append(f"Interval: {gain['method']}.")
    return h.banner(cls, _BANNER_LABELS[cls], sentence, " ".join(how) or None)


def metrics_table(run: RunData) -> str:
    """Target vs every baseline on every metric; best value per column in bold."""
    target = numeric_items(run.get("target", dict))
    baselines = run.get("baselines", dict) or {}
    if not target and not baselines:
        return h.section("Metrics", h.note("No target or baseline metrics were recorded."))
    pm = run.get("primary_metric", str)
    best_name = run.get("best_baseline", str)
    rows_src = [(f"{run.get('method', str) or 'transfer'} (transfer)", target, "")]
    for name, info in baselines.items():
        desc = info.get("description", "") if isinstance(info, dict) else ""
        rows_src.append((str(name), numeric_items(info), str(desc or "")))
    cols = metric_order(pm, *(r[1] for r in rows_src))
    best_val = {c: _best([r[1].get(c) for r in rows_src], c) for c in cols}
    rows, classes = [], []
    for i, (name, vals, desc) in enumerate(rows_src):
        is_best = i > 0 and name == best_name
        label = h.esc(name) + (h.tag("best baseline") if is_best else "")
        if desc:
            label += f'<div class="desc">{h.esc(desc)}</div>'
        cells = [h.Cell(raw=label)]
        cells += [
            h.Cell(
                fmt_metric(c, vals.get(c)),
                num=True,
                strong=vals.get(c) is not None and vals.get(c) == best_val[c],
            )
            for c in cols
        ]
        rows.append(cells)
        classes.append("hl" if i == 0 else ("best" if is_best else ""))
    diff = _difference_row(target, baselines.get(best_name), cols)
    if diff:
        rows.append(diff)
        classes.append("")
    header = ["Model"] + [h.Cell(metric_label(c), num=True) for c in cols]
    return h.section(
        "Metrics on the target test set",
        h.table(header, rows, classes, tid="metrics-table"),
        h.note(
            "Means over seeds. Bold: best value in each column. "
            + (
                "Domain adaptation: the verdict compares with the source-only model; "
                "target_only uses target labels and is a reference only."
                if "source_only" in baselines
                else "Baselines are trained on the target data alone."
            )
        ),
        sid="metrics",
    )


def _best(values: list[Any], metric: str) -> float | None:
    nums = [v for v in values if is_number(v) and v == v]
    if len(nums) < 2:
        return None
    return min(nums) if metric in LOWER_IS_BETTER else max(nums)


def _difference_row(target: dict[str, float], best: Any, cols: list[str]) -> list[h.Cell]:
    other = numeric_items(best)
    if not target or not other:
        return []
    cells = [h.Cell(raw='<span class="desc">difference: transfer − best baseline</span>')]
    for c in cols:
        ok = c in target and c in other
        text = fmt_delta(c, target[c] - other[c], unit=True) if ok else MISSING
        cells.append(h.Cell(text, num=True))
    return cells


def per_seed_table(run: RunData) -> str:
    """One row per seed: target metrics, the best baseline's primary metric and the gain."""
    per_seed = [r for r in run.get("target_per_seed", list) or [] if isinstance(r, dict)]
    if not per_seed:
        return ""
    pm = run.get("primary_metric", str)
    cols = metric_order(pm, *(numeric_items(r) for r in per_seed))
    best_name = run.get("best_baseline", str)
    best = (run.get("baselines", dict) or {}).get(best_name)
    base_seeds = best.get("per_seed") if isinstance(best, dict) else None
    gain = run.get("transfer_gain", dict) or {}
    deltas = gain.get("per_seed") if isinstance(gain.get("per_seed"), list) else None
    base_ok = isinstance(base_seeds, list) and len(base_seeds) == len(per_seed) and pm
    delta_ok = deltas is not None and len(deltas) == len(per_seed)
    header = ["Seed"] + [h.Cell(metric_label(c), num=True) for c in cols]
    if base_ok:
        header.append(h.Cell(f"best baseline {metric_label(pm)}", num=True))
    if delta_ok:
        header.append(h.Cell("gain", num=True))
    rows = []
    for i, r in enumerate(per_seed):
        cells: list[Any] = [r.get("seed", i)]
        cells += [h.Cell(fmt_metric(c, r.get(c)), num=True) for c in cols]
        if base_ok:
            b = base_seeds[i] if isinstance(base_seeds[i], dict) else {}
            cells.append(h.Cell(fmt_metric(pm, b.get(pm)), num=True))
        if delta_ok:
            metric = str(gain.get("metric") or pm)
            cells.append(h.Cell(fmt_delta(metric, deltas[i], unit=True), num=True))
        rows.append(cells)
    return h.section("Per seed", h.table(header, rows, tid="per-seed-table"), sid="seeds")


def curves_section(run: RunData) -> str:
    """Training loss and validation metric plots from ``log.jsonl``."""
    uri = plots.learning_curves(run.curves, run.get("primary_metric", str))
    if uri is None:
        return h.section(
            "Learning curves",
            h.note("No learning curves: log.jsonl is missing or holds no loss/validation records."),
        )
    return h.section(
        "Learning curves",
        h.figure(uri, "learning curves", "One line per logged training (the log's “run” key)."),
        sid="curves",
    )


def details_section(run: RunData) -> str:
    """Confusion matrix heat map and per-class precision/recall/F1 (classification)."""
    details = run.get("details", dict)
    if not details:
        return ""
    parts = []
    raw_classes = details.get("classes")
    classes = [str(c) for c in raw_classes] if isinstance(raw_classes, list) else []
    if details.get("confusion_matrix") is not None:
        uri = plots.confusion_heatmap(details["confusion_matrix"], classes)
        parts.append(
            h.figure(uri, "confusion matrix", "Rows: true class; colour: share of the true class.")
            if uri
            else h.note("The confusion matrix is malformed and was not drawn.")
        )
    per_class = details.get("per_class")
    if isinstance(per_class, dict) and per_class:
        stats = ["precision", "recall", "f1", "support"]
        rows = [
            [name]
            + [h.Cell(_stat(s, v.get(s) if isinstance(v, dict) else None), num=True) for s in stats]
            for name, v in per_class.items()
        ]
        labels = ["precision", "recall", "F1", "support"]
        parts.append(
            h.table(["Class"] + [h.Cell(s, num=True) for s in labels], rows, tid="per-class-table")
        )
    rest = {
        k: v
        for k, v in details.items()
        if k not in {"classes", "confusion_matrix", "per_class"} and v is not None
    }
    if rest:
        parts.append(render_value(rest))
    if not parts:
        return ""
    if len(parts) == 1 or len(classes) > 6:  # a big matrix needs the full width
        return h.section("Details (first seed)", *parts, sid="details")
    body = f'<div class="grid2"><div>{parts[0]}</div><div>{"".join(parts[1:])}</div></div>'
    return h.section("Details (first seed)", body, sid="details")


def _stat(name: str, v: Any) -> str:
    if name == "support":
        return fmt_number(v)
    return fmt_metric("accuracy", v) if is_number(v) else MISSING


def timing_section(run: RunData) -> str:
    """Wall-clock times; nested mappings (e.g. per stage) are flattened."""
    timing = run.get("timing", dict)
    if not timing:
        return ""
    rows = [
        [_time_label(k), h.Cell(fmt_duration(v) if is_number(v) else fmt_number(v), num=True)]
        for k, v in _flatten(timing)
    ]
    return h.section(
        "Timing", h.table(["What", h.Cell("Wall time", num=True)], rows, compact=True), sid="timing"
    )


def _time_label(key: str) -> str:
    parts = [p[:-2] if p.endswith("_s") else p for p in key.split(".")]
    return " · ".join(p.replace("_", " ") for p in parts)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def config_section(run: RunData) -> str:
    """The resolved config, verbatim."""
    if run.config_text is None:
        return h.section("Resolved config", h.note("config.yaml is missing."), sid="config")
    return h.section(
        "Resolved config (config.yaml)",
        f"<pre>{h.esc(run.config_text.rstrip())}</pre>",
        sid="config",
    )


def baseline_name(run: RunData) -> str:
    """Readable label of the run's best baseline, or the missing mark."""
    name = run.get("best_baseline", str)
    if not name:
        return MISSING
    return baseline_label(name, (run.get("baselines", dict) or {}).get(name))
