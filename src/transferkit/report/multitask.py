"""Report section of a multi-task run: per-task verdicts, Δm, task weights, gradient cosines.

The per-task table compares the shared model with each task trained alone (delta and
interval of that task's own verdict; negative transfer in red). The plots read the first
seed's training log: the weight the loss weighting gave each task over time, and the
cosine similarity between task gradients on the shared parameters (gradient methods).
"""

from __future__ import annotations

import json

from transferkit.report import html as h
from transferkit.report.format import fmt_delta, fmt_metric
from transferkit.report.load import RunData
from transferkit.report.plots import _new_figure, to_data_uri


def _series(run: RunData, prefix: str) -> dict[str, tuple[list[float], list[float]]]:
    """``{key without prefix: (steps, values)}`` from the first seed's train records."""
    path = run.path / "log.jsonl"
    out: dict[str, tuple[list[float], list[float]]] = {}
    if not path.is_file():
        return out
    first = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") != "train" or not str(rec.get("run", "")).startswith("target-"):
            continue
        first = first or rec["run"]
        if rec["run"] != first:
            continue
        for k, v in rec.items():
            if k.startswith(prefix) and isinstance(v, int | float):
                xs, ys = out.setdefault(k[len(prefix) :], ([], []))
                xs.append(rec["step"])
                ys.append(float(v))
    return out


def _plot(series: dict[str, tuple[list[float], list[float]]], ylabel: str, title: str) -> str:
    fig, (ax,) = _new_figure(5.0, 2.6)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name.replace("_", " / ") if ylabel == "cosine" else name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return to_data_uri(fig)


def tasks_section(run: RunData) -> str:
    """Per-task shared-vs-alone table, Δm, and the weight / cosine plots."""
    tasks = run.get("tasks", dict)
    if not tasks:
        return ""
    rows, classes = [], []
    for name, t in tasks.items():
        pm = t.get("primary_metric", "accuracy")
        gain = t.get("gain") or {}
        ci = gain.get("ci95") or [None, None]
        rows.append(
            [
                name,
                t.get("kind", ""),
                pm,
                h.Cell(fmt_metric(pm, (t.get("multitask") or {}).get(pm)), num=True),
                h.Cell(fmt_metric(pm, (t.get("single_task") or {}).get(pm)), num=True),
                h.Cell(fmt_delta(pm, gain["delta"]) if "delta" in gain else "—", num=True),
                h.Cell(
                    f"[{fmt_delta(pm, ci[0])}, {fmt_delta(pm, ci[1])}]"
                    if ci[0] is not None
                    else "—",
                    num=True,
                ),
                h.Cell(raw=h.pill(gain.get("verdict", "none"), gain.get("verdict", "n/a"))),
            ]
        )
        classes.append("neg" if gain.get("verdict") == "negative" else "")
    parts = [
        h.table(
            [
                "Task",
                "Kind",
                "Metric",
                h.Cell("Shared model", num=True),
                h.Cell("Alone", num=True),
                h.Cell("Delta", num=True),
                h.Cell("95% CI", num=True),
                "Verdict",
            ],
            rows,
            classes,
        )
    ]
    dm = run.get("delta_m", dict)
    if dm:
        lo, hi = dm.get("ci95", [None, None])
        parts.append(
            h.note(
                f"Δm (mean relative change vs single-task, Maninis et al. 2019): "
                f"{100 * dm['mean']:+.2f}% [{100 * lo:+.2f}%, {100 * hi:+.2f}%] -> "
                f"{dm.get('verdict')}. Tasks hurt by sharing: "
                f"{', '.join(run.get('negative_transfer_tasks', list) or []) or 'none'}."
            )
        )
    figs = []
    losses = _series(run, "loss_")
    if losses:
        figs.append(
            h.figure(
                _plot(losses, "loss", "per-task training loss"),
                "task losses",
                "each task's training loss (first seed)",
            )
        )
    weights, cos = _series(run, "weight_"), _series(run, "gradcos_")
    if weights:
        figs.append(
            h.figure(
                _plot(weights, "weight", "task weights"),
                "task weights",
                "loss weight of each task over training (first seed)",
            )
        )
    if cos:
        figs.append(
            h.figure(
                _plot(cos, "cosine", "gradient cosine"),
                "gradient cosine",
                "cosine between task gradients on shared parameters",
            )
        )
    if figs:
        parts.append(f'<div class="grid2">{"".join(figs)}</div>')
    return h.section("Tasks: shared model vs each task alone", *parts, sid="tasks")
