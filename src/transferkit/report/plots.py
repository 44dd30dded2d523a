"""Report figures, drawn with :class:`matplotlib.figure.Figure` (no pyplot, no global state)
and returned as base64 PNG data URIs so the HTML needs no other file.

Figures: training loss against step and a validation metric against epoch (one line per
logged training), the confusion matrix as a heat map, and for comparisons a bar chart of
the main metric (95% interval over seeds) next to the transfer gain (its 95% CI).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from transferkit.report.format import FRACTION_METRICS, metric_label
from transferkit.report.load import Curves

PALETTE = (
    "#2563eb",
    "#ea580c",
    "#16a34a",
    "#9333ea",
    "#dc2626",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
)
VERDICT_COLOURS = {"positive": "#16a34a", "negative": "#dc2626", "inconclusive": "#6b7280"}
_RC = {"font.size": 9.5, "axes.titlesize": 11, "axes.labelsize": 9.5}


def to_data_uri(fig: Figure, dpi: int = 110) -> str:
    """Render ``fig`` to PNG and return ``data:image/png;base64,...``."""
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        dpi=dpi,
        bbox_inches="tight",
        facecolor="white",
        metadata={"Software": None},
    )
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=_RC["font.size"])
    return fig, list(axes)


def _ema(y: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average ``s_t = alpha * y_t + (1 - alpha) * s_{t-1}``, debiased."""
    out = np.empty_like(y)
    s, w = 0.0, 0.0
    for i, v in enumerate(y):
        s = alpha * v + (1 - alpha) * s
        w = alpha + (1 - alpha) * w
        out[i] = s / w
    return out


def pick_val_metric(curves: Mapping[str, Curves], primary: str | None) -> str | None:
    """The validation key to plot: ``val_<primary>`` if logged, else the first non-loss one."""
    keys = [k for c in curves.values() for k in c.val]
    if not keys:
        return None
    if primary and f"val_{primary}" in keys:
        return f"val_{primary}"
    others = [k for k in keys if k != "val_loss"]
    return (others or keys)[0]


def learning_curves(curves: Mapping[str, Curves], primary: str | None) -> str | None:
    """Two panels: training loss vs step and the validation metric vs epoch; one line per run.

    Noisy loss curves (> 30 points) are drawn faintly with an exponential moving average
    (alpha = 0.1) on top. Returns None when there is nothing to plot.
    """
    val_key = pick_val_metric(curves, primary)
    has_loss = any(c.train_loss for c in curves.values())
    if not has_loss and val_key is None:
        return None
    panels = int(has_loss) + int(val_key is not None)
    fig, axes = _new_figure(5.2 * panels, 3.4, panels)
    ax_iter = iter(axes)
    if has_loss:
        ax = next(ax_iter)
        for i, (name, c) in enumerate(sorted(curves.items())):
            if not c.train_loss:
                continue
            x, y = np.asarray(c.train_loss).T
            colour = PALETTE[i % len(PALETTE)]
            if len(y) > 30:
                ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
                ax.plot(x, _ema(y, 0.1), color=colour, linewidth=1.6, label=name)
            else:
                ax.plot(x, y, color=colour, linewidth=1.6, marker=".", label=name)
        ax.set(title="Training loss", xlabel="step", ylabel="loss")
        ax.legend(fontsize=8, frameon=False)
    if val_key is not None:
        ax = next(ax_iter)
        _plot_val(ax, curves, val_key)
    return to_data_uri(fig)


def _plot_val(ax: object, curves: Mapping[str, Curves], key: str) -> None:
    for i, (name, c) in enumerate(sorted(curves.items())):
        pts = c.val.get(key)
        if not pts:
            continue
        x, y = np.asarray(pts).T
        ax.plot(
            x,
            y,
            color=PALETTE[i % len(PALETTE)],
            linewidth=1.6,
            marker="o",
            markersize=3.5,
            label=name,
        )
    ax.set(title=_upper_first(metric_label(key)), xlabel="epoch", ylabel=metric_label(key[4:]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, frameon=False)


def confusion_heatmap(matrix: Sequence[Sequence[float]], classes: Sequence[str]) -> str | None:
    """Heat map of a confusion matrix (rows = true class), coloured by row-normalised rate.

    Cells show the count and, below it, the share of the true class. None if malformed.
    """
    try:
        cm = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.size == 0 or not np.isfinite(cm).all():
        return None
    n = cm.shape[0]
    names = [str(c) for c in classes] if len(classes) == n else [str(i) for i in range(n)]
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    rotate = n > 4 and max(len(x) for x in names) > 3
    side = min(2.2 + 0.55 * n, 9.0)
    fig, (ax,) = _new_figure(side + 1.0, side)
    ax.grid(False)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
    ax.set_xticks(
        range(n),
        [_short(s) for s in names],
        rotation=45 if rotate else 0,
        ha="right" if rotate else "center",
    )
    ax.set_yticks(range(n), [_short(s) for s in names])
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    if n <= 15:
        for i in range(n):
            for j in range(n):
                colour = "white" if rates[i, j] > 0.55 else "#111827"
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]:.0f}\n{100 * rates[i, j]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=8.5 if n <= 6 else (7.5 if n <= 10 else 6.5),
                    color=colour,
                )
    return to_data_uri(fig)


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def _short(s: str, n: int = 14) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


