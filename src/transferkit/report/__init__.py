"""Self-contained HTML reports: one run (``write_report``) or several side by side
(``compare_runs``). Plots are embedded PNGs, CSS is inline; no network, no JavaScript."""

from transferkit.report.compare import compare_runs, render_comparison
from transferkit.report.load import RunData, load_run
from transferkit.report.single import render_report, write_report

__all__ = [
    "RunData",
    "compare_runs",
    "load_run",
    "render_comparison",
    "render_report",
    "write_report",
]
