"""Layer probing: how well does each layer group's frozen representation solve the task?

For a backbone with layer groups ``g_0 .. g_{L-1}`` (input -> output) the pooled output of
every group is extracted in ONE forward pass per batch
(``extract_features(..., layers=[0..L-1])``), a probe head (see
:mod:`transferkit.methods.feature_heads`) is fitted on each group's features, and its
validation metric ``m_l`` (accuracy or R^2) is recorded. The curve ``l -> m_l`` shows where
task-relevant information peaks: early groups hold general features, late ones more
source-specific ones (Yosinski et al. 2014, https://arxiv.org/abs/1411.1792; Alain & Bengio
2016, "Understanding intermediate layers using linear classifier probes",
https://arxiv.org/abs/1610.01644).

Recommendation rule: let ``m* = max_l m_l``. The recommended transfer layer is the
SHALLOWEST group with ``m_l >= m* - tolerance`` (``tolerance = 0.005``, i.e. 0.5 points of
accuracy or R^2): differences that small are within validation noise, and a shallower
cut-point is cheaper and more general. ``freeze_to = best_index + 1`` is the number of
groups to freeze when fine-tuning (fastai's ``freeze_to``; ``finetune``'s ``freeze: k``):
groups ``0 .. best_index`` produced the best frozen features and are kept, the groups
above them are the ones to adapt.

Caveat: each probe's strength is tuned on the same validation split whose metric is
reported, so the curve is slightly optimistic, equally for every layer; it ranks layers,
it does not estimate test accuracy.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.backbones.base import Backbone
from transferkit.data.types import Dataset
from transferkit.errors import DataError
from transferkit.methods.feature_heads import FeatureHeadParams, HeadKind, fit_head
from transferkit.utils.io import atomic_path, atomic_write_json

TOLERANCE = 0.005


@dataclass
class ProbeResult:
    """One probe per layer group; ``best_index`` follows the module's recommendation rule."""

    model: str
    dataset: str
    task: str
    metric: str
    head: str
    groups: list[str]
    dims: list[int]
    val_metric: list[float]
    selected: list[float]
    fit_seconds: list[float]
    extract_seconds: float
    n_train: int
    n_val: int
    best_index: int
    argmax_index: int
    tolerance: float = TOLERANCE
    rule: str = field(
        default=(
            "shallowest group within `tolerance` of the best validation metric; "
            "freeze_to = best_index + 1 groups frozen when fine-tuning"
        )
    )

    @property
    def freeze_to(self) -> int:
        """Groups to freeze when fine-tuning: ``0 .. best_index`` (``best_index + 1``)."""
        return self.best_index + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``freeze_to`` and ``best_group`` included)."""
        out = asdict(self)
        out["freeze_to"] = self.freeze_to
        out["best_group"] = self.groups[self.best_index]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def plot(self, path: str | Path) -> Path:
        """Write a PNG of the validation metric per layer group (atomically)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        x = np.arange(len(self.groups))
        fig = Figure(figsize=(max(5.0, 0.55 * len(x) + 2.5), 3.8), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(x, self.val_metric, marker="o", color="tab:blue", label=f"{self.head} probe")
        best = self.best_index
        ax.axhspan(
            max(self.val_metric) - self.tolerance,
            max(self.val_metric),
            color="tab:green",
            alpha=0.12,
            label="within tolerance of best",
        )
        ax.plot(
            [best],
            [self.val_metric[best]],
            marker="*",
            markersize=16,
            color="tab:red",
            linestyle="none",
            label=f"recommended: {self.groups[best]} (freeze_to={self.freeze_to})",
        )
        ax.set_xticks(
            x,
            self.groups,
            rotation=45 if len(x) > 6 else 0,
            ha="right" if len(x) > 6 else "center",
            fontsize=8,
        )
        ax.set_xlabel("layer group (input -> output)")
        ax.set_ylabel(f"validation {self.metric}")
        ax.set_title(f"{self.model} on {self.dataset}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        return path


def recommend(scores: list[float], tolerance: float = TOLERANCE) -> int:
    """Index of the shallowest score within ``tolerance`` of the best (NaN never wins)."""
    arr = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(arr).any():
        return len(arr) - 1
    top = np.nanmax(arr)
    return int(np.flatnonzero(np.nan_to_num(arr, nan=-np.inf) >= top - tolerance)[0])


def _cap(ds: Dataset, max_examples: int | None, seed: int) -> Dataset:
    if max_examples is None or len(ds) <= max_examples:
        return ds
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:max_examples])
    return ds.subset(idx)


