"""Run a hyper-parameter sweep: an Optuna study whose trials are normal run directories.

``run_sweep(config, space, trials=N, out=OUT)`` validates the search space against the
config, opens (or creates) the study in an RDB storage (default ``sqlite:///OUT/study.db``;
any SQLAlchemy URL such as ``postgresql://...`` lets several machines share one study),
and runs trials until the study holds ``N`` finished (complete or pruned) trials:

* re-running the same command after an interruption resumes the sweep: finished trials
  are never redone, and a trial whose process died is detected by its missing heartbeat
  and retried once with the same parameters, resuming its run directory;
* several processes or machines running the same command against one storage split the
  work (each trial is claimed in the storage; the total may overshoot ``N`` by the number
  of trials in flight).

Sampler: TPE (seeded); pruner: Optuna's :class:`~optuna.pruners.MedianPruner` on the main
stage's per-epoch validation curve (:mod:`transferkit.sweep.pruning`). Trials that diverge
(:class:`~transferkit.errors.TrainingError`) are recorded as failed and the sweep goes on;
any other error stops it. ``OUT/sweep.json`` (best parameters and value, every trial with
its state, value, parameters, run directory and validation curve) is rewritten atomically
after every trial.
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from transferkit.errors import ConfigError, TrainingError
from transferkit.experiment.config import ExperimentConfig, load_config
from transferkit.sweep.objective import ObjectiveSpec, TrialObjective, objective_spec
from transferkit.sweep.space import (
    SearchSpace,
    check_space,
    load_space,
    private_copy,
    to_overrides,
)
from transferkit.utils.io import atomic_write_json

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SUMMARY = "sweep.json"


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the summary written to ``OUT/sweep.json``."""

    out: Path
    summary: dict[str, Any]

    @property
    def best(self) -> dict[str, Any] | None:
        return self.summary["best"]

    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.summary["trials"]


def redact(url: str) -> str:
    """A storage URL without its password (``user:***@host``)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str, heartbeat_s: int = 60) -> RDBStorage:
    """An RDB storage with heartbeats: a dead worker's trial is failed and retried once."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=2 * heartbeat_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except Exception as exc:  # SQLAlchemy raises many kinds (bad URL, driver, permissions)
        raise ConfigError(
            f"cannot open the study storage: {type(exc).__name__}: {exc}",
            where=f"--storage {redact(url)}",
            fix="pass an SQLAlchemy URL such as sqlite:///sweep.db (a writable path) or "
            "postgresql://user:pass@host/db",
        ) from None


def _check_attrs(study: optuna.Study, expected: dict[str, Any]) -> None:
    """A study is only reused for the same objective and search space."""
    for name, value in expected.items():
        found = study.user_attrs.get(name)
        if found is None:
            study.set_user_attr(name, value)
        elif found != value:
            raise ConfigError(
                f"study {study.study_name!r} was created with another {name}: {found!r}, "
                f"this sweep has {value!r}",
                where="--study-name / --storage",
                fix="use a new --study-name (or storage) for a different sweep",
            )


def open_study(
    storage: RDBStorage,
    name: str,
    spec: ObjectiveSpec,
    space: SearchSpace,
    *,
    seed: int = 0,
    prune: bool = True,
    startup_trials: int = 3,
    warmup_epochs: int = 1,
) -> optuna.Study:
    """Create the study, or load it when it exists with the same objective and space."""
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
        if prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=spec.direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
        load_if_exists=True,
    )
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(
            f"study {name!r} exists and {study.direction.name.lower()}s; this sweep "
            f"{spec.direction}s {spec.key or 'the primary metric'}",
            where="--study-name / --storage",
            fix="use a new --study-name for a different objective",
        )
    _check_attrs(study, {"space": space.fingerprint(), "objective": spec.describe()})
    return study


def _trial_row(t: FrozenTrial) -> dict[str, Any]:
    start, end = t.datetime_start, t.datetime_complete
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "value": t.value,
        "params": dict(t.params),
        "overrides": t.user_attrs.get("overrides", to_overrides(t.params)),
        "run_dir": t.user_attrs.get("run_dir"),
        "validation_curve": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "retry_of": t.system_attrs.get("failed_trial"),  # set by the heartbeat retry
        "started": start.isoformat() if start else None,
        "finished": end.isoformat() if end else None,
        "seconds": (end - start).total_seconds() if start and end else None,
    }


