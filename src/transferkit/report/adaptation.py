"""Report sections of a domain-adaptation run: label-free selection and the domain gap.

* "Checkpoint selection without target labels": per seed, the test accuracy of the
  checkpoint the label-free criterion picked next to the oracle's (best test accuracy
  over epochs, which reads test labels), and a plot of the criterion and the oracle test
  accuracy per epoch for the first seed.
* "Domain gap": proxy A-distance and MMD² between source and target features before and
  after adaptation, with the two PCA scatter plots the run wrote to ``DIR/domain_gap/``.
"""

from __future__ import annotations

import base64
from typing import Any

from transferkit.report import html as h
from transferkit.report.format import fmt_metric, fmt_number, is_number
from transferkit.report.load import RunData
from transferkit.report.plots import _new_figure, to_data_uri

_DIRECTION = {"min": "lower is better", "max": "higher is better"}


def _selection_plot(epochs: list[dict[str, Any]], criterion: str) -> str:
    fig, (ax,) = _new_figure(6.0, 2.8)
    xs = [e["epoch"] for e in epochs]
    ax.plot(
        xs,
        [e["test"] for e in epochs],
        "o-",
        color="#16a34a",
        label="target test accuracy (oracle view)",
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax2 = ax.twinx()
    ax2.plot(
        xs,
        [e["criterion"] for e in epochs],
        "s--",
        color="#2563eb",
        label=f"{criterion} (label-free)",
    )
    ax2.set_ylabel(criterion)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
    return to_data_uri(fig)


def selection_section(run: RunData) -> str:
    """Label-free pick vs oracle pick, per seed, plus the per-epoch curve."""
    lf = run.get("label_free_selection", dict)
    if not lf:
        return ""
    crit = str(lf.get("criterion"))
    rows = [
        [
            p.get("seed"),
            h.Cell(fmt_metric("accuracy", p.get("selected")), num=True),
            h.Cell(fmt_number(p.get("selected_epoch")), num=True),
            h.Cell(fmt_metric("accuracy", p.get("oracle")), num=True),
            h.Cell(fmt_number(p.get("oracle_epoch")), num=True),
        ]
        for p in lf.get("per_seed", [])
    ]
    rows.append(
        [
            h.Cell("mean", strong=True),
            h.Cell(fmt_metric("accuracy", lf.get("selected")), num=True, strong=True),
            "",
            h.Cell(fmt_metric("accuracy", lf.get("oracle")), num=True, strong=True),
            "",
        ]
    )
    table = h.table(
        [
            "Seed",
            h.Cell(f"Selected by {crit}", num=True),
            h.Cell("Epoch", num=True),
            h.Cell("Oracle", num=True),
            h.Cell("Epoch", num=True),
        ],
        rows,
        compact=True,
    )
    gap = lf.get("gap")
    text = (
        f"The checkpoint was chosen by <strong>{h.esc(crit)}</strong>, without target "
        "labels. The oracle column reads target test labels and is shown only to expose "
        "what selecting without labels costs"
        + (f": {fmt_metric('accuracy', gap)} accuracy on average." if is_number(gap) else ".")
    )
    parts = [f"<p>{text}</p>", table]
    epochs = lf.get("epochs_first_seed") or []
    if len(epochs) >= 2:
        parts.append(
            h.figure(
                _selection_plot(epochs, crit),
                "criterion vs test accuracy",
                "first seed: the label-free criterion and the target test "
                "accuracy at every evaluated epoch",
            )
        )
    return h.section("Checkpoint selection without target labels", *parts, sid="selection")


def _png_uri(run: RunData, rel: Any) -> str | None:
    if not isinstance(rel, str):
        return None
    p = (run.path / rel).resolve()
    if run.path.resolve() not in p.parents or not p.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")


def domain_gap_section(run: RunData) -> str:
    """PAD / MMD² before and after adaptation and the two feature scatter plots."""
    gap = run.get("domain_gap", dict)
    if not gap:
        return ""
    when = [w for w in ("before", "after") if isinstance(gap.get(w), dict)]
    keys = [
        ("proxy_a_distance", "proxy A-distance (0 = indistinguishable, 2 = separable)"),
        ("domain_classifier_error", "domain classifier error"),
        ("mmd2", "MMD² (median-heuristic RBF)"),
    ]
    rows = [
        [label, *(h.Cell(fmt_number(gap[w].get(k)), num=True) for w in when)] for k, label in keys
    ]
    parts = [
        h.table(
            ["Measure", *(h.Cell(f"{w} adaptation", num=True) for w in when)], rows, compact=True
        )
    ]
    figs = []
    for w in when:
        uri = _png_uri(run, gap[w].get("plot"))
        if uri:
            figs.append(h.figure(uri, f"features {w} adaptation", f"{w} adaptation"))
    if figs:
        parts.append(f'<div class="grid2">{"".join(figs)}</div>')
    else:
        parts.append(h.note("the domain-gap plots are missing from the run directory"))
    return h.section("Domain gap (source vs target test features)", *parts, sid="domain-gap")
