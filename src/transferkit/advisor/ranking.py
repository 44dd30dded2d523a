"""Rank candidate backbones for a target task by transferability scores, without training.

For every candidate (a backbone spec, ``random:<spec>`` for a randomly initialised control,
or a :class:`~transferkit.backbones.base.Backbone`), pooled features ``F`` ``[N, D]`` of the
target's training split (a seeded random subset of at most ``max_examples`` rows) are
extracted in ONE forward pass per batch (with ``layers=True``, the pooled outputs of every
layer group come from that same pass), and scores are computed on them (see
:mod:`transferkit.diagnostics.transferability`):

* the chosen ``metric`` (default LogME, You et al. 2021, https://arxiv.org/abs/2102.11005);
* the cheap feature scores ``logme``, ``hscore``, ``gbc`` (classification only for the
  last two);
* ``leep`` and ``nce``, which need the source model's class probabilities ``[N, Z]``, only
  when the backbone keeps its source classifier (``packaged:efficientnet-lite0``'s ImageNet
  head): elsewhere they are skipped with a note.

Rows come back sorted best first by the chosen metric at the final layer (rows where it
could not be computed last), each with its 1-based ``rank``. Scores compare candidates on
ONE target set; their absolute values mean little across data sets. The random-init
controls show what an architecture scores with no pretraining at all: a pretrained model
that does not beat its own control carries no useful knowledge for this target.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.advisor.candidates import (
    build_candidate,
    classifier_head,
    count_params,
    source_probs,
)
from transferkit.advisor.targets import DataSpec, capped, data_label, labelled, load_splits
from transferkit.backbones.base import Backbone
from transferkit.data.types import Dataset, Splits
from transferkit.diagnostics.transferability import SCORES
from transferkit.errors import ConfigError, DataError
from transferkit.utils.io import atomic_write_json

CHEAP_SCORES = ("logme", "hscore", "gbc")
CLASS_ONLY = frozenset({"hscore", "hscore_shrinkage", "gbc", "leep", "nce", "nleep"})


def score_names(metric: str, has_head: bool, task: str) -> tuple[list[str], list[str]]:
    """(scores to compute, notes on skipped ones), the chosen ``metric`` first."""
    names, notes = [metric], []
    for name in (*CHEAP_SCORES, "leep", "nce"):
        if name not in names:
            names.append(name)
    kept = []
    for name in names:
        if SCORES.get(name).needs_source_probs and not has_head:
            notes.append(f"{name} skipped: the backbone has no source classifier head")
        elif task != "classification" and name in CLASS_ONLY:
            notes.append(f"{name} skipped: it needs class labels, the task is {task}")
        else:
            kept.append(name)
    return kept, notes


def _safe_score(
    name: str, f: np.ndarray, y: np.ndarray, probs: np.ndarray | None, notes: list[str]
) -> float | None:
    """One score, or None with a note when the data cannot support it."""
    try:
        value = SCORES.get(name)(f, y, source_probs=probs)
    except DataError as exc:
        notes.append(f"{name} not computed: {exc.what}")
        return None
    if not np.isfinite(value):
        notes.append(f"{name} not finite ({value})")
        return None
    return float(value)


def _layer_rows(
    backbone: Backbone, feats: list[np.ndarray], y: np.ndarray, metric: str, notes: list[str]
) -> tuple[list[dict[str, Any]], str]:
    """Per-layer-group scores (LogME when ``metric`` needs source probabilities)."""
    name = "logme" if SCORES.get(metric).needs_source_probs else metric
    groups = backbone.layer_groups()
    rows = [
        {
            "index": i,
            "name": g.name,
            "dim": int(f.shape[1]),
            "score": _safe_score(name, f, y, None, notes),
        }
        for i, (g, f) in enumerate(zip(groups, feats, strict=True))
    ]
    return rows, name


def _best_layer(rows: list[dict[str, Any]], higher: bool) -> int | None:
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return None
    sign = 1.0 if higher else -1.0
    return int(max(scored, key=lambda r: (sign * r["score"], -r["index"]))["index"])


def score_candidate(
    spec: str | Backbone,
    train: Dataset,
    *,
    metric: str = "logme",
    layers: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One row of :func:`rank_models`: build, extract (one pass), score."""
    from transferkit.engine.extract import extract_features

    backbone, cand = build_candidate(spec, train, seed=seed)
    t0 = time.perf_counter()
    if layers:
        idx = list(range(len(backbone.layer_groups())))
        feats = extract_features(
            backbone, train.x, batch_size=batch_size, layers=idx, cache_dir=cache_dir
        )
    else:
        feats = [extract_features(backbone, train.x, batch_size=batch_size, cache_dir=cache_dir)]
    extract_s = time.perf_counter() - t0
    head = classifier_head(backbone) if cand.pretrained else None
    names, notes = score_names(metric, head is not None, train.task)
    probs = source_probs(feats[-1], head) if head is not None else None
    t1 = time.perf_counter()
    scores = {n: _safe_score(n, feats[-1], train.y, probs, notes) for n in names}
    row: dict[str, Any] = {
        "model": cand.label,
        "spec": cand.spec,
        "pretrained": cand.pretrained,
        "control": not cand.pretrained,
        "params": count_params(backbone),
        "num_features": int(backbone.num_features),
        "metric": metric,
        "score": scores.get(metric),
        "scores": scores,
    }
    if layers:
        rows, layer_metric = _layer_rows(backbone, feats, train.y, metric, notes)
        best = _best_layer(rows, SCORES.get(layer_metric).higher_is_better)
        row.update(layer_metric=layer_metric, layers=rows, best_layer=best)
    row.update(extract_s=extract_s, score_s=time.perf_counter() - t1, notes=notes)
    return row


