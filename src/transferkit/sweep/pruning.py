"""Pruning: the main stage's validation curve goes to the Optuna trial, epoch by epoch.

:class:`TrialReporter` is an ordinary trainer :class:`~transferkit.engine.Callback`: at every
epoch end it reports the monitored validation value (the trainer's ``config.monitor``: the
primary metric, or the label-free selector of a domain-adaptation run) to the trial as
``trial.report(value, step=epoch)`` and raises :class:`optuna.TrialPruned` when the
pruner (median rule) says the trial is behind.

The experiment runner builds its trainers itself, so :func:`reporting_to` attaches the
reporter to the one trainer that trains the main stage of the first seed
(``DIR/checkpoints/target-seed<S>``) by wrapping ``Trainer.__init__`` for the duration of a
trial. Trials run one at a time in a process; the wrapper is removed on exit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from transferkit.engine import Callback, Trainer


class TrialReporter(Callback):
    """Report ``record[key]`` at each epoch end to ``trial``; prune when told to.

    Args:
        trial: the Optuna trial.
        key: the validation key to report (default: the trainer's ``config.monitor``).
        prune: raise :class:`optuna.TrialPruned` when ``trial.should_prune()``.

    ``values`` keeps the reported ``{epoch: value}``. Non-finite values are not reported.
    """

    def __init__(self, trial: Any, key: str | None = None, prune: bool = True) -> None:
        self.trial, self.key, self.prune = trial, key, prune
        self.values: dict[int, float] = {}

    @property
    def state_key(self) -> str:
        return "SweepTrialReporter"

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        key = self.key or trainer.config.monitor
        raw = record.get(key)
        if raw is None or not math.isfinite(float(raw)):
            return
        epoch, value = int(record["epoch"]), float(raw)
        self.values[epoch] = value
        self.trial.report(value, step=epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {key} = {value:.6g}")


@contextlib.contextmanager
def reporting_to(reporter: Callback, stage_dir: str | Path) -> Iterator[None]:
    """Add ``reporter`` to every Trainer built for ``stage_dir`` inside the block."""
    target = Path(stage_dir).resolve()
    original = Trainer.__init__

    def init(self: Trainer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if Path(self.run_dir).resolve() == target:
            self.user_callbacks.append(reporter)

    Trainer.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        Trainer.__init__ = original  # type: ignore[method-assign]
