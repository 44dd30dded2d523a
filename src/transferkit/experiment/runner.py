"""Run a whole experiment: data -> transfer method -> baselines -> verdict -> report.

For each seed the target splits are drawn (the labelled subset depends on the seed), the
transfer method is trained, and the target-only baselines are trained on the same splits:
the same architecture from random initialisation, and the modality's classical model.
``transfer_gain`` compares the method with the best baseline (highest mean primary
metric), seed by seed (see :mod:`transferkit.diagnostics.verdict`).

Under a multi-process launch (``torchrun`` / ``accelerate launch``, see
``docs/distributed.md``) every process runs the same plan. The main process alone
creates the run directory, decides which stages a resume reuses, writes stage records,
``metrics.json``, ``log.jsonl`` and ``report.html``; each stage's record is the main
process's, broadcast to the others, and every write is followed by a barrier, so each
file is written exactly once and every process returns the same :class:`Result`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data import load_dataset
from transferkit.data.types import Splits
from transferkit.diagnostics.metrics import (
    classification_details,
    higher_is_better,
    primary_metric,
)
from transferkit.diagnostics.verdict import transfer_gain
from transferkit.engine import accel
from transferkit.experiment import da_stages, kd_stages, mtl_stages, stages
from transferkit.experiment.config import ExperimentConfig, dump_config, load_config
from transferkit.experiment.domains import load_source_splits
from transferkit.experiment.mtl_metrics import assemble_multitask
from transferkit.experiment.multitask_data import load_task_splits
from transferkit.experiment.rundir import (
    load_stage,
    merge_logs,
    open_run_dir,
    prepare_run_dir,
    save_stage,
    stage_dirname,
)
from transferkit.experiment.subsets import cap
from transferkit.methods import METHODS
from transferkit.utils.io import atomic_write_json

BASELINE_INFO = {
    "random_init": "same architecture from random initialisation, same data and budget",
    "source_only": "same backbone fine-tuned on the labelled source only, tested on the target",
    "target_only": "same backbone fine-tuned on the labelled target training split "
    "(uses target labels: a reference, not the comparator)",
    "student_labels_only": "the student architecture fine-tuned on the labels alone",
}
#: the baseline the verdict compares with, per method family (default: the best baseline)
COMPARATOR = {"domain-adaptation": "source_only", "distillation": "student_labels_only"}
# Baseline records shared between runs in one process (the demo runs several methods on
# the same data): key = hash of everything the baseline depends on.
_BASELINE_MEMO: dict[str, dict[str, Any]] = {}


@dataclass
class Result:
    """What ``transferkit.run`` returns: the run directory and its metrics."""

    run_dir: Path
    metrics: dict[str, Any]
    config: ExperimentConfig

    @property
    def transfer_gain(self) -> dict[str, Any] | None:
        return self.metrics.get("transfer_gain")

    @property
    def verdict(self) -> str | None:
        tg = self.transfer_gain
        return tg["verdict"] if tg else None


def load_splits(cfg: ExperimentConfig, seed: int) -> Splits:
    """The target splits for one seed, with the validation labels limited like the budget.

    With a label budget of k per class, the validation split keeps at most k per class too:
    a user with k labels per class does not have hundreds more to validate on.
    """
    d = cfg.data
    splits = load_dataset(
        d.target,
        seed=seed,
        label_budget=d.label_budget,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        max_examples=d.max_examples,
        **d.target_options,
    )
    splits.val = cap(splits.val, d.max_eval_examples, seed, per_class=d.label_budget)
    splits.test = cap(splits.test, d.max_eval_examples, seed)
    return splits


def _baseline_key(cfg: ExperimentConfig, kind: str, seed: int) -> str:
    parts = {
        "kind": kind,
        "seed": seed,
        "data": cfg.data.model_dump(mode="json"),
        "baselines": cfg.baselines.model_dump(mode="json"),
    }
    if kind in ("random_init", "source_only", "target_only", "teacher", "student_labels_only"):
        parts.update(
            model=cfg.model.model_dump(mode="json"), train=cfg.train.model_dump(mode="json")
        )
    if kind.startswith("single_"):
        parts.update(
            model=cfg.model.model_dump(mode="json"),
            train=cfg.train.model_dump(mode="json"),
            tasks=[t.model_dump(mode="json") for t in cfg.tasks or []],
            lr_mult=stages.backbone_lr_mult(cfg, 0.1),
        )
    if kind == "teacher":
        parts["teacher"] = cfg.teacher.model_dump(mode="json") if cfg.teacher else None
    if kind in ("source_only", "target_only", "student_labels_only"):
        parts["lr_mult"] = stages.backbone_lr_mult(cfg, 0.1)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _family(cfg: ExperimentConfig) -> str:
    return METHODS.get(cfg.method.name).family


def _stage_plan(
    cfg: ExperimentConfig, splits: Splits
) -> list[tuple[str, Callable[..., dict[str, Any]]]]:
    if _family(cfg) == "domain-adaptation":
        return _da_plan(cfg, splits)
    if _family(cfg) == "distillation":
        return _kd_plan(cfg)
    if _family(cfg) == "multi-task":
        assert cfg.tasks is not None
        plan = [("target", mtl_stages.run_multitask_stage)]
        if cfg.baselines.enabled:
            plan += [(f"single_{t.name}", mtl_stages.single_task_stage(t.name)) for t in cfg.tasks]
        return plan
    plan: list[tuple[str, Callable[..., dict[str, Any]]]] = [("target", stages.run_target_stage)]
    if cfg.baselines.enabled and cfg.baselines.random_init:
        plan.append(("random_init", stages.run_random_init_stage))
    if cfg.baselines.enabled and cfg.baselines.classical:
        plan.append(("classical", stages.run_classical_stage))
    return plan


def _da_plan(
    cfg: ExperimentConfig, splits: Splits
) -> list[tuple[str, Callable[..., dict[str, Any]]]]:
    b = cfg.baselines
    plan: list[tuple[str, Callable[..., dict[str, Any]]]] = [
        ("target", da_stages.run_adapted_stage)
    ]
    if b.enabled and b.source_only:
        plan.append(("source_only", da_stages.run_source_only_stage))
    if b.enabled and b.target_only and splits.train.labelled:
        plan.append(("target_only", da_stages.run_target_only_stage))
    return plan


def _kd_plan(cfg: ExperimentConfig) -> list[tuple[str, Callable[..., dict[str, Any]]]]:
    b = cfg.baselines
    plan: list[tuple[str, Callable[..., dict[str, Any]]]] = [
        ("teacher", kd_stages.run_teacher_stage),
        ("target", kd_stages.run_distill_stage),
    ]
    if b.enabled:
        plan.append(("student_labels_only", kd_stages.run_student_labels_stage))
    if b.enabled and b.classical:
        plan.append(("classical", stages.run_classical_stage))
    return plan


def _run_stage(
    ctx: stages.StageContext, kind: str, fn: Callable[..., dict[str, Any]], log: Callable
) -> dict[str, Any]:
    name = f"{kind}/seed{ctx.seed}"
    rec = accel.on_main(load_stage, ctx.run_dir, name)  # one decision for every process
    if rec is not None:
        log(f"{name}: already finished, reusing")
        return rec
    # the teacher is reloaded from this run's own checkpoints, so it is never shared
    memo = _baseline_key(ctx.cfg, kind, ctx.seed) if kind not in ("target", "teacher") else None
    if memo is not None and memo in _BASELINE_MEMO:
        rec = _BASELINE_MEMO[memo]
        log(f"{name}: same baseline as an earlier run in this process, reusing")
    else:
        log(f"{name}: training")
        rec = accel.broadcast(fn(ctx, stage_dirname(name)))
        if memo is not None:
            _BASELINE_MEMO[memo] = rec
    accel.on_main(_commit_stage, ctx.run_dir, name, rec, kind in ("target", "teacher"))
    return rec


def _commit_stage(run_dir: Path, name: str, rec: dict[str, Any], keep_weights: bool) -> None:
    """Save a finished stage's record and drop its resumable state (main process)."""
    save_stage(run_dir, name, rec)
    stages.finalize_stage_dir(run_dir, name, keep_weights=keep_weights)


