"""``write_report(run_dir)``: the self-contained ``report.html`` of one run.

Layout, top to bottom: title and run facts; the verdict banner (green positive, red
negative transfer, grey inconclusive); what was missing in the run directory, if
anything; metrics (target vs every baseline); per-seed results; learning curves;
confusion matrix and per-class scores; timing; sections for any other metrics keys; the
resolved config. Plots are embedded PNGs, CSS is inline, there is no JavaScript.
"""

from __future__ import annotations

from pathlib import Path

from transferkit.report import adaptation as da
from transferkit.report import html as h
from transferkit.report import multitask as mt
from transferkit.report import sections as s
from transferkit.report.extras import extra_sections
from transferkit.report.load import RunData, load_run
from transferkit.utils.io import atomic_write_text

REPORT_FILE = "report.html"


def render_report(run: RunData) -> str:
    """The report of an already loaded run, as an HTML string."""
    m = run.metrics or {}
    ds = m.get("dataset") if isinstance(m.get("dataset"), dict) else {}
    title = f"{m.get('method') or 'run'} on {ds.get('name') or run.label} — transferkit report"
    body = [
        s.header(run),
        s.verdict_banner(run),
        h.notes_box(run.notes),
        s.metrics_table(run),
        s.per_seed_table(run),
        s.curves_section(run),
        s.details_section(run),
        mt.tasks_section(run),
        da.selection_section(run),
        da.domain_gap_section(run),
        h.cards([s.timing_section(run), *extra_sections(run.metrics)]),
        s.config_section(run),
    ]
    return h.page(title, [b for b in body if b])


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path.

    Reads ``metrics.json``, ``config.yaml`` and ``log.jsonl``; any of them may be missing
    or damaged: the report shows what exists and lists what was missing.

    Raises:
        CheckpointError: ``run_dir`` is not a directory or holds none of those files.
    """
    run = load_run(run_dir)
    out = Path(run_dir) / REPORT_FILE
    atomic_write_text(out, render_report(run))
    return out
