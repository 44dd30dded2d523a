"""The trial reporter callback and its attachment to the main stage's trainer only."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from tests.engine.tiny import collate, make_blobs, make_method
from transferkit.engine import TrainConfig, Trainer
from transferkit.sweep.pruning import TrialReporter, reporting_to


class FakeTrial:
    """Records ``report`` calls; ``should_prune`` turns true from ``prune_from`` on."""

    def __init__(self, prune_from: int | None = None) -> None:
        self.reports: list[tuple[int, float]] = []
        self.prune_from = prune_from

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        last = self.reports[-1][0]
        return self.prune_from is not None and last >= self.prune_from


def _trainer(monitor: str = "val_accuracy") -> Any:
    return SimpleNamespace(config=SimpleNamespace(monitor=monitor))


def test_reporter_reports_the_monitor_each_epoch_and_skips_non_finite() -> None:
    trial = FakeTrial()
    rep = TrialReporter(trial)
    for epoch, value in [(1, 0.5), (2, math.nan), (3, 0.75)]:
        rep.on_epoch_end(_trainer(), {"epoch": epoch, "val_accuracy": value, "val_loss": 9.0})
    rep.on_epoch_end(_trainer(), {"epoch": 4, "train_loss": 0.1})  # no validation this epoch
    assert trial.reports == [(1, 0.5), (3, 0.75)]
    assert rep.values == {1: 0.5, 3: 0.75}
    assert rep.state_key == "SweepTrialReporter" and rep.state_dict() == {}


def test_reporter_uses_its_own_key_and_prunes_when_told() -> None:
    trial = FakeTrial(prune_from=2)
    rep = TrialReporter(trial, key="val_dev_risk")
    rep.on_epoch_end(_trainer(), {"epoch": 1, "val_dev_risk": 0.4, "val_accuracy": 0.9})
    with pytest.raises(optuna.TrialPruned, match=r"epoch 2: val_dev_risk = 0\.5"):
        rep.on_epoch_end(_trainer(), {"epoch": 2, "val_dev_risk": 0.5})
    assert trial.reports == [(1, 0.4), (2, 0.5)]
    calm = TrialReporter(FakeTrial(prune_from=1), prune=False)
    calm.on_epoch_end(_trainer(), {"epoch": 1, "val_accuracy": 0.1})  # never raises


def _make(run_dir: Path) -> Trainer:
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01, early_stopping=False)
    return Trainer(make_method(), make_blobs(16), collate, cfg, run_dir)


def test_reporter_joins_only_the_trainer_of_the_given_stage(tmp_path: Path) -> None:
    rep = TrialReporter(FakeTrial())
    original = Trainer.__init__
    stage = tmp_path / "run" / "checkpoints" / "target-seed0"
    with reporting_to(rep, stage):
        main = _make(stage)
        other = _make(tmp_path / "run" / "checkpoints" / "random_init-seed0")
    assert rep in main.user_callbacks and rep not in other.user_callbacks
    assert Trainer.__init__ is original
    assert rep not in _make(stage).user_callbacks  # detached after the block
    with pytest.raises(RuntimeError), reporting_to(rep, stage):
        raise RuntimeError
    assert Trainer.__init__ is original  # restored after an error too


def test_a_pruned_epoch_stops_a_real_training(tmp_path: Path) -> None:
    trial = FakeTrial(prune_from=1)
    rep = TrialReporter(trial)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.01, early_stopping=False, monitor="val_accuracy")
    trainer = Trainer(
        make_method(),
        make_blobs(16),
        collate,
        cfg,
        tmp_path,
        val_fn=lambda m: {"val_accuracy": 0.5},
        callbacks=[rep],
        quiet=True,
    )
    with pytest.raises(optuna.TrialPruned):
        trainer.fit()
    assert trial.reports == [(1, 0.5)] and trainer.epoch == 0