def sort_rows(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first by ``score`` (direction from the metric); missing scores last; add ``rank``."""
    sign = 1.0 if SCORES.get(metric).higher_is_better else -1.0
    order = sorted(
        range(len(rows)),
        key=lambda i: (rows[i]["score"] is None, -sign * (rows[i]["score"] or 0.0), i),
    )
    out = [rows[i] for i in order]
    for r, row in enumerate(out, start=1):
        row["rank"] = r
    return out


def rank_models(
    specs: Sequence[str | Backbone],
    data: DataSpec | Splits,
    *,
    metric: str = "logme",
    layers: bool = False,
    max_examples: int = 2000,
    seed: int = 0,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Score every candidate on ``data``'s training split; rows sorted best first.

    Args:
        specs: backbone specs (``random:<spec>`` = random-init control) or Backbones.
        data: dataset name, path or mapping spec (see ``load_dataset``), or Splits.
        metric: the score to rank by (``transferkit.diagnostics.transferability.SCORES``).
        layers: also score every layer group (same forward pass) and report the best one.
        max_examples: cap on training examples (seeded random subset).
        seed: seeds the split, the subset and random initialisations.

    Raises:
        ConfigError: unknown metric, no candidates, a model that cannot read the data, or
            a metric needing source probabilities when no candidate has a classifier head.
        DataError: unreadable or unlabelled data.
    """
    SCORES.get(metric)  # unknown metric -> ConfigError listing the known ones
    if not specs:
        raise ConfigError("no models to score", fix="pass at least one backbone spec")
    train = labelled(load_splits(data, seed=seed).train, "target")
    if train.task != "classification" and metric in CLASS_ONLY:
        raise ConfigError(
            f"metric {metric!r} needs class labels but {train.name!r} is {train.task}",
            where=f"--metric {metric}",
            fix="use --metric logme for regression targets",
        )
    train = capped(train, max_examples, seed)
    rows = [
        score_candidate(
            s,
            train,
            metric=metric,
            layers=layers,
            seed=seed,
            batch_size=batch_size,
            cache_dir=cache_dir,
        )
        for s in specs
    ]
    if all(r["score"] is None for r in rows) and SCORES.get(metric).needs_source_probs:
        raise ConfigError(
            f"metric {metric!r} needs a source classifier head, and none of the models has one",
            where=f"--metric {metric}",
            fix="use a feature score such as logme, hscore or gbc",
        )
    return sort_rows(rows, metric)


def write_scores(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    *,
    data: DataSpec | Splits,
    metric: str,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/scores.json`` and ``out_dir/scores.png`` (both atomically)."""
    from transferkit.advisor.plots import plot_scores

    out = Path(out_dir)
    doc = {
        "data": data_label(data),
        "metric": metric,
        "higher_is_better": SCORES.get(metric).higher_is_better,
        "paper": SCORES.get(metric).paper,
        **(extra or {}),
        "rows": rows,
    }
    atomic_write_json(out / "scores.json", doc)
    png = plot_scores(rows, metric, out / "scores.png", title=f"{metric} on {doc['data']}")
    return out / "scores.json", png
