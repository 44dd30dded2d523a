"""``compare_runs(run_dirs, out)``: several runs side by side in one self-contained page.

The page holds a table (one row per run: method, target metrics, best baseline, transfer
gain with its 95% CI, verdict, wall time), a bar chart of the main metric (error bar: the
Student-t 95% interval of the mean over seeds when there are >= 2 seeds; tick: the best
baseline) next to the transfer gain with its CI, and the runs' validation curves overlaid.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from transferkit.errors import TransferkitError
from transferkit.report import html as h
from transferkit.report import plots
from transferkit.report.format import (
    MISSING,
    fmt_ci,
    fmt_delta,
    fmt_duration,
    fmt_metric,
    is_number,
    metric_label,
    verdict_class,
)
from transferkit.report.load import DEFAULT_RUN, RunData, load_run
from transferkit.report.sections import baseline_name, numeric_items
from transferkit.utils.io import atomic_write_text

COMPARISON_FILE = "comparison.html"
_VERDICT_TEXT = {
    "positive": "positive",
    "negative": "negative transfer",
    "inconclusive": "inconclusive",
    "none": "no verdict",
}


def _labels(runs: list[RunData]) -> list[str]:
    """Run labels: directory names, widened with the parent folder where they clash."""
    names = [r.label for r in runs]
    if len(set(names)) == len(names):
        return names
    return [
        f"{r.path.parent.name}/{r.label}" if names.count(r.label) > 1 else r.label for r in runs
    ]


def main_metric(runs: list[RunData]) -> str | None:
    """The primary metric shared by most runs."""
    pms = [r.get("primary_metric", str) for r in runs]
    counts = Counter(p for p in pms if p)
    return counts.most_common(1)[0][0] if counts else None


def _seed_interval(run: RunData, metric: str) -> tuple[float, float] | None:
    vals = [r.get(metric) for r in run.get("target_per_seed", list) or [] if isinstance(r, dict)]
    vals = [v for v in vals if is_number(v)]
    if len(vals) < 2:
        return None
    from transferkit.diagnostics.verdict import t_interval  # scipy: imported only when needed

    return t_interval(vals)


def _bar(run: RunData, label: str, metric: str, colour: str) -> plots.Bar:
    target = numeric_items(run.get("target", dict))
    gain = run.get("transfer_gain", dict) or {}
    best = (run.get("baselines", dict) or {}).get(run.get("best_baseline", str))
    same = (gain.get("metric") or run.get("primary_metric", str)) == metric
    ci = gain.get("ci95")
    ci_ok = same and isinstance(ci, list) and len(ci) == 2 and all(map(is_number, ci))
    return plots.Bar(
        label=label,
        colour=colour,
        value=target.get(metric),
        interval=_seed_interval(run, metric),
        baseline=numeric_items(best).get(metric),
        delta=gain["delta"] if same and is_number(gain.get("delta")) else None,
        ci=(ci[0], ci[1]) if ci_ok else None,
        verdict=gain.get("verdict"),
    )


def _link(run: RunData, label: str, out: Path) -> str:
    report = run.path / "report.html"
    if not report.is_file():
        return h.esc(label)
    rel = os.path.relpath(report.resolve(), out.parent.resolve())
    return f'<a href="{h.esc(Path(rel).as_posix())}">{h.esc(label)}</a>'


def _primary_cell(
    run: RunData, values: dict[str, float], pm: str | None, others: bool = False
) -> h.Cell:
    """The run's own primary metric (named when it differs from the page's main metric);
    with ``others``, the remaining metrics in small print below it."""
    own = run.get("primary_metric", str) or pm
    if not own or own not in values:
        text = MISSING
    else:
        text = fmt_metric(own, values[own])
        text = text if own == pm else f"{metric_label(own)} {text}"
    extra = [f"{metric_label(k)} {fmt_metric(k, v)}" for k, v in values.items() if k != own]
    if not others or not extra:
        return h.Cell(text, num=True)
    lines = "".join(f'<div class="desc">{h.esc(x)}</div>' for x in extra)
    return h.Cell(raw=f"<strong>{h.esc(text)}</strong>{lines}", num=True)


def _row(run: RunData, label: str, out: Path, pm: str | None, dataset: bool) -> list[Any]:
    target = numeric_items(run.get("target", dict))
    gain = run.get("transfer_gain", dict) or {}
    best = (run.get("baselines", dict) or {}).get(run.get("best_baseline", str))
    own = run.get("primary_metric", str) or pm
    gm = str(gain.get("metric") or own or "")
    cls = verdict_class(gain.get("verdict"))
    ds = run.get("dataset", dict) or {}
    timing = run.get("timing", dict) or {}
    base = run.get("best_baseline", str)
    base_html = (
        f'<span title="{h.esc(baseline_name(run))}">{h.esc(base)}</span>' if base else MISSING
    )
    return [
        h.Cell(raw=_link(run, label, out)),
        run.get("method", str) or MISSING,
        *([str(ds.get("name") or MISSING)] if dataset else []),
        _primary_cell(run, target, pm, others=True),
        h.Cell(raw=base_html),
        _primary_cell(run, numeric_items(best), pm),
        h.Cell(fmt_delta(gm, gain.get("delta"), unit=True), num=True),
        h.Cell(fmt_ci(gm, gain.get("ci95")), num=True),
        h.Cell(raw=h.pill(cls, _VERDICT_TEXT[cls])),
        h.Cell(fmt_duration(timing.get("total_s")), num=True),
    ]


def _datasets(runs: list[RunData]) -> list[str]:
    names = {str((r.get("dataset", dict) or {}).get("name") or "") for r in runs}
    return sorted(names - {""})


def _table(runs: list[RunData], labels: list[str], out: Path, pm: str | None) -> str:
    """One row per run. The dataset column appears only when the runs' datasets differ."""
    with_ds = len(_datasets(runs)) > 1
    shared = all(r.get("primary_metric", str) in (pm, None) for r in runs)
    header = [
        "Run",
        "Method",
        *(["Dataset"] if with_ds else []),
        h.Cell("Target", num=True),
        "Best baseline",
        h.Cell("Baseline", num=True),
        h.Cell("Δ (gain)", num=True),
        h.Cell("95% CI", num=True),
        "Verdict",
        h.Cell("Wall time", num=True),
    ]
    rows = [_row(r, lab, out, pm, with_ds) for r, lab in zip(runs, labels, strict=True)]
    metric = f"the {metric_label(pm)}" if pm and shared else "each run's primary metric"
    return h.section(
        "Runs",
        h.table(header, rows, tid="compare-table"),
        h.note(
            f"Target and Baseline: {metric} of the transfer method (mean over seeds; its other "
            "metrics below) and of the best target-only baseline (hover for its description). "
            "Δ: the transfer gain (positive = transfer better; pts = percentage points) with "
            "its 95% CI."
        ),
        sid="runs",
    )