def _mean_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    keys = records[0]["metrics"].keys()
    return {k: float(np.mean([r["metrics"][k] for r in records])) for k in keys}


def _forgetting(target: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Forgetting report: drift (first seed) and source-task accuracy (mean over seeds)."""
    found = [r["extra"]["forgetting"] for r in target if r["extra"].get("forgetting")]
    if not found:
        return None
    out = {k: v for k, v in found[0].items() if k == "representation_drift"}
    src = [f["source_task"] for f in found if "source_task" in f]
    if src:
        out["source_task"] = {
            **src[0],
            **{k: float(np.mean([s[k] for s in src])) for k in ("before", "after", "drop")},
            "per_seed_after": [s["after"] for s in src],
        }
    return out


_OWN_KEYS = frozenset({"forgetting", "oracle", "domain_gap", "deployment"})


def _label_free_summary(
    cfg: ExperimentConfig, target: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """Label-free checkpoint selection vs the oracle (DA runs), mean over seeds."""
    per = [r["extra"].get("oracle") or {} for r in target]
    if not all(p.get("oracle_test") is not None for p in per):
        return None
    sel = [float(r["metrics"]["accuracy"]) for r in target]
    orc = [float(p["oracle_test"]) for p in per]
    return {
        "criterion": cfg.adaptation.selector,
        "collapse_guard": cfg.adaptation.collapse_guard,
        "metric": "accuracy",
        "selected": float(np.mean(sel)),
        "oracle": float(np.mean(orc)),
        "gap": float(np.mean(orc) - np.mean(sel)),
        "per_seed": [
            {
                "seed": s,
                "selected": a,
                "oracle": o,
                "selected_epoch": p.get("selected_epoch"),
                "oracle_epoch": p.get("oracle_epoch"),
                "criterion": p.get("selected_criterion"),
                "diversity": p.get("selected_diversity"),
                "collapsed": p.get("selected_collapsed"),
            }
            for s, a, o, p in zip(cfg.seeds, sel, orc, per, strict=True)
        ],
        "epochs_first_seed": per[0].get("epochs", []),
        "note": "selected = checkpoint picked by the label-free criterion; oracle = best "
        "target-test accuracy over the evaluated epochs (reads test labels: an upper bound "
        "shown only to expose the cost of selecting without labels)",
    }


def assemble_metrics(
    cfg: ExperimentConfig, splits: Splits, recs: dict[str, list[dict[str, Any]]], total_s: float
) -> dict[str, Any]:
    """metrics.json (DESIGN.md contract) from the per-seed stage records."""
    task = splits.train.task
    pm = primary_metric(task)
    target = recs["target"]
    baselines = {}
    for kind, rs in recs.items():
        if kind == "target":
            continue
        name = rs[0]["extra"].get("name", kind)
        desc = rs[0]["extra"].get("description", BASELINE_INFO.get(kind, ""))
        baselines[name] = {
            **_mean_metrics(rs),
            "description": desc,
            "per_seed": [r["metrics"] for r in rs],
            "_kind": kind,
        }
    out: dict[str, Any] = {
        "method": cfg.method.name,
        "family": METHODS.get(cfg.method.name).family,
        "backbone": cfg.model.backbone,
        "dataset": {"name": str(cfg.data.target), **splits.info},
        "primary_metric": pm,
        "target": _mean_metrics(target),
        "target_per_seed": [
            {"seed": s, **r["metrics"]} for s, r in zip(cfg.seeds, target, strict=True)
        ],
        "baselines": {},
        "best_baseline": None,
        "transfer_gain": None,
        "forgetting": _forgetting(target),
        "details": None,
        "timing": {
            "total_s": total_s,
            "stages_s": {k: float(sum(r["seconds"] for r in rs)) for k, rs in recs.items()},
        },
        "seeds": list(cfg.seeds),
        "selection": [{k: v for k, v in r["extra"].items() if k not in _OWN_KEYS} for r in target],
    }
    lf = _label_free_summary(cfg, target)
    if lf:
        out["label_free_selection"] = lf
    for key in ("domain_gap", "deployment"):
        if target[0]["extra"].get(key):
            out[key] = target[0]["extra"][key]
    if task == "classification":
        out["details"] = classification_details(
            target[0]["outputs"], target[0]["y"], splits.train.classes or []
        )
    if baselines:
        sign = 1 if higher_is_better(pm) else -1
        comparator = [
            n for n in baselines if baselines[n]["_kind"] == COMPARATOR.get(out["family"])
        ]
        best = (
            comparator[0] if comparator else max(baselines, key=lambda n: sign * baselines[n][pm])
        )
        kind = baselines[best]["_kind"]
        runs = [
            {"y": t["y"], "transfer": t["outputs"], "baseline": b["outputs"]}
            for t, b in zip(target, recs[kind], strict=True)
        ]
        gain = transfer_gain(runs, pm, task, cfg.confidence, cfg.bootstrap_samples)
        out["best_baseline"] = best
        out["transfer_gain"] = {**gain, "baseline": best, "metric": pm}
    for b in baselines.values():
        b.pop("_kind")
    out["baselines"] = baselines
    return out


def run(
    config: str | Path | dict[str, Any] | ExperimentConfig,
    *,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    resume: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> Result:
    """Run an experiment end to end and write its run directory.

    Args:
        config: a YAML path, a mapping or an :class:`ExperimentConfig`.
        out: the run directory (default ``runs/<name>``).
        overrides: ``key.path=value`` strings applied before validation.
        overwrite: replace an existing run directory.
        resume: continue the run in ``out`` (finished trainings are reused, an interrupted
            one resumes from its last checkpoint).
    """
    t0 = time.perf_counter()
    say = (log if accel.is_main_process() else None) or (lambda _msg: None)
    cfg = load_config(config, overrides)
    run_dir = accel.on_main(
        open_run_dir, out or Path("runs") / cfg.name, dump_config(cfg), overwrite, resume
    )
    recs: dict[str, list[dict[str, Any]]] = {}
    splits = None
    for seed in cfg.seeds:
        tasks = load_task_splits(cfg, seed) if cfg.tasks else None
        splits = tasks[1][tasks[0][0].name] if tasks else load_splits(cfg, seed)
        source = load_source_splits(cfg, seed, splits) if cfg.data.source is not None else None
        ctx = stages.StageContext(cfg, splits, seed, run_dir, resume, quiet, source, tasks)
        for kind, fn in _stage_plan(cfg, splits):
            recs.setdefault(kind, []).append(_run_stage(ctx, kind, fn, say))
    assert splits is not None
    metrics = accel.on_main(_write_results, cfg, run_dir, splits, tasks, recs, t0)
    return Result(run_dir, metrics, cfg)


def _write_results(
    cfg: ExperimentConfig,
    run_dir: Path,
    splits: Splits,
    tasks: Any,
    recs: dict[str, list[dict[str, Any]]],
    t0: float,
) -> dict[str, Any]:
    """log.jsonl, metrics.json and report.html (main process); returns the metrics."""
    merge_logs(run_dir)
    if tasks:
        metrics = assemble_multitask(cfg, tasks[0], recs, time.perf_counter() - t0)
    else:
        metrics = assemble_metrics(cfg, splits, recs, time.perf_counter() - t0)
    atomic_write_json(run_dir / "metrics.json", metrics)
    if cfg.report:
        from transferkit.report import write_report

        write_report(run_dir)
    return metrics


def resume(run_dir: str | Path, **kw: Any) -> Result:
    """Continue an interrupted run from its directory (its config.yaml is reused)."""
    d = Path(run_dir)
    accel.on_main(prepare_run_dir, d, resume=True)
    return run(d / "config.yaml", out=d, resume=True, **kw)
