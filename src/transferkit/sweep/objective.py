"""The objective of a sweep: one trial = one normal run directory, scored on validation.

A trial draws one value per search-space key, turns them into ``--set`` overrides and runs
the experiment with the normal runner into ``OUT/trial-NNNN`` (so every trial can be
inspected, reported and resumed like any run). Its value is the **validation** metric of
the main stage at the checkpoint the run keeps, averaged over the config's seeds:

* supervised, fine-tuning, distillation, multi-task: the early-stopping monitor (default
  ``val_<primary metric>``, multi-task ``val_mean_task_score``) at the restored best epoch,
  or at the last epoch without ``restore_best``; closed-form heads (linear probe): the
  validation score of the selected regularisation strength;
* domain adaptation: the label-free selector (``adaptation.selector``: DEV risk, SND,
  entropy or source accuracy; :mod:`transferkit.experiment.label_free`). Target labels
  are never read: the ``val_oracle_*`` values in the log are ignored.

Test metrics never enter the objective. The values are read back from the run directory
(``metrics.json`` and ``log.jsonl``), so a trial resumed from an interrupted run scores
exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna

from transferkit.diagnostics.metrics import higher_is_better
from transferkit.errors import ConfigError, TrainingError
from transferkit.experiment import resume as resume_run
from transferkit.experiment import run as run_experiment
from transferkit.experiment.config import ExperimentConfig, load_config
from transferkit.experiment.label_free import selection_key
from transferkit.experiment.rundir import stage_dirname
from transferkit.methods import METHODS
from transferkit.sweep.pruning import TrialReporter, reporting_to
from transferkit.sweep.space import SearchSpace, private_copy, suggest, to_overrides

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class ObjectiveSpec:
    """What a trial is scored on.

    ``key`` is the validation key (None: ``val_<primary metric>``, known once the data is
    loaded); ``direction`` the study's; ``label_free`` whether it reads no target labels.
    """

    key: str | None
    direction: Direction
    family: str
    label_free: bool = False

    def describe(self) -> str:
        what = self.key or "val_<primary metric>"
        kind = " (label-free)" if self.label_free else ""
        return f"{self.direction} {what}{kind} of the main stage"


def objective_spec(cfg: ExperimentConfig) -> ObjectiveSpec:
    """The objective of a config's runs (see the module docstring)."""
    cls = METHODS.get(cfg.method.name)
    family = cls.family
    if family == "domain-adaptation":
        if cls.closed_form:
            raise ConfigError(
                f"{cfg.method.name!r} is fitted in closed form: it has no label-free "
                "validation curve for a sweep to optimise",
                where="method.name",
                fix="sweep a gradient-trained adaptation method (dann, cdan, mdd, ...)",
            )
        key, mode = selection_key(cfg.adaptation.selector, cfg.adaptation.collapse_guard)
        return ObjectiveSpec(key, _direction(mode), family, label_free=True)
    if family == "multi-task":
        return ObjectiveSpec("val_mean_task_score", "maximize", family)
    es = cfg.train.early_stopping
    if cls.closed_form or es.monitor == "auto":  # the primary metric: accuracy or r2
        return ObjectiveSpec(None, "maximize", family)
    if es.mode == "auto":
        return ObjectiveSpec(es.monitor, _direction(_auto_mode(es.monitor)), family)
    return ObjectiveSpec(es.monitor, _direction(es.mode), family)


def _auto_mode(monitor: str) -> str:
    return "max" if higher_is_better(monitor.removeprefix("val_")) else "min"


def _direction(mode: str) -> Direction:
    return "maximize" if mode == "max" else "minimize"


def _epoch_records(run_dir: Path, run_name: str, key: str) -> list[dict[str, Any]]:
    records = []
    log = run_dir / "log.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("run") == run_name and rec.get("type") == "epoch" and key in rec:
            records.append(rec)
    return records


def _seed_value(run_dir: Path, seed: int, selection: dict[str, Any], key: str, best: bool) -> float:
    if "val_scores" in selection:  # closed-form head: the selected strength's val score
        return float(max(selection["val_scores"].values()))
    run_name = stage_dirname(f"target/seed{seed}")
    records = _epoch_records(run_dir, run_name, key)
    if not records:
        raise TrainingError(
            f"the main stage logged no {key!r} value",
            where=f"{run_dir / 'log.jsonl'} (run {run_name})",
            fix="check train.early_stopping.monitor names a validation metric",
        )
    chosen = records[-1]
    epoch = selection.get("best_epoch")
    if best and epoch is not None:
        chosen = next((r for r in records if r["epoch"] == epoch), chosen)
    value = chosen[key]
    return math.nan if value is None else float(value)


def trial_value(run_dir: str | Path, spec: ObjectiveSpec) -> float:
    """The objective value of a finished run directory (mean over its seeds)."""
    d = Path(run_dir)
    metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
    cfg = load_config(d / "config.yaml")
    key = spec.key or f"val_{metrics['primary_metric']}"
    es = cfg.train.early_stopping
    best = es.enabled and es.restore_best
    values = [
        _seed_value(d, seed, sel, key, best)
        for seed, sel in zip(metrics["seeds"], metrics["selection"], strict=True)
    ]
    return float(np.mean(values))


@dataclass
class TrialObjective:
    """``objective(trial) -> value`` for ``study.optimize``: one run directory per trial."""

    config: str | Path | dict[str, Any] | ExperimentConfig
    space: SearchSpace
    spec: ObjectiveSpec
    out: Path
    overrides: Sequence[str] = ()
    first_seed: int = 0
    prune: bool = True
    quiet: bool = True
    log: Callable[[str], None] | None = None  # the runner's per-stage messages

    def run_dir_for(self, trial: optuna.Trial) -> tuple[Path, bool]:
        """The trial's run directory, and whether it resumes an interrupted trial's run.

        A retry of a trial whose worker died inherits that trial's user attributes
        (:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`), its ``run_dir``
        included: the retry resumes that run directory instead of starting over.
        """
        previous = trial.user_attrs.get("run_dir")
        if previous and (Path(previous) / "config.yaml").is_file():
            return Path(previous), True
        return self.out / f"trial-{trial.number:04d}", False

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        sets = [*self.overrides, *to_overrides(params)]
        run_dir, resuming = self.run_dir_for(trial)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("overrides", to_overrides(params))
        reporter = TrialReporter(trial, self.spec.key, prune=self.prune)
        stage = run_dir / "checkpoints" / stage_dirname(f"target/seed{self.first_seed}")
        with reporting_to(reporter, stage):
            if resuming:
                resume_run(run_dir, quiet=self.quiet, log=self.log)
            else:
                run_experiment(
                    private_copy(self.config),
                    out=run_dir,
                    overrides=sets,
                    quiet=self.quiet,
                    log=self.log,
                )
        value = trial_value(run_dir, self.spec)
        if not math.isfinite(value):
            raise TrainingError(
                f"trial {trial.number} ended with a non-finite objective ({value})",
                where=str(run_dir),
                fix="narrow the search space (e.g. lower the largest learning rate)",
            )
        return value
