"""Fake run directories for report tests: full, minimal, regression, missing log, corrupt log.

The numbers are deterministic and realistic (noisy decreasing loss, rising validation
accuracy), so the same builders serve the screenshot check of the rendered report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_YAML = """\
name: tweets-finetune
data:
  target: sentiment/tweets
  label_budget: 32
  val_fraction: 0.2
model:
  backbone: packaged:minilm-l6
method:
  name: finetune
  params: {backbone_lr_mult: 0.1}
train: {epochs: 4, batch_size: 16, lr: 0.0001, optimizer: adamw}
seeds: [0, 1, 2]
"""


def classification_metrics(
    name: str = "sentiment/tweets",
    delta: float = 0.11,
    ci: tuple[float, float] = (0.06, 0.16),
    verdict: str = "positive",
) -> dict[str, Any]:
    """A full classification metrics.json following the DESIGN.md contract."""
    target = 0.70 + delta
    return {
        "method": "finetune",
        "family": "fine-tuning",
        "backbone": "packaged:minilm-l6",
        "dataset": {
            "name": name,
            "modality": "text",
            "task": "classification",
            "classes": ["negative", "positive"],
            "sizes": {"train": 64, "val": 600, "test": 800, "unlabelled": 2000},
        },
        "primary_metric": "accuracy",
        "target": {
            "accuracy": target,
            "balanced_accuracy": target - 0.005,
            "macro_f1": target - 0.01,
        },
        "target_per_seed": [
            {
                "seed": s,
                "accuracy": target + d,
                "balanced_accuracy": target + d,
                "macro_f1": target + d - 0.01,
            }
            for s, d in zip((0, 1, 2), (-0.01, 0.0, 0.01), strict=True)
        ],
        "baselines": {
            "random_init": {
                "accuracy": 0.55,
                "balanced_accuracy": 0.54,
                "macro_f1": 0.52,
                "description": "same architecture, random init, same budget",
                "per_seed": [{"accuracy": 0.55}] * 3,
            },
            "tfidf_logreg": {
                "accuracy": 0.70,
                "balanced_accuracy": 0.69,
                "macro_f1": 0.69,
                "description": "TF-IDF + logistic regression",
                "per_seed": [{"accuracy": a} for a in (0.69, 0.70, 0.71)],
            },
        },
        "best_baseline": "tfidf_logreg",
        "transfer_gain": {
            "delta": delta,
            "ci95": list(ci),
            "verdict": verdict,
            "method": "Student-t interval over 3 seeds",
            "baseline": "tfidf_logreg",
            "metric": "accuracy",
            "confidence": 0.95,
            "per_seed": [delta - 0.01, delta, delta + 0.01],
        },
        "forgetting": None,
        "details": {
            "classes": ["negative", "positive"],
            "confusion_matrix": [[330, 70], [82, 318]],
            "per_class": {
                "negative": {"precision": 0.80, "recall": 0.825, "f1": 0.812, "support": 400},
                "positive": {"precision": 0.82, "recall": 0.795, "f1": 0.807, "support": 400},
            },
        },
        "timing": {
            "total_s": 123.4,
            "train_s": 95.2,
            "baselines_s": 21.7,
            "stages_s": {"target": 95.2, "random_init": 18.1, "classical": 3.6},
        },
        "seeds": [0, 1, 2],
        "selection": [{"steps": 80, "stopped": "max_epochs", "best_epoch": e} for e in (3, 4, 4)],
        "deployment": {"latency_ms": 1.23, "size_mb": 0.041},
        "calibration_by_group": {
            "sentiment": {"accuracy": 0.81, "weight": 0.7},
            "topic": {"accuracy": 0.64, "weight": 0.3},
        },
    }


def regression_metrics() -> dict[str, Any]:
    """A regression run: R^2 primary, MAE/RMSE, no confusion matrix, inconclusive verdict."""
    return {
        "method": "linear_probe",
        "family": "feature extraction",
        "backbone": "tk:smallcnn",
        "dataset": {
            "name": "sentiment/movies-score",
            "task": "regression",
            "modality": "text",
            "sizes": {"train": 200, "val": 50, "test": 300},
        },
        "primary_metric": "r2",
        "target": {"r2": 0.412, "mae": 1.02, "rmse": 1.31},
        "target_per_seed": [{"seed": 0, "r2": 0.412, "mae": 1.02, "rmse": 1.31}],
        "baselines": {
            "ridge": {
                "r2": 0.40,
                "mae": 1.05,
                "rmse": 1.33,
                "description": "TF-IDF + ridge regression",
            }
        },
        "best_baseline": "ridge",
        "transfer_gain": {
            "delta": 0.012,
            "ci95": [-0.02, 0.045],
            "verdict": "inconclusive",
            "method": "paired bootstrap over 300 test examples (200 resamples)",
            "baseline": "ridge",
            "metric": "r2",
        },
        "forgetting": None,
        "details": None,
        "timing": {"total_s": 12.5},
        "seeds": [0],
    }


def log_lines(
    runs: tuple[str, ...] = ("target-seed0", "target-seed1", "random_init-seed0"),
    epochs: int = 4,
    steps_per_epoch: int = 20,
    shift: float = 0.0,
) -> list[str]:
    """log.jsonl lines: a noisy decaying loss per step and validation accuracy per epoch
    (``shift`` moves the validation accuracy of the transfer runs)."""
    rng = np.random.default_rng(0)
    lines = []
    for r, run in enumerate(runs):
        floor, speed = (0.35, 0.04) if run.startswith("target") else (0.6, 0.015)
        for step in range(1, epochs * steps_per_epoch + 1):
            loss = floor + 0.35 * math.exp(-speed * step) + 0.05 * rng.standard_normal()
            lines.append(
                json.dumps(
                    {
                        "run": run,
                        "step": step,
                        "epoch": (step - 1) // steps_per_epoch,
                        "loss": round(loss, 4),
                        "lr": 1e-4,
                    }
                )
            )
            if step % steps_per_epoch == 0:
                ep = step // steps_per_epoch
                tgt = run.startswith("target")
                acc = (0.62 + shift + 0.01 * r if tgt else 0.5) + (
                    0.05 if tgt else 0.02
                ) * math.log1p(ep)
                lines.append(
                    json.dumps(
                        {
                            "run": run,
                            "epoch": ep,
                            "step": step,
                            "val_accuracy": round(acc, 4),
                            "train_loss": round(loss, 4),
                        }
                    )
                )
    return lines


def make_run(
    root: Path, kind: str = "full", name: str | None = None, metrics: dict[str, Any] | None = None
) -> Path:
    """Write a fake run directory of the given kind under ``root`` and return it.

    Kinds: ``full``, ``minimal`` (metrics.json only, few keys), ``regression``,
    ``missing_log`` (no log.jsonl), ``corrupt_log`` (a half-written last line).
    """
    d = root / (name or kind)
    d.mkdir(parents=True, exist_ok=True)
    if kind == "minimal":
        m = metrics or {"method": "linear_probe", "target": {"accuracy": 0.66}}
        (d / "metrics.json").write_text(json.dumps(m))
        return d
    m = metrics or (regression_metrics() if kind == "regression" else classification_metrics())
    (d / "metrics.json").write_text(json.dumps(m, indent=2))
    (d / "config.yaml").write_text(CONFIG_YAML)
    if kind == "missing_log":
        return d
    target = m.get("target", {}).get("accuracy") if isinstance(m.get("target"), dict) else None
    lines = log_lines(shift=target - 0.81 if isinstance(target, float) else 0.0)
    if kind == "regression":
        lines = [ln.replace("val_accuracy", "val_r2") for ln in lines]
    if kind == "corrupt_log":
        lines.insert(5, "this is not json")
        lines.append('{"run": "target-seed0", "step": 81, "lo')
    (d / "log.jsonl").write_text("\n".join(lines) + "\n")
    return d