def _val_groups(runs: list[RunData], labels: list[str]) -> tuple[str | None, dict[str, dict]]:
    """Per run, the validation curves of its transfer trainings (not its baselines)."""
    key = plots.pick_val_metric(
        {f"{i}:{k}": c for i, r in enumerate(runs) for k, c in r.curves.items()}, main_metric(runs)
    )
    groups: dict[str, dict[str, list]] = {}
    for run, label in zip(runs, labels, strict=True):
        # A closed-form method (linear probe) has no curves of its own: show none rather
        # than its baselines' curves under its name.
        mine = {k: c for k, c in run.curves.items() if k.startswith("target") or k == DEFAULT_RUN}
        groups[label] = {k: c.val.get(key, []) for k, c in sorted(mine.items())} if key else {}
    return key, groups


_BARS_CAPTION = (
    "Left: error bars are 95% intervals over seeds; black ticks mark the best baseline. "
    "Right: bars coloured by verdict."
)
_CURVES_CAPTION = (
    "Transfer trainings only; lighter lines of one colour are further seeds of the same run."
)


def _charts(runs: list[RunData], labels: list[str], pm: str | None) -> str:
    """Bar charts of the main metric and the gain, then the overlaid validation curves.

    Colour i belongs to the i-th run in both charts."""
    figs = []
    if pm:
        bars = [
            _bar(r, lab, pm, plots.PALETTE[i % len(plots.PALETTE)])
            for i, (r, lab) in enumerate(zip(runs, labels, strict=True))
        ]
        uri = plots.comparison_bars([b for b in bars if b.value is not None], pm)
        left_out = [b.label for b in bars if b.value is None]
        if uri:
            figs.append(h.figure(uri, "main metric and transfer gain per run", _BARS_CAPTION))
        if uri and left_out:
            figs.append(
                h.note(f"Not charted (no target {metric_label(pm)}): " + ", ".join(left_out) + ".")
            )
    key, groups = _val_groups(runs, labels)
    uri = plots.overlaid_val_curves(groups, key) if key else None
    if uri:
        figs.append(h.figure(uri, "validation curves", _CURVES_CAPTION))
    return h.section("Charts", *(figs or [h.note("Nothing to plot: no metrics or logs.")]))


def render_comparison(runs: list[RunData], out: Path) -> str:
    """The comparison page for loaded runs, as an HTML string."""
    labels = _labels(runs)
    pm = main_metric(runs)
    verdicts = Counter(
        verdict_class((r.get("transfer_gain", dict) or {}).get("verdict")) for r in runs
    )
    summary = ", ".join(f"{n} {_VERDICT_TEXT[v]}" for v, n in verdicts.most_common())
    facts = [("verdicts", summary)] + ([("main metric", metric_label(pm))] if pm else [])
    notes = [f"{lab}: {n}" for r, lab in zip(runs, labels, strict=True) for n in r.notes]
    body = [
        f'<header><h1>Comparison of {len(runs)} runs</h1><p class="sub">'
        f"{h.esc(', '.join(_datasets(runs)) or 'datasets unknown')}</p></header>",
        h.chips(facts),
        h.notes_box(notes),
        _table(runs, labels, out, pm),
        _charts(runs, labels, pm),
    ]
    return h.page(f"Comparison of {len(runs)} runs — transferkit", [b for b in body if b])


def compare_runs(run_dirs: list[Path], out: Path) -> Path:
    """Write a side-by-side comparison of ``run_dirs`` to ``out`` (atomically).

    ``out`` may be an existing directory, in which case ``comparison.html`` is written in
    it. Each run may be incomplete (see :func:`write_report`); the page says what is missing.

    Raises:
        TransferkitError: no run directories were given.
        CheckpointError: a path is not a run directory.
    """
    if not run_dirs:
        raise TransferkitError(
            "no run directories to compare",
            fix="pass one or more directories written by `transferkit run`",
        )
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    if out.is_dir():
        out = out / COMPARISON_FILE
    atomic_write_text(out, render_comparison(runs, out))
    return out
