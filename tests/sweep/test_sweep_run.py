"""Whole sweeps through ``run_sweep``: pruning, domain adaptation, resuming a dead trial."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.sweep.conftest import tiny_config
from transferkit.errors import ConfigError
from transferkit.experiment import run
from transferkit.experiment.config import load_config
from transferkit.experiment.rundir import stage_path
from transferkit.sweep import run_sweep, trial_value
from transferkit.sweep.objective import objective_spec
from transferkit.sweep.space import load_space, suggest
from transferkit.sweep.study import open_storage

LR = {"train.lr": {"type": "float", "low": 1e-7, "high": 0.1, "log": True}}


def _log_rows(run_dir: Path, key: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("run") == "target-seed0" and key in r]


def test_a_hopeless_trial_is_pruned_on_its_validation_curve(
    tmp_path: Path, domains: tuple[Path, Path]
) -> None:
    cfg = tiny_config(domains[1], train={"epochs": 4})
    res = run_sweep(
        cfg,
        LR,
        trials=2,
        out=tmp_path,
        startup_trials=1,
        warmup_epochs=0,
        enqueue=[{"train.lr": 0.05}, {"train.lr": 1e-7}],
    )
    good, hopeless = res.trials
    assert good["state"] == "complete" and hopeless["state"] == "pruned"
    assert res.summary["counts"] == {"complete": 1, "pruned": 1}
    curve = hopeless["validation_curve"]
    step = max(curve, key=int)
    assert curve[step] < good["validation_curve"][step]  # behind the median at that epoch
    assert len(curve) < 4  # stopped before the last epoch
    run_dir = Path(hopeless["run_dir"])
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "metrics.json").exists()
    assert res.best is not None and res.best["number"] == good["number"]


def test_domain_adaptation_sweeps_on_the_label_free_selector(
    tmp_path: Path, domains: tuple[Path, Path]
) -> None:
    src, tgt = domains
    cfg = tiny_config(
        tgt,
        method={"name": "dann", "params": {"backbone_lr_mult": 1.0}},
        train={"epochs": 2},
        adaptation={"selector": "dev", "selection_examples": 40, "domain_gap": False},
    )
    cfg["data"]["source"] = str(src)
    res = run_sweep(cfg, LR, trials=1, out=tmp_path, enqueue=[{"train.lr": 0.01}])
    objective = res.summary["objective"]
    # DEV with the collapse guard: equal to DEV at every epoch that did not collapse
    assert objective["key"] == "val_selection" and objective["direction"] == "minimize"
    assert objective["label_free"] is True
    (trial,) = res.trials
    run_dir = Path(trial["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best_epoch = metrics["selection"][0]["best_epoch"]
    rows = {r["epoch"]: r for r in _log_rows(run_dir, "val_selection")}
    for r in rows.values():
        collapsed = r["val_target_diversity"] < 0.25
        assert (r["val_selection"] == r["val_dev_risk"]) is not collapsed
    assert trial["value"] == pytest.approx(rows[best_epoch]["val_selection"])
    assert trial["value"] == min(r["val_selection"] for r in rows.values())
    assert trial["validation_curve"] == {str(e): r["val_selection"] for e, r in rows.items()}
    oracle = {r["val_oracle_test_accuracy"] for r in rows.values()}
    assert trial["value"] not in oracle


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_whose_worker_died_is_retried_in_its_own_run_directory(
    tmp_path: Path, domains: tuple[Path, Path]
) -> None:
    cfg = tiny_config(domains[1])
    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "sweep"
    first = run_sweep(cfg, LR, trials=1, out=out, storage=url, heartbeat_s=1)
    assert [t["state"] for t in first.trials] == ["complete"]
    # a second worker claims trial 1, writes part of its run, records a heartbeat and dies
    study = optuna.load_study(study_name="tiny-sweep", storage=open_storage(url, 1))
    trial = study.ask()
    params = suggest(trial, load_space(LR))
    dead_dir = out / "trial-0001"
    sets = [f"train.lr={params['train.lr']!r}", "baselines.enabled=false"]
    run(cfg, out=dead_dir, overrides=sets, quiet=True)
    (dead_dir / "metrics.json").unlink()
    stage_path(dead_dir, "target/seed0").unlink()
    trial.set_user_attr("run_dir", str(dead_dir.resolve()))
    study._storage.record_heartbeat(trial._trial_id)  # what the dead worker's thread did
    time.sleep(3.2)  # > grace period (2 x heartbeat_s), with SQLite's whole-second clock
    again = run_sweep(cfg, LR, trials=2, out=out, storage=url, heartbeat_s=1)
    states = {t["number"]: t["state"] for t in again.trials}
    assert states == {0: "complete", 1: "fail", 2: "complete"}
    retry = again.trials[2]
    assert retry["retry_of"] == 1 and retry["params"] == params
    assert retry["run_dir"] == str(dead_dir.resolve())  # resumed, not restarted elsewhere
    assert not (out / "trial-0002").exists()
    assert retry["value"] == pytest.approx(trial_value(dead_dir, objective_spec(load_config(cfg))))
    assert (dead_dir / "metrics.json").is_file()


def test_run_sweep_rejects_bad_arguments(tmp_path: Path, domains: tuple[Path, Path]) -> None:
    cfg = tiny_config(domains[1])
    with pytest.raises(ConfigError, match="--trials must be >= 1"):
        run_sweep(cfg, LR, trials=0, out=tmp_path)
    with pytest.raises(ConfigError, match="cannot open the study storage") as info:
        run_sweep(cfg, LR, trials=1, out=tmp_path, storage="nosuchdb://user:secret@host/x")
    assert "secret" not in info.value.message and "user:***@host" in info.value.message
