"""Trainer callbacks: the hook protocol and early stopping.

Every hook receives the :class:`~transferkit.engine.Trainer`, through which a callback
reaches ``trainer.method``, ``trainer.optimizer``, ``trainer.scheduler``, ``trainer.epoch``
(0-based), ``trainer.step_in_epoch``, ``trainer.global_step`` (optimizer steps done),
``trainer.config`` and ``trainer.request_stop(reason)``. Hooks, in order:

* ``on_train_start`` once per ``fit`` (after a resume has restored all state), and again
  after a rollback to the last good checkpoint (``TrainConfig.on_nonfinite="rollback"``),
  which first calls ``on_teardown`` and restores every callback's state like a resume;
* ``on_epoch_start`` when an epoch begins *or resumes* (``trainer.step_in_epoch > 0``
  then): write it as an idempotent function of ``trainer.epoch`` that draws no random
  numbers from the global RNGs (exact resume depends on it);
* ``on_before_optimizer_step`` after backward and clipping of an accumulation window;
* ``on_step_end`` after each optimizer + scheduler step;
* ``on_log(record)`` every ``log_every_steps`` steps; ``on_epoch_end(record)`` after
  validation, with the epoch record (``val_*`` metrics included);
* ``on_checkpoint(path)`` after a checkpoint is committed; ``on_train_end`` on success;
  ``on_teardown`` always (also after an error).

``state_dict()`` is saved in every checkpoint and given back to ``load_state_dict`` on
resume; it may contain only tensors, numbers, strings, bools, None and lists/tuples/dicts
of these (it is loaded with ``torch.load(weights_only=True)``). Under a multi-process
launch every process runs every hook; a callback that calls ``request_stop`` must decide
the same way on all of them (e.g. from the broadcast validation metrics of ``on_epoch_end``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from transferkit.engine.checkpoint import load_weights, save_weights
from transferkit.errors import CheckpointError, ConfigError, TrainingError
from transferkit.utils.io import atomic_path

if TYPE_CHECKING:
    from transferkit.engine.trainer import Trainer

HOOKS = (
    "on_train_start",
    "on_epoch_start",
    "on_before_optimizer_step",
    "on_step_end",
    "on_log",
    "on_epoch_end",
    "on_checkpoint",
    "on_train_end",
    "on_teardown",
)


class Callback:
    """Base class: every hook is a no-op; override the ones you need."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint (default: the class name)."""
        return type(self).__name__

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer) -> None: ...

    def on_before_optimizer_step(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, path: Any) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...

    def on_teardown(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class CallbackList:
    """Dispatches hooks to the callbacks that override them, in registration order."""

    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise ConfigError(
                    f"{type(cb).__name__} is not a Callback",
                    where="Trainer(callbacks=...)",
                    fix="subclass transferkit.engine.Callback",
                )
        self._hooks = {
            h: [
                getattr(cb, h)
                for cb in self.callbacks
                if getattr(type(cb), h) is not getattr(Callback, h)
            ]
            for h in HOOKS
        }

    def call(self, hook: str, trainer: Trainer, *args: Any) -> None:
        for fn in self._hooks[hook]:
            fn(trainer, *args)

    def _keys(self) -> list[str]:
        keys: list[str] = []
        for cb in self.callbacks:
            key = cb.state_key
            n = sum(1 for k in keys if k == key or k.startswith(key + "#"))
            keys.append(key if n == 0 else f"{key}#{n}")
        return keys

    def state_dict(self) -> dict[str, Any]:
        return {k: cb.state_dict() for k, cb in zip(self._keys(), self.callbacks, strict=True)}

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Restore each callback's state; returns the checkpoint keys nobody claimed."""
        keys = self._keys()
        for key, cb in zip(keys, self.callbacks, strict=True):
            if key in state:
                cb.load_state_dict(state[key])
        return sorted(set(state) - set(keys))


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` evaluations.

    Improvement means ``value > best + min_delta`` (mode ``max``) or
    ``value < best - min_delta`` (mode ``min``); a non-finite value never improves. The
    best weights are kept in memory (CPU copies, taken only on improvement) and, when the
    trainer saves checkpoints, in ``checkpoints/best-EEEE.safetensors`` so that a resumed
    run restores them too. With ``restore_best`` they are loaded back at the end.
    """

    def __init__(
        self,
        monitor: str,
        mode: str = "max",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_file: str | None = None
        self.best_sha256: str | None = None
        self._best_weights: dict[str, torch.Tensor] | None = None

    def improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_train_start(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_file and self._best_weights is None:
            path = trainer.checkpoint_dir / self.best_file
            self._best_weights = load_weights(path, self.best_sha256)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.monitor not in record:
            metrics = sorted(k for k in record if k.startswith("val_"))
            if metrics:
                raise ConfigError(
                    f"early stopping monitors {self.monitor!r}, which the validation "
                    "function does not return",
                    where="TrainConfig.monitor",
                    fix=f"monitor one of {', '.join(metrics)}",
                )
            return
        value = float(record[self.monitor])
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, int(record["epoch"]), 0
            self._snapshot(trainer)
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.request_stop("early_stopping")

    def _snapshot(self, trainer: Trainer) -> None:
        if not self.restore_best:
            return
        sd = trainer.method.state_dict()
        self._best_weights = {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}
        if trainer.saves_checkpoints and trainer.is_main_process:
            name = f"best-{self.best_epoch:04d}.safetensors"
            try:
                with atomic_path(trainer.checkpoint_dir / name) as tmp:
                    self.best_sha256 = save_weights(tmp, self._best_weights)
            except OSError as exc:
                raise CheckpointError(
                    f"could not write the best weights {name}: {exc.strerror or exc}; the "
                    "last checkpoint is intact",
                    where=str(trainer.checkpoint_dir),
                    fix="free disk space or make the run directory writable (or use another "
                    "--out), then resume",
                ) from exc
            self.best_file = name

    def on_checkpoint(self, trainer: Trainer, path: Any) -> None:
        """Older best files are obsolete once a checkpoint referencing the new one exists."""
        if not trainer.is_main_process:
            return
        for p in trainer.checkpoint_dir.glob("best-*.safetensors"):
            if p.name != self.best_file and re.fullmatch(r"best-\d+\.safetensors", p.name):
                p.unlink(missing_ok=True)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best and self._best_weights is not None:
            try:
                trainer.method.load_state_dict(self._best_weights)
            except RuntimeError as exc:
                raise TrainingError(
                    "the best weights do not fit the method any more",
                    where="EarlyStopping.restore_best",
                    fix="do not change the model's structure while training",
                ) from exc

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_file": self.best_file,
            "best_sha256": self.best_sha256,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.best_file = state["wait"], state["best_file"]
        self.best_sha256 = state["best_sha256"]
        self._best_weights = None
