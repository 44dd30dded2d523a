"""metrics.json of a multi-task run: per-task verdicts and the average relative gain Δm.

For task ``t`` with metric ``M_t`` (accuracy for classification, micro-F1 for multi-label,
RMSE for regression),

.. math::

    \\Delta_m = \\frac{1}{T} \\sum_t (-1)^{l_t} \\frac{M_{mtl,t} - M_{single,t}}{M_{single,t}}

with ``l_t = 1`` when lower is better (Maninis, Radosavovic & Kokkinos 2019, "Attentive
Single-Tasking of Multiple Tasks", CVPR, https://arxiv.org/abs/1904.08918). Δm is computed
per seed (shared model and single-task models on the same splits) and reported with a
Student-t interval over seeds; each task also gets its own transfer-gain verdict against
its single-task model (:func:`~transferkit.diagnostics.verdict.transfer_gain`; for a
multi-label task :func:`multilabel_gain`, the same interval on micro-F1), and tasks with a
negative verdict are listed as suffering from negative transfer.

Multi-label metrics (outputs are logits ``[N, K]``, predictions ``z > 0``, labels 0/1
``[N, K]``): ``micro_f1 = 2 TP / (2 TP + FP + FN)`` summed over all ``N K`` cells,
``macro_f1`` the mean of the per-label F1s, ``subset_accuracy`` the share of rows with all
``K`` labels right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from transferkit.diagnostics.metrics import compute_metrics, higher_is_better, primary_metric
from transferkit.diagnostics.verdict import t_interval, transfer_gain, verdict_from_interval
from transferkit.experiment.config import ExperimentConfig
from transferkit.experiment.multitask_data import TaskInfo


def task_primary_metric(kind: str) -> str:
    """The metric a task's verdict and the shared model's early stopping use."""
    return "micro_f1" if kind == "multilabel" else primary_metric(kind)


def delta_m_metric(kind: str) -> str:
    return {"classification": "accuracy", "multilabel": "micro_f1"}.get(kind, "rmse")


def multilabel_metrics(outputs: Any, y: Any) -> dict[str, float]:
    """micro-F1, macro-F1 and subset accuracy of logits ``[N, K]`` against 0/1 ``[N, K]``."""
    lab = np.asarray(y, dtype=np.int64)
    pred = (np.asarray(outputs, dtype=np.float64).reshape(lab.shape) > 0).astype(np.int64)
    return {
        "micro_f1": float(f1_score(lab, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(lab, pred, average="macro", zero_division=0)),
        "subset_accuracy": float((pred == lab).all(-1).mean()),
    }


def task_metrics(outputs: Any, y: Any, kind: str) -> dict[str, float]:
    """All scalar metrics of one task's outputs (any kind)."""
    if kind == "multilabel":
        return multilabel_metrics(outputs, y)
    return compute_metrics(outputs, y, kind)


def _micro_f1(y: Any, out: Any) -> float:
    return multilabel_metrics(out, y)["micro_f1"]


def _row_counts(y: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per-row ``(2 TP, 2 TP + FP + FN)`` ``[N, 2]``: micro-F1 is their column-sum ratio."""
    lab = np.asarray(y, dtype=bool)
    pred = np.asarray(out, dtype=np.float64).reshape(lab.shape) > 0
    tp = (lab & pred).sum(-1)
    return np.stack([2 * tp, lab.sum(-1) + pred.sum(-1)], axis=1).astype(np.float64)


def _boot_micro_f1(counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Micro-F1 of each resample ``idx`` ``[B, N]`` (0 when no positive at all)."""
    num, den = counts[idx, 0].sum(-1), counts[idx, 1].sum(-1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def multilabel_gain(
    runs: Sequence[dict[str, Any]], confidence: float = 0.95, n_boot: int = 2000
) -> dict[str, Any]:
    """Micro-F1 gain ``F1(transfer) - F1(baseline)`` of a multi-label task.

    Several seeds: Student-t interval of the per-seed gains. One seed: paired bootstrap
    over test rows (the same resampled rows score both models), percentile interval.
    """
    per_seed = [_micro_f1(r["y"], r["transfer"]) - _micro_f1(r["y"], r["baseline"]) for r in runs]
    if len(runs) >= 2:
        lo, hi = t_interval(per_seed, confidence)
        how = f"Student-t interval over {len(runs)} seeds"
    else:
        y, a, b = (np.asarray(runs[0][k]) for k in ("y", "transfer", "baseline"))
        idx = np.random.default_rng(0).integers(0, len(y), (n_boot, len(y)))
        boot = _boot_micro_f1(_row_counts(y, a), idx) - _boot_micro_f1(_row_counts(y, b), idx)
        alpha = (1 - confidence) / 2
        lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1 - alpha]))
        how = f"paired bootstrap over {len(y)} test examples ({n_boot} resamples)"
    return {
        "delta": float(np.mean(per_seed)),
        "ci95": [float(lo), float(hi)],
        "verdict": verdict_from_interval(lo, hi),
        "method": how,
        "confidence": confidence,
        "per_seed": per_seed,
    }


def _gain(runs: list[dict[str, Any]], pm: str, kind: str, cfg: ExperimentConfig) -> dict:
    if kind == "multilabel":
        return multilabel_gain(runs, cfg.confidence, cfg.bootstrap_samples)
    return transfer_gain(runs, pm, kind, cfg.confidence, cfg.bootstrap_samples)


