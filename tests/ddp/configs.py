"""Tiny data sets and experiment configs, one per method family, for the DDP tests.

Every config trains a ``tk:mlp`` on a few hundred synthetic vectors for 2 epochs with a
global batch of 8 (4 per process under 2 processes). The data sizes are chosen so that each
training set is a multiple of the batch size: every batch is then full and the 1-process
and 2-process runs see exactly the same global batches (a short last batch would be
completed by Accelerate under several processes; see docs/distributed.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

BATCH = 8
#: cases whose 2-process run must equal the 1-process run (up to float rounding)
EXACT = [
    "finetune",
    "linear_probe",
    "dann",
    "mtl_pcgrad",
    "mtl_mgda",
    "mtl_cagrad",
    "mtl_uncertainty",
    "distill",
]
#: examples per data set; with the default 15% / 20% val / test split, 198 rows leave
#: 128 training examples (16 full batches of 8), 30 validation and 40 test examples
N_ROWS = 198


def _blobs(path: Path, n: int, classes: int, shift: float, seed: int) -> None:
    """``classes`` Gaussian blobs in 6-D, moved by ``shift`` along dims 0 and 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.8, (n, 6)).astype(np.float32)
    x[:, 0] += y * 1.2 + shift * 0.5
    x[:, 1] += np.sin(y * 2.0) * 1.5 + shift
    np.savez(path, x=x, y=y)


def write_data(root: Path) -> dict[str, Path]:
    """The data sets every config reads: ``main`` (4 classes), ``source``/``target`` (a
    domain shift, 2 classes) and ``other`` (3 classes, a second multi-task group)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {k: root / f"{k}.npz" for k in ("main", "source", "target", "other")}
    _blobs(paths["main"], N_ROWS, 4, 0.0, 0)
    _blobs(paths["source"], N_ROWS, 2, 0.0, 1)
    _blobs(paths["target"], N_ROWS, 2, 2.0, 2)
    _blobs(paths["other"], N_ROWS, 3, 0.5, 3)
    return paths


def _base(name: str, target: Path, method: dict[str, Any], **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": name,
        "data": {"target": str(target)},
        "model": {
            "backbone": "tk:mlp",
            "pretrained": False,
            "backbone_options": {"in_features": 6, "hidden": [16]},
        },
        "method": method,
        "train": {
            "epochs": 2,
            "lr": 0.01,
            "batch_size": BATCH,
            "eval_batch_size": 32,
            "mixed_precision": "no",
            "log_every_steps": 4,
            "early_stopping": {"enabled": False},
        },
        "baselines": {"enabled": False},
        "seeds": [0],
        "report": False,
        "bootstrap_samples": 100,  # the verdict's bootstrap is not under test here
    }
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def family_configs(data: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """One config per case: name -> config dict."""
    mtl_tasks = [{"name": "digit"}, {"name": "parity", "derive": "parity"}]
    return {
        # fine-tuning with a regulariser, a random-init and a classical baseline, early
        # stopping (best weights restored), step checkpoints and the HTML report
        "finetune": _base(
            "finetune",
            data["main"],
            {"name": "finetune", "params": {"backbone_lr_mult": 1.0, "l2sp": {"alpha": 0.01}}},
            train={"checkpoint_every_steps": 4, "early_stopping": {"enabled": True}},
            baselines={"enabled": True, "classical": False},
            report=True,
        ),
        "linear_probe": _base("probe", data["main"], {"name": "linear_probe", "params": {}}),
        "dann": _base(
            "dann",
            data["target"],
            # no dropout in the discriminator: random masks are drawn per process, so a
            # run with dropout matches a 1-process run in distribution only
            {"name": "dann", "params": {"backbone_lr_mult": 1.0, "dropout": 0.0}},
            data={"source": str(data["source"])},
            adaptation={"selection_examples": 40, "gap_examples": 40},
            baselines={"enabled": True, "target_only": False},
        ),
        "mtl_pcgrad": _base(
            "pcgrad",
            data["main"],
            {"name": "multitask", "params": {"weighting": "pcgrad", "backbone_lr_mult": 1.0}},
            tasks=mtl_tasks,
        ),
        "mtl_mgda": _base(
            "mgda",
            data["main"],
            {"name": "multitask", "params": {"weighting": "mgda", "backbone_lr_mult": 1.0}},
            tasks=mtl_tasks,
        ),
        "mtl_cagrad": _base(
            "cagrad",
            data["main"],
            {"name": "multitask", "params": {"weighting": "cagrad", "backbone_lr_mult": 1.0}},
            tasks=mtl_tasks,
        ),
        "mtl_uncertainty": _base(
            "uncert",
            data["main"],
            {"name": "multitask", "params": {"weighting": "uncertainty", "backbone_lr_mult": 1.0}},
            tasks=mtl_tasks,
        ),
        # two task groups (two data sets): a batch shard can lack a task, so each process's
        # task loss is a mean over its own labelled examples and the run only approximates
        # the 1-process run (see docs/distributed.md)
        "mtl_groups": _base(
            "groups",
            data["main"],
            {"name": "multitask", "params": {"weighting": "uncertainty", "backbone_lr_mult": 1.0}},
            tasks=[{"name": "digit"}, {"name": "other", "data": str(data["other"])}],
        ),
        "distill": _base(
            "distill",
            data["main"],
            {"name": "distill", "params": {"losses": {"kd": 1.0}}},
            model={"backbone_options": {"in_features": 6, "hidden": [6]}},
            teacher={
                "backbone": "tk:mlp",
                "backbone_lr_mult": 1.0,
                "backbone_options": {"in_features": 6, "hidden": [24]},
            },
        ),
    }


def extra_configs(families: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``resume``: the fine-tuning run without baselines or report (its target stage is
    the ``finetune`` one), to interrupt and resume; ``odd_batch``: a global batch of 7,
    which 2 processes cannot split."""
    resume = {**families["finetune"], "name": "resume", "report": False}
    resume["baselines"] = {"enabled": False}
    odd = {**families["finetune"], "name": "odd", "train": {**families["finetune"]["train"]}}
    odd["train"]["batch_size"] = 7
    return {"resume": resume, "odd_batch": odd}


def write_configs(root: Path) -> dict[str, Path]:
    """Write the data and every config under ``root``; name -> YAML path."""
    data = write_data(root / "data")
    families = family_configs(data)
    out = {}
    for name, cfg in {**families, **extra_configs(families)}.items():
        out[name] = root / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out