@dataclass
class Bar:
    """One run in the comparison chart."""

    label: str
    value: float | None
    interval: tuple[float, float] | None = None
    baseline: float | None = None
    delta: float | None = None
    ci: tuple[float, float] | None = None
    verdict: str | None = None
    colour: str = PALETTE[0]


def comparison_bars(bars: Sequence[Bar], metric: str) -> str | None:
    """Left: the main metric per run (error bar = 95% interval over seeds, tick = best
    baseline). Right: the transfer gain per run with its 95% CI, coloured by verdict."""
    if not any(b.value is not None for b in bars):
        return None
    show_gain = any(b.delta is not None for b in bars)
    width = min(max(3.2, 0.75 * len(bars) + 1.6), 5.6)
    fig, axes = _new_figure(width * (1 + show_gain) + 1.2, 3.6, 1 + int(show_gain))
    x = np.arange(len(bars))
    scale = 100.0 if metric in FRACTION_METRICS else 1.0
    _metric_panel(axes[0], bars, x, metric, scale)
    if show_gain:
        _gain_panel(axes[1], bars, x, metric, scale)
    return to_data_uri(fig)


def _errors(centre: list[float], ivals: list[tuple[float, float] | None]) -> np.ndarray:
    """``[2, n]`` distances from each centre to its interval ends (NaN: no error bar)."""
    lo = [c - iv[0] if iv else np.nan for c, iv in zip(centre, ivals, strict=True)]
    hi = [iv[1] - c if iv else np.nan for c, iv in zip(centre, ivals, strict=True)]
    return np.abs(np.array([lo, hi], dtype=np.float64))


def _metric_panel(
    ax: object, bars: Sequence[Bar], x: np.ndarray, metric: str, scale: float
) -> None:
    vals = [scale * b.value if b.value is not None else 0.0 for b in bars]
    ivals = [(scale * b.interval[0], scale * b.interval[1]) if b.interval else None for b in bars]
    ax.bar(
        x,
        vals,
        width=0.6,
        color=[b.colour for b in bars],
        yerr=_errors(vals, ivals),
        capsize=4,
        ecolor="#111827",
        alpha=0.9,
    )
    base = [(i, scale * b.baseline) for i, b in enumerate(bars) if b.baseline is not None]
    if base:
        bx, by = zip(*base, strict=True)
        ax.scatter(bx, by, marker="_", s=700, linewidths=2.5, color="#111827", zorder=3)
    unit = " (%)" if scale == 100.0 else ""
    ax.set(
        title=f"Target {metric_label(metric)} (tick: best baseline)",
        ylabel=metric_label(metric) + unit,
    )
    ax.set_xticks(x, [_short(b.label, 18) for b in bars], rotation=20, ha="right")
    finite = [v for v in vals if math.isfinite(v)]
    if scale == 100.0 and finite and min(finite) > 30:
        ax.set_ylim(max(0.0, min(finite) - 25), 100)


def _gain_panel(ax: object, bars: Sequence[Bar], x: np.ndarray, metric: str, scale: float) -> None:
    deltas = [scale * b.delta if b.delta is not None else 0.0 for b in bars]
    cis = [(scale * b.ci[0], scale * b.ci[1]) if b.ci else None for b in bars]
    colours = [VERDICT_COLOURS.get(b.verdict or "", "#9ca3af") for b in bars]
    ax.bar(
        x,
        deltas,
        width=0.6,
        color=colours,
        yerr=_errors(deltas, cis),
        capsize=4,
        ecolor="#111827",
        alpha=0.9,
    )
    ax.axhline(0, color="#111827", linewidth=1)
    for i, b in enumerate(bars):
        if b.delta is None:
            ax.text(i, 0, "no verdict", ha="center", va="bottom", fontsize=7.5, color="#6b7280")
    unit = "points" if scale == 100.0 else metric_label(metric)
    ax.set(title="Transfer gain vs best baseline (95% CI)", ylabel=f"Δ {unit}")
    ax.set_xticks(x, [_short(b.label, 18) for b in bars], rotation=20, ha="right")


def overlaid_val_curves(
    groups: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]], key: str
) -> str | None:
    """Validation curves of several runs on one axis: one colour per run (group), one line
    per training inside it (e.g. per seed), the legend naming the runs."""
    groups = {g: {k: v for k, v in lines.items() if v} for g, lines in groups.items()}
    if not any(groups.values()):  # empty groups stay so that colours follow run order
        return None
    fig, (ax,) = _new_figure(7.5, 3.6)
    for i, (name, lines) in enumerate(groups.items()):  # colour i = i-th run, as in the bars
        for j, pts in enumerate(lines.values()):
            xs, ys = np.asarray(pts).T
            ax.plot(
                xs,
                ys,
                color=PALETTE[i % len(PALETTE)],
                linewidth=1.6,
                alpha=1.0 if j == 0 else 0.55,
                marker="o",
                markersize=3.5,
                label=name if j == 0 else None,
            )
    ax.set(
        title=_upper_first(metric_label(key)) + " by epoch",
        xlabel="epoch",
        ylabel=metric_label(key[4:] if key.startswith("val_") else key),
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_data_uri(fig)