def delta_m(
    mtl: dict[str, dict[str, float]], single: dict[str, dict[str, float]], tasks: Sequence[TaskInfo]
) -> float:
    """Δm (a fraction: 0.02 = +2 %) for one seed from per-task metric dicts."""
    terms = []
    for t in tasks:
        k = delta_m_metric(t.kind)
        sign = 1.0 if higher_is_better(k) else -1.0
        base = single[t.name][k]
        terms.append(sign * (mtl[t.name][k] - base) / base if base else np.nan)
    return float(np.mean(terms))


def _mean(ms: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}


def assemble_multitask(
    cfg: ExperimentConfig,
    tasks: Sequence[TaskInfo],
    recs: dict[str, list[dict[str, Any]]],
    total_s: float,
) -> dict[str, Any]:
    """The multi-task metrics.json: shared model vs every task alone."""
    target = recs["target"]
    per_task: dict[str, Any] = {}
    for t in tasks:
        pm = task_primary_metric(t.kind)
        mtl = [r["extra"]["tasks"][t.name] for r in target]
        entry: dict[str, Any] = {
            "kind": t.kind,
            "primary_metric": pm,
            "multitask": _mean([m["metrics"] for m in mtl]),
            "per_seed": [m["metrics"] for m in mtl],
        }
        single = recs.get(f"single_{t.name}")
        if single:
            entry["single_task"] = _mean([r["metrics"] for r in single])
            runs = [
                {
                    "y": np.asarray(m["y"]),
                    "transfer": np.asarray(m["outputs"]),
                    "baseline": np.asarray(s["outputs"]),
                }
                for m, s in zip(mtl, single, strict=True)
            ]
            entry["gain"] = {
                **_gain(runs, pm, t.kind, cfg),
                "metric": pm,
                "baseline": "single_task",
            }
        per_task[t.name] = entry
    out: dict[str, Any] = {
        "method": cfg.method.name,
        "family": "multi-task",
        "backbone": cfg.model.backbone,
        "dataset": {
            "name": str(cfg.data.target),
            "tasks": {
                t.name: {"kind": t.kind, "classes": t.classes, "group": t.group} for t in tasks
            },
        },
        "primary_metric": "mean_task_score",
        "target": {
            "mean_task_score": float(np.mean([r["metrics"]["mean_task_score"] for r in target]))
        },
        "target_per_seed": [
            {"seed": s, **r["metrics"]} for s, r in zip(cfg.seeds, target, strict=True)
        ],
        "tasks": per_task,
        "baselines": {},
        "best_baseline": None,
        "transfer_gain": None,
        "details": None,
        "seeds": list(cfg.seeds),
        "timing": {
            "total_s": total_s,
            "stages_s": {k: float(sum(r["seconds"] for r in rs)) for k, rs in recs.items()},
        },
        "selection": [{k: v for k, v in r["extra"].items() if k != "tasks"} for r in target],
    }
    for t in tasks:
        out["target"][f"{t.name}_{task_primary_metric(t.kind)}"] = per_task[t.name]["multitask"][
            task_primary_metric(t.kind)
        ]
    if all(f"single_{t.name}" in recs for t in tasks):
        _add_single_task_summary(out, cfg, tasks, recs, per_task)
    return out


def _add_single_task_summary(
    out: dict[str, Any],
    cfg: ExperimentConfig,
    tasks: Sequence[TaskInfo],
    recs: dict[str, list[dict[str, Any]]],
    per_task: dict[str, Any],
) -> None:
    n = len(cfg.seeds)
    singles = [{t.name: recs[f"single_{t.name}"][i]["metrics"] for t in tasks} for i in range(n)]
    mtls = [
        {t.name: recs["target"][i]["extra"]["tasks"][t.name]["metrics"] for t in tasks}
        for i in range(n)
    ]
    dms = [delta_m(m, s, tasks) for m, s in zip(mtls, singles, strict=True)]
    lo, hi = t_interval(dms, cfg.confidence) if n > 1 else (dms[0], dms[0])
    out["delta_m"] = {
        "mean": float(np.mean(dms)),
        "ci95": [float(lo), float(hi)],
        "per_seed": dms,
        "verdict": verdict_from_interval(lo, hi) if n > 1 else "inconclusive",
        "metrics": {t.name: delta_m_metric(t.kind) for t in tasks},
    }
    single_score = [
        float(np.mean([s[t.name][task_primary_metric(t.kind)] for t in tasks])) for s in singles
    ]
    base = {
        "mean_task_score": float(np.mean(single_score)),
        "description": "every task fine-tuned alone on the same backbone and budget",
        "per_seed": [{"mean_task_score": v} for v in single_score],
    }
    for t in tasks:
        base[f"{t.name}_{task_primary_metric(t.kind)}"] = per_task[t.name]["single_task"][
            task_primary_metric(t.kind)
        ]
    out["baselines"] = {"single_task": base}
    out["best_baseline"] = "single_task"
    out["transfer_gain"] = {
        "delta": out["delta_m"]["mean"],
        "ci95": out["delta_m"]["ci95"],
        "verdict": out["delta_m"]["verdict"],
        "method": f"Student-t interval of Δm over {n} seeds",
        "confidence": cfg.confidence,
        "per_seed": dms,
        "baseline": "single_task",
        "metric": "delta_m",
    }
    out["negative_transfer_tasks"] = [
        t.name for t in tasks if per_task[t.name].get("gain", {}).get("verdict") == "negative"
    ]
