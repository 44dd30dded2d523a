"""The measurements behind an advice: LogME vs random-init controls, layer probe, domain gap.

* **Transferability with a negative control.** LogME (You et al. 2021,
  https://arxiv.org/abs/2102.11005) of the model's pooled features on the target's
  labelled training examples, and of ``n_controls`` random-init copies of the same
  architecture (seeds ``seed + 1 .. seed + n_controls``). The gap
  ``LogME(pretrained) - mean(LogME(random))`` (nats per example) is what the pretrained
  weights add beyond the architecture; the controls' sample sd tells how large a gap
  random initialisation alone produces.
* **Layer probe** (:func:`transferkit.diagnostics.probing.layer_probe`) when the backbone
  has at least two layer groups: one logistic-regression probe per group, all groups
  from one forward pass; the final group's features serve LogME too (cache hit).
* **Domain gap** (:func:`transferkit.diagnostics.domain_gap.domain_gap_report`): proxy
  A-distance and median-heuristic MMD² between source and target training features of the
  pretrained model, at most :data:`GAP_EXAMPLES` per domain.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferkit.advisor.candidates import RANDOM_PREFIX, build_candidate
from transferkit.advisor.targets import capped
from transferkit.backbones.base import Backbone
from transferkit.data.types import Dataset
from transferkit.diagnostics.transferability import logme

if TYPE_CHECKING:
    from transferkit.diagnostics.probing import ProbeResult

GAP_EXAMPLES = 1000


def final_and_probe(
    backbone: Backbone,
    train: Dataset,
    val: Dataset,
    *,
    seed: int,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, ProbeResult | None]:
    """Final pooled features of ``train`` and the layer-probe result (None: < 2 groups).

    The probe extracts every group of ``train`` in one pass; the final group's output
    (equal to ``forward``) is read back from the same extraction cache.
    """
    from transferkit.diagnostics.probing import layer_probe
    from transferkit.engine.extract import extract_features

    n_groups = len(backbone.layer_groups())
    if n_groups < 2 or val.y is None or len(val) == 0:
        return extract_features(backbone, train.x, batch_size=batch_size, cache_dir=cache_dir), None
    probe = layer_probe(backbone, train, val, batch_size=batch_size, cache_dir=cache_dir, seed=seed)
    feats = extract_features(
        backbone,
        train.x,
        batch_size=batch_size,
        layers=list(range(n_groups)),
        cache_dir=cache_dir,
    )
    return feats[-1], probe


def control_logme(
    spec: str,
    train: Dataset,
    *,
    seed: int,
    n_controls: int,
    batch_size: int = 64,
    options: dict[str, Any] | None = None,
) -> list[float]:
    """LogME of ``n_controls`` random-init copies of ``spec`` (seeds ``seed+1 ..``)."""
    from transferkit.engine.extract import extract_features

    values = []
    for k in range(n_controls):
        bb, _ = build_candidate(RANDOM_PREFIX + spec, train, seed=seed + 1 + k, options=options)
        values.append(float(logme(extract_features(bb, train.x, batch_size=batch_size), train.y)))
    return values


def is_random_init(
    backbone: Backbone,
    spec: str,
    data: Dataset,
    *,
    seed: int,
    options: dict[str, Any] | None = None,
) -> bool:
    """True when ``backbone`` equals ``random:<spec>`` built with the same seed, i.e. the
    spec has no pretrained weights (``tk:mlp``, ``tk:smallcnn``)."""
    import torch

    twin, _ = build_candidate(RANDOM_PREFIX + spec, data, seed=seed, options=options)
    mine, theirs = backbone.state_dict(), twin.state_dict()
    return mine.keys() == theirs.keys() and all(
        mine[k].shape == theirs[k].shape and torch.equal(mine[k].cpu(), theirs[k]) for k in mine
    )


def transferability(
    pretrained: np.ndarray, controls: list[float], labels: np.ndarray
) -> dict[str, Any]:
    """The LogME record of advice.json: pretrained, controls (mean, sd, all), gap."""
    value = float(logme(pretrained, labels))
    mean = float(np.mean(controls)) if controls else float("nan")
    sd = float(np.std(controls, ddof=1)) if len(controls) >= 2 else 0.0
    return {
        "metric": "logme",
        "pretrained": value,
        "random_init": mean,
        "random_init_sd": sd,
        "random_init_runs": list(controls),
        "gap": value - mean,
        "n_examples": len(labels),
        "n_features": int(np.asarray(pretrained).shape[1]),
        "paper": "https://arxiv.org/abs/2102.11005",
    }


def domain_gap(
    backbone: Backbone,
    source: Dataset,
    target: Dataset,
    *,
    seed: int,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Proxy A-distance and MMD² between source and target features (<= GAP_EXAMPLES each).

    ``target`` should be every target training input, labelled or not (the adaptation
    pool): the gap concerns inputs, not labels.
    """
    from transferkit.diagnostics.domain_gap import domain_gap_report
    from transferkit.engine.extract import extract_features

    src = capped(source, GAP_EXAMPLES, seed + 2)
    tgt = capped(target, GAP_EXAMPLES, seed + 3)
    f_s = extract_features(backbone, src.x, batch_size=batch_size)
    f_t = extract_features(backbone, tgt.x, batch_size=batch_size)
    t0 = time.perf_counter()
    report = domain_gap_report(f_s, f_t, seed=seed)
    return {**report, "seconds": time.perf_counter() - t0}