def _num_outputs(train: Dataset, val: Dataset) -> int:
    if train.task == "regression":
        return 1
    top = int(max(np.max(train.y), np.max(val.y))) + 1
    return max(train.num_classes, top)


def layer_probe(
    backbone: Backbone,
    train: Dataset,
    val: Dataset,
    *,
    head: HeadKind = "logreg",
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Fit a ``head`` probe on every layer group's pooled features; see the module docstring.

    Args:
        backbone: frozen feature extractor (its mode is restored afterwards).
        train, val: labelled splits; the probe is fitted on train, tuned and scored on val.
        head: ``logreg`` | ``ridge`` | ``linear_svm`` | ``mlp`` | ``knn``.
        batch_size: extraction batch size; each batch is ONE forward pass for all groups.
        cache_dir: on-disk feature cache (content-hashed; repeated probes are instant).
        max_examples: at most this many examples from each split (seeded random subset).
        seed: seed of that subset and of the MLP head's initialisation.
    """
    from transferkit.engine.extract import extract_features

    for name, ds in (("train", train), ("val", val)):
        if ds.y is None or len(ds) == 0:
            raise DataError(
                f"the {name} split has no labelled examples",
                where=ds.name,
                fix="probe a labelled dataset (train and val splits)",
            )
    train, val = _cap(train, max_examples, seed), _cap(val, max_examples, seed + 1)
    groups = backbone.layer_groups()
    layers = list(range(len(groups)))
    t0 = time.perf_counter()
    f_tr = extract_features(
        backbone, train.x, batch_size=batch_size, layers=layers, cache_dir=cache_dir
    )
    f_va = extract_features(
        backbone, val.x, batch_size=batch_size, layers=layers, cache_dir=cache_dir
    )
    extract_s = time.perf_counter() - t0
    params = FeatureHeadParams(head=head, seed=seed)
    n_out = _num_outputs(train, val)
    scores, selected, fit_s = [], [], []
    for i in layers:
        t1 = time.perf_counter()
        fitted = fit_head(
            f_tr[i], train.y, f_va[i], val.y, task=train.task, num_outputs=n_out, params=params
        )
        fit_s.append(time.perf_counter() - t1)
        scores.append(float(fitted.val_score))
        selected.append(float(fitted.selected))
    return ProbeResult(
        model=backbone.spec,
        dataset=train.name,
        task=train.task,
        metric="accuracy" if train.task == "classification" else "r2",
        head=head,
        groups=[g.name for g in groups],
        dims=[int(f.shape[1]) for f in f_tr],
        val_metric=scores,
        selected=selected,
        fit_seconds=fit_s,
        extract_seconds=extract_s,
        n_train=len(train),
        n_val=len(val),
        best_index=recommend(scores),
        argmax_index=int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0,
    )


def run_probe(
    model_spec: str,
    data: str,
    *,
    seed: int = 0,
    label_budget: int | None = None,
    max_examples: int | None = 2000,
    out_dir: Path,
    head: HeadKind = "logreg",
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
) -> ProbeResult:
    """``transferkit probe``: load model and data, probe every layer, write the results.

    Writes ``out_dir/probe.json`` (:meth:`ProbeResult.to_dict`) and ``out_dir/probe.png``,
    both atomically.
    """
    import torch

    from transferkit.backbones import create_backbone
    from transferkit.data import load_dataset

    torch.manual_seed(seed)
    backbone = create_backbone(model_spec)
    splits = load_dataset(data, seed=seed, label_budget=label_budget)
    result = layer_probe(
        backbone,
        splits.train,
        splits.val,
        head=head,
        batch_size=batch_size,
        cache_dir=cache_dir,
        max_examples=max_examples,
        seed=seed,
    )
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "probe.json", result.to_dict())
    result.plot(out_dir / "probe.png")
    return result


def load_probe(path: str | Path) -> ProbeResult:
    """Read a ``probe.json`` written by :func:`run_probe`."""
    return ProbeResult.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
