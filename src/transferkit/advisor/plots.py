"""Bar chart of transferability scores per candidate (matplotlib, Agg, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.utils.io import atomic_path


def plot_scores(rows: list[dict[str, Any]], metric: str, path: str | Path, *, title: str) -> Path:
    """Write a PNG bar chart of ``row["score"]`` per model, best at the top (atomically).

    Pretrained models are blue, ``random:`` controls grey and hatched; a model whose score
    could not be computed is listed with "n/a" and no bar.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [r["model"] for r in rows]
    values = [r["score"] if r["score"] is not None else 0.0 for r in rows]
    fig = Figure(figsize=(7.0, 1.2 + 0.45 * max(1, len(rows))), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = list(range(len(rows)))[::-1]  # best (first row) at the top
    for yi, row, v in zip(y, rows, values, strict=True):
        control = bool(row.get("control"))
        ax.barh(
            yi,
            v if row["score"] is not None else 0.0,
            color="0.7" if control else "tab:blue",
            hatch="//" if control else None,
            edgecolor="0.3",
        )
        text = "n/a" if row["score"] is None else f"{row['score']:.3f}"
        left = v < 0  # label outside the bar's end, on its side of zero
        ax.annotate(
            text,
            (v, yi),
            xytext=(-4 if left else 4, 0),
            textcoords="offset points",
            va="center",
            ha="right" if left else "left",
            fontsize=8,
        )
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(0.0, color="0.2", linewidth=0.8)
    ax.set_xlabel(f"{metric} (higher is better)")
    ax.set_title(title + "  (grey, hatched: random-init controls)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.2)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