def summarize(
    study: optuna.Study, spec: ObjectiveSpec, space: SearchSpace, target: int, storage: str
) -> dict[str, Any]:
    """The ``sweep.json`` document."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        b = study.best_trial
        best = {
            "number": b.number,
            "value": b.value,
            "params": dict(b.params),
            "overrides": to_overrides(b.params),
            "run_dir": b.user_attrs.get("run_dir"),
        }
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return {
        "study_name": study.study_name,
        "storage": redact(storage),
        "objective": {
            "key": spec.key,
            "direction": spec.direction,
            "family": spec.family,
            "label_free": spec.label_free,
            "description": spec.describe(),
        },
        "space": space.fingerprint(),
        "target_trials": target,
        "counts": counts,
        "best": best,
        "trials": [_trial_row(t) for t in trials],
    }


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_sweep(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    space: str | Path | Mapping[str, Any] | SearchSpace,
    *,
    trials: int,
    out: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    overrides: Sequence[str] = (),
    seed: int = 0,
    prune: bool = True,
    startup_trials: int = 3,
    warmup_epochs: int = 1,
    timeout_s: float | None = None,
    heartbeat_s: int = 60,
    baselines: bool = False,
    enqueue: Sequence[Mapping[str, Any]] = (),
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run trials until the study holds ``trials`` finished ones; write ``OUT/sweep.json``.

    Args:
        config: the experiment (YAML path, mapping or config); ``overrides`` apply to it.
        space: the search space (YAML path, mapping or :class:`SearchSpace`).
        trials: the number of finished (complete + pruned) trials the study should hold.
        out: the sweep directory: ``trial-NNNN/`` run directories and ``sweep.json``.
        storage: an SQLAlchemy URL (default ``sqlite:///OUT/study.db``).
        study_name: default ``<config name>-sweep``.
        seed: the TPE sampler's seed. prune: median pruning after ``startup_trials``
            trials, from epoch ``warmup_epochs + 1`` on. timeout_s: start no new trial
            after this long. heartbeat_s: a trial silent for twice this is presumed dead.
        baselines: also train the baselines in every trial (off: ``baselines.enabled=false``
            is added to each trial's overrides; the objective never needs them, so rerun
            the best parameters with baselines for an honest verdict).
        enqueue: parameter sets to try first (e.g. the config's own values), each once.
        quiet: no progress bars inside trials; log: one line per finished trial.
    """
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}", where="--trials")
    space_obj = load_space(space)
    fixed = [*overrides, *([] if baselines else ["baselines.enabled=false"])]
    cfg = load_config(private_copy(config), fixed)
    where = str(space) if isinstance(space, str | Path) else "search space"
    check_space(space_obj, config, fixed, where)
    spec = objective_spec(cfg)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    objective = TrialObjective(config, space_obj, spec, out_dir, fixed, cfg.seeds[0], prune, quiet)
    with _quiet_optuna():
        study = open_study(
            open_storage(url, heartbeat_s),
            study_name or f"{cfg.name}-sweep",
            spec,
            space_obj,
            seed=seed,
            prune=prune,
            startup_trials=startup_trials,
            warmup_epochs=warmup_epochs,
        )
        for params in enqueue:
            study.enqueue_trial(dict(params), skip_if_exists=True)
        writer = _SummaryWriter(out_dir / SUMMARY, spec, space_obj, trials, url, fixed, log)
        _optimize(study, objective, trials, timeout_s, writer)
        return SweepResult(out_dir, writer(study))


@dataclass
class _SummaryWriter:
    """Rewrites ``sweep.json`` (and logs a line) after every trial; returns the summary."""

    path: Path
    spec: ObjectiveSpec
    space: SearchSpace
    target: int
    url: str
    fixed: list[str]
    log: Callable[[str], None] | None = None

    def say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None = None) -> dict[str, Any]:
        doc = summarize(study, self.spec, self.space, self.target, self.url)
        doc["fixed_overrides"] = self.fixed
        atomic_write_json(self.path, doc)
        if trial is not None:
            value = "" if trial.value is None else f": {trial.value:.6g}"
            params = ", ".join(to_overrides(trial.params))
            self.say(f"trial {trial.number} {trial.state.name.lower()}{value} ({params})")
        return doc


def _optimize(
    study: optuna.Study,
    objective: TrialObjective,
    target: int,
    timeout_s: float | None,
    write: _SummaryWriter,
) -> None:
    """One trial at a time until ``target`` finished trials, a timeout or too many failures."""
    t0, states, say = time.monotonic(), [], write.say

    def record(study: optuna.Study, trial: FrozenTrial) -> None:
        states.append(trial.state)
        write(study, trial)

    done = _finished(study)
    if done >= target:
        say(f"study {study.study_name!r} already holds {done} finished trials: nothing to do")
    while _finished(study) < target:
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            say(f"timeout: stopping with {_finished(study)} of {target} finished trials")
            return
        study.optimize(objective, n_trials=1, catch=(TrainingError,), callbacks=[record])
        failures = states.count(TrialState.FAIL)
        if failures >= max(3, target):
            say(f"{failures} trials failed in this sweep: stopping")
            return
