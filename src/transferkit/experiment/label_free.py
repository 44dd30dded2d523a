"""Per-epoch label-free validation of a domain-adaptation training.

At the end of every epoch :class:`LabelFreeValidator` runs the model on three small,
fixed subsets — source train, source validation (labelled) and target validation
(labels hidden) — and returns every criterion at once:

* ``val_dev_risk`` — DEV, importance-weighted source validation risk (You et al. 2019);
* ``val_snd`` — soft neighbourhood density of the target predictions (Saito et al. 2021);
* ``val_entropy`` — mean target prediction entropy;
* ``val_source_accuracy`` — plain source validation accuracy;
* ``val_target_diversity`` — normalised entropy of the predicted-class histogram on the
  target (:func:`~transferkit.diagnostics.selection.prediction_diversity`);
* ``val_selection`` — the configured criterion with the collapse guard applied: when the
  diversity is below ``adaptation.collapse_guard`` the epoch's value is pushed
  :data:`COLLAPSE_PENALTY` towards "worse", so any checkpoint that is not collapsed is
  preferred to every collapsed one (if all collapse, the criterion alone decides).

``val_selection`` (or the raw criterion, with the guard off) is what early stopping
monitors and what picks the restored checkpoint. Oracle values computed with target
labels are returned under ``val_oracle_*`` names for the report only: they never steer
training or selection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from accelerate.utils import send_to_device
from scipy.special import softmax
from torch.utils.data import DataLoader

from transferkit.data.loaders import ExampleDataset, collate_with
from transferkit.data.types import Dataset, Splits
from transferkit.diagnostics.metrics import compute_metrics
from transferkit.diagnostics.selection import (
    below_guard,
    dev_risk,
    prediction_diversity,
    prediction_entropy,
    snd_score,
)
from transferkit.engine.evaluate import module_device
from transferkit.experiment.subsets import random_subset
from transferkit.methods import Method

#: selector -> (monitored val key, early-stopping mode)
SELECTOR_KEYS: dict[str, tuple[str, str]] = {
    "dev": ("val_dev_risk", "min"),
    "snd": ("val_snd", "max"),
    "entropy": ("val_entropy", "min"),
    "source_val": ("val_source_accuracy", "max"),
}
#: added to (min) or subtracted from (max) a collapsed epoch's criterion
COLLAPSE_PENALTY = 1e6


def selection_key(selector: str, collapse_guard: float) -> tuple[str, str]:
    """The val key early stopping monitors for ``selector`` and its mode."""
    key, mode = SELECTOR_KEYS[selector]
    return ("val_selection", mode) if collapse_guard > 0 else (key, mode)


def guarded(value: float, mode: str, collapsed: bool) -> float:
    """``value`` unchanged, or moved :data:`COLLAPSE_PENALTY` towards worse if collapsed."""
    if not collapsed:
        return value
    return value + COLLAPSE_PENALTY if mode == "min" else value - COLLAPSE_PENALTY


def features_and_logits(
    method: Method, x: Any, prepare: Callable[[Any], Any], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled backbone features ``[N, D]`` and head logits ``[N, C]`` in input order.

    Uses ``method.features_and_logits`` when a method defines one (e.g. a method whose
    prediction is not ``head(backbone(x))``), otherwise ``head(backbone(x))``.
    """
    ds = Dataset("eval", "vector", x, None)
    loader = DataLoader(
        ExampleDataset(ds, with_labels=False),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_with(prepare),
    )
    device = module_device(method)
    own = getattr(method, "features_and_logits", None)
    feats, logits = [], []
    was_training = method.training
    method.eval()
    try:
        with torch.inference_mode():
            for batch in loader:
                xb = send_to_device(batch["x"], device)
                if callable(own):
                    f, z = own(xb)
                else:
                    f = method.backbone(xb)
                    z = method.head(f)
                feats.append(f.float().cpu())
                logits.append(z.float().cpu())
    finally:
        method.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def per_example_ce(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of each row: ``-log softmax(z_i)[y_i]``, shape ``[N]``."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y.astype(np.int64)]


class LabelFreeValidator:
    """``val_fn`` for the trainer: every label-free criterion plus the hidden oracle.

    Args:
        source: the labelled source splits (train subset for DEV's density ratio, val).
        target: the target splits; ``target.val`` inputs feed the criteria, its labels
            and ``target.test`` give the oracle values only.
        prepare: the backbone's input preparation.
        n: examples per subset (source train, source val, target val).
        oracle_test: also evaluate the target test split every epoch (``val_oracle_test_*``)
            so the report can show the best checkpoint an oracle would have picked.
        selector: the configured criterion (a key of :data:`SELECTOR_KEYS`).
        collapse_guard: diversity below which an epoch counts as collapsed (0: off).
    """

    def __init__(
        self,
        source: Splits,
        target: Splits,
        prepare: Callable[[Any], Any],
        *,
        batch_size: int,
        n: int = 500,
        seed: int = 0,
        oracle_test: bool = True,
        selector: str = "dev",
        collapse_guard: float = 0.0,
    ) -> None:
        self.src_train = random_subset(source.train, n, seed)
        self.src_val = random_subset(source.val, n, seed + 1)
        self.tgt_val = random_subset(target.val, n, seed + 2)
        self.test = target.test if oracle_test else None
        self.prepare, self.bs, self.seed = prepare, batch_size, seed
        self.selector, self.collapse_guard = selector, collapse_guard

    def __call__(self, method: Method) -> dict[str, float]:
        run = lambda ds: features_and_logits(method, ds.x, self.prepare, self.bs)  # noqa: E731
        f_tr, _ = run(self.src_train)
        f_va, z_va = run(self.src_val)
        f_t, z_t = run(self.tgt_val)
        assert self.src_val.y is not None
        y_va = np.asarray(self.src_val.y)
        probs_t = softmax(z_t.astype(np.float64), axis=1)
        out = {
            "val_source_accuracy": float((z_va.argmax(1) == y_va).mean()),
            "val_entropy": prediction_entropy(probs_t),
            "val_snd": snd_score(probs_t),
            "val_dev_risk": dev_risk(f_tr, f_va, per_example_ce(z_va, y_va), f_t, seed=self.seed),
            "val_target_diversity": prediction_diversity(probs_t),
        }
        if self.collapse_guard > 0:
            key, mode = SELECTOR_KEYS[self.selector]
            collapsed = below_guard(out["val_target_diversity"], self.collapse_guard)
            out["val_selection"] = guarded(out[key], mode, collapsed)
        if self.tgt_val.y is not None:
            out["val_oracle_target_val_accuracy"] = float(
                (z_t.argmax(1) == np.asarray(self.tgt_val.y)).mean()
            )
        if self.test is not None and self.test.y is not None:
            _, z_te = run(self.test)
            for k, v in compute_metrics(z_te, self.test.y, "classification").items():
                out[f"val_oracle_test_{k}"] = float(v)
        return out


def oracle_summary(
    history: list[dict[str, Any]],
    metric: str,
    selector_key: str,
    mode: str,
    best_epoch: int | None,
    collapse_guard: float = 0.0,
) -> dict[str, Any]:
    """Per-epoch criterion vs oracle test metric, the oracle's pick and the selected pick.

    ``oracle`` is the best target-test value over evaluated epochs (it reads test labels:
    an upper bound no deployment can reach); ``selected_epoch`` is the label-free pick.
    ``selector_key`` is the raw criterion (shown per epoch); ``selected_collapsed`` says
    whether the pick's target predictions were collapsed (diversity < ``collapse_guard``).
    """
    key = f"val_oracle_test_{metric}"
    rows = [r for r in history if key in r and selector_key in r]
    if not rows:
        return {}
    best = max(rows, key=lambda r: r[key])
    chosen = [r for r in rows if r["epoch"] == best_epoch] or rows[-1:]
    div = chosen[0].get("val_target_diversity")
    return {
        "selected_criterion": float(chosen[0][selector_key]),
        "selected_diversity": None if div is None else float(div),
        "selected_collapsed": div is not None and below_guard(div, collapse_guard),
        "collapse_guard": collapse_guard,
        "criterion_key": selector_key,
        "criterion_mode": mode,
        "selected_epoch": best_epoch,
        "oracle_epoch": int(best["epoch"]),
        "oracle_test": float(best[key]),
        "epochs": [
            {
                "epoch": int(r["epoch"]),
                "criterion": float(r[selector_key]),
                "test": float(r[key]),
                **{
                    k.removeprefix("val_"): float(r[k])
                    for k in (
                        "val_dev_risk",
                        "val_snd",
                        "val_entropy",
                        "val_source_accuracy",
                        "val_target_diversity",
                    )
                    if k in r
                },
            }
            for r in rows
        ],
    }
