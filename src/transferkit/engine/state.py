"""What a checkpoint holds besides the weights, and how a trainer gets it back.

:func:`trainer_state` gathers the state of a running :class:`~transferkit.engine.Trainer`
into plain containers and tensors (loadable with ``torch.load(weights_only=True)``);
:func:`restore_trainer` puts a checkpoint back into a freshly set-up trainer after checking
that it was written with the same settings and data. :class:`TrainResult` is what ``fit``
returns; a finished run stores it, so resuming a finished run just returns it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from transferkit.engine.checkpoint import CheckpointStore, capture_rng_state
from transferkit.engine.config import RESUME_MUTABLE
from transferkit.errors import CheckpointError

if TYPE_CHECKING:
    from transferkit.engine.trainer import Trainer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    ``history`` holds one record per epoch (see ``engine.loggers``); ``best_metric`` /
    ``best_epoch`` (1-based) come from early stopping (None without it);
    ``stopped_reason`` is ``"completed"``, ``"max_steps"``, ``"early_stopping"`` or the
    reason a callback gave to ``trainer.request_stop``; ``final_metrics`` are the ``val_*``
    values of the last evaluated epoch.
    """

    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int | None
    global_step: int
    epochs_completed: int
    stopped_reason: str
    final_metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainResult:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def weights_finite(module: nn.Module) -> bool:
    """True when every floating-point parameter and buffer is finite (one host sync)."""
    ts = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return not ts or bool(torch.stack([torch.isfinite(t).all() for t in ts]).all())


def data_signature(trainer: Trainer) -> dict[str, int]:
    """Sizes that must not change between a run and its resume."""
    return {
        "num_items": len(trainer.train_dataset),  # type: ignore[arg-type]
        "batches_per_epoch": trainer.batches_per_epoch,
        "num_processes": int(trainer.accelerator.num_processes),
    }


def trainer_state(trainer: Trainer, result: TrainResult | None) -> dict[str, Any]:
    """Everything but the weights, at an optimizer-step boundary (see ``engine.trainer``)."""
    scaler = trainer.accelerator.scaler
    return {
        "epoch": trainer.epoch,
        "step_in_epoch": trainer.step_in_epoch,
        "global_step": trainer.global_step,
        "stop_reason": trainer.stop_reason,
        "finished": result is not None,
        "result": result.to_dict() if result is not None else None,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng_state(),
        "callbacks": trainer.callbacks.state_dict(),
        "history": trainer.history,
        "tracker": trainer.tracker.state_dict(),
        "config": trainer.config.to_dict(),
        "data": data_signature(trainer),
    }


def check_compatible(trainer: Trainer, state: Mapping[str, Any], path: Path) -> None:
    """CheckpointError listing every setting or data size that differs from the checkpoint."""
    saved, now = state["config"], trainer.config.to_dict()
    diff = [
        f"{k}={saved.get(k)!r} (now {v!r})"
        for k, v in now.items()
        if k not in RESUME_MUTABLE and saved.get(k) != v
    ]
    diff += [
        f"{k}={state['data'].get(k)} (now {v})"
        for k, v in data_signature(trainer).items()
        if state["data"].get(k) != v
    ]
    if diff:
        raise CheckpointError(
            "the checkpoint was written with other settings or data: " + "; ".join(diff),
            where=str(path),
            fix="resume with the original settings and data, or start again without resume",
        )


def restore_trainer(
    trainer: Trainer, store: CheckpointStore, path: Path
) -> tuple[dict[str, Any], TrainResult | None]:
    """Load checkpoint ``path`` into ``trainer``; return ``(rng_states, finished_result)``.

    The RNG states are returned, not applied: the trainer applies them right before the
    next batch, after every other start-up step that might draw random numbers.
    """
    weights, state = store.load(path)
    check_compatible(trainer, state, path)
    try:
        trainer.method.load_state_dict(weights)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"the checkpoint does not fit this method ({exc})",
            where=str(path),
            fix="resume with the same method, backbone and parameters that wrote the checkpoint",
        ) from exc
    if state.get("scaler") is not None and trainer.accelerator.scaler is not None:
        trainer.accelerator.scaler.load_state_dict(state["scaler"])
    trainer.epoch, trainer.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
    trainer.global_step, trainer.stop_reason = int(state["global_step"]), state["stop_reason"]
    trainer.history = list(state["history"])
    trainer.tracker.load_state_dict(state["tracker"])
    unclaimed = trainer.callbacks.load_state_dict(state["callbacks"])
    if unclaimed:
        log.warning("checkpoint has state for callbacks not present now: %s", unclaimed)
    log.info("resumed from %s (epoch %d, step %d)", path, trainer.epoch + 1, trainer.global_step)
    finished = TrainResult.from_dict(state["result"]) if state["finished"] else None
    return state["rng"], finished
