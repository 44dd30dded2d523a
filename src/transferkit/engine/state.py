"""What a checkpoint holds besides the weights, and how a trainer gets it back.

:func:`trainer_state` gathers the state of a running :class:`~transferkit.engine.Trainer`
into plain containers and tensors (loadable with ``torch.load(weights_only=True)``);
:func:`restore_trainer` puts a checkpoint back into a freshly set-up trainer after checking
that it was written by the same method (class, hyper-parameters, parameter names and
shapes), with the same settings and on the same data (sizes and a content fingerprint of
sampled examples). Nothing is written before these checks pass, so a refused resume
leaves the run directory untouched. :class:`TrainResult` is what ``fit`` returns; a
finished run stores it, so resuming a finished run just returns it.

:func:`roll_back` is the same restore inside a running trainer after a non-finite loss
(``TrainConfig.on_nonfinite="rollback"``); :class:`FaultLog` keeps what it needs (the
batches and gradient norms of unverified steps) and what it leaves (skipped batches, the
learning-rate scale, one record per rollback) in every later checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from transferkit.engine.checkpoint import (
    CheckpointStore,
    capture_rng_state,
    method_signature,
)
from transferkit.engine.config import RESUME_MUTABLE
from transferkit.errors import CheckpointError, TrainingError

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
    rollbacks: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainResult:
        fields = [f for f in dataclasses.fields(cls) if f.name in d or f.name != "rollbacks"]
        return cls(**{f.name: d[f.name] for f in fields})


def weights_finite(module: nn.Module) -> bool:
    """True when every floating-point parameter and buffer is finite (one host sync)."""
    ts = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return not ts or bool(torch.stack([torch.isfinite(t).all() for t in ts]).all())


def data_signature(trainer: Trainer) -> dict[str, Any]:
    """Sizes and a content fingerprint that must not change between a run and its resume."""
    return {
        "num_items": len(trainer.train_dataset),  # type: ignore[arg-type]
        "batches_per_epoch": trainer.batches_per_epoch,
        "fingerprint": trainer.data_fingerprint,
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
        "method": method_signature(trainer.method),
        "faults": trainer.faults.state_dict(),
    }


def _differences(trainer: Trainer, state: Mapping[str, Any]) -> list[str]:
    saved, now = state["config"], trainer.config.to_dict()
    diff = [
        f"{k}={saved.get(k)!r} (now {v!r})"
        for k, v in now.items()
        if k not in RESUME_MUTABLE and saved.get(k) != v
    ]
    for k, v in data_signature(trainer).items():
        old = state["data"].get(k)
        if k in state["data"] and old != v:
            diff.append(
                "the training data's content (fingerprint of sampled examples differs)"
                if k == "fingerprint"
                else f"{k}={old} (now {v})"
            )
    sig, old_sig = method_signature(trainer.method), state.get("method")
    if old_sig is not None and old_sig["class"] != sig["class"]:
        diff.append(f"method {old_sig['class']} (now {sig['class']})")
    elif old_sig is not None and old_sig["params"] != sig["params"]:
        a, b = old_sig["params"] or {}, sig["params"] or {}
        diff += [
            f"method parameter {k}={a.get(k)!r} (now {b.get(k)!r})"
            for k in sorted(set(a) | set(b), key=str)
            if a.get(k) != b.get(k)
        ]
    return diff


def check_compatible(trainer: Trainer, state: Mapping[str, Any], path: Path) -> None:
    """CheckpointError listing every setting, data or method property that differs."""
    diff = _differences(trainer, state)
    if diff:
        raise CheckpointError(
            "the checkpoint was written with other settings, data or method: " + "; ".join(diff),
            where=str(path),
            fix="resume with the original settings, data and method, or start again without "
            "resume (the checkpoints will be replaced)",
        )


def check_weights_fit(method: nn.Module, weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """CheckpointError naming the parameters whose names or shapes differ (architecture)."""
    own = method.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    shapes = [
        f"{k} {list(weights[k].shape)} in the checkpoint, {list(own[k].shape)} now"
        for k in own
        if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)
    ]
    parts = [
        f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
        for label, items in (("shape differs", shapes), ("missing", missing), ("unexpected", extra))
        if items
    ]
    if parts:
        raise CheckpointError(
            "the checkpoint holds another architecture (" + "; ".join(parts) + ")",
            where=str(path),
            fix="resume with the backbone, head and method that wrote the checkpoint, or start "
            "again without resume",
        )


def restore_trainer(
    trainer: Trainer, store: CheckpointStore, path: Path
) -> tuple[dict[str, Any], TrainResult | None]:
    """Load checkpoint ``path`` into ``trainer``; return ``(rng_states, finished_result)``.

    Every check (checksums, settings, data, method, architecture) runs before anything is
    changed. The RNG states are returned, not applied: the trainer applies them right
    before the next batch, after every other start-up step that might draw random numbers.
    """
    weights, state = store.load(path)
    check_compatible(trainer, state, path)
    check_weights_fit(trainer.method, weights, path)
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
    trainer.faults.load_state_dict(state.get("faults", {}))
    trainer.tracker.load_state_dict(state["tracker"])
    unclaimed = trainer.callbacks.load_state_dict(state["callbacks"])
    if unclaimed:
        log.warning("checkpoint has state for callbacks not present now: %s", unclaimed)
    log.info("resumed from %s (epoch %d, step %d)", path, trainer.epoch + 1, trainer.global_step)
    finished = TrainResult.from_dict(state["result"]) if state["finished"] else None
    return state["rng"], finished


class NonFiniteRollback(Exception):
    """Unwinds the training loop to :func:`roll_back` (``on_nonfinite="rollback"``)."""

    def __init__(self, step: int, value: float, what: str = "loss") -> None:
        super().__init__(f"non-finite {what} ({value}) at step {step}")
        self.step, self.value, self.what = step, value, what


class FaultLog:
    """What rollbacks need and leave behind (``TrainConfig.on_nonfinite="rollback"``).

    Saved in every checkpoint: ``lr_scale`` (product of the ``rollback_lr_factor`` of every
    rollback), ``skip`` (``(epoch, batch position)`` pairs the trainer passes over) and
    ``rollbacks`` (one record per rollback). Not saved: the micro-batch positions and
    gradient norms of the optimizer steps not yet verified finite (the tracker checks
    losses only when it flushes), from which :meth:`culprit` and :meth:`batches_of` name
    what to skip.
    """

    def __init__(self) -> None:
        self.lr_scale = 1.0
        self.skip: set[tuple[int, int]] = set()
        self.rollbacks: list[dict[str, Any]] = []
        self._batches: dict[int, list[tuple[int, int]]] = {}
        self._grad_norms: dict[int, torch.Tensor] = {}

    def record(self, step: int, epoch: int, position: int, grad_norm: Any = None) -> None:
        """Micro-batch ``position`` of ``epoch`` belongs to optimizer step ``step``."""
        self._batches.setdefault(step, []).append((epoch, position))
        if isinstance(grad_norm, torch.Tensor):
            self._grad_norms[step] = grad_norm.detach()

    def verified(self, step: int) -> None:
        """Losses up to ``step`` are finite: forget older steps (``step`` is kept)."""
        self._batches = {k: v for k, v in self._batches.items() if k >= step}
        self._grad_norms = {k: v for k, v in self._grad_norms.items() if k >= step}

    def culprit(self, step: int) -> int:
        """The step to blame for a non-finite loss first seen at ``step``.

        A step whose gradient norm was non-finite while its loss was finite (known when
        gradients are clipped) corrupted the weights, so the loss of the next step fails:
        the earliest such step is blamed; otherwise ``step`` itself.
        """
        norms = sorted((k, v) for k, v in self._grad_norms.items() if k <= step)
        if norms:
            ok = torch.isfinite(torch.stack([v.float().reshape(()) for _, v in norms]))
            bad = [k for (k, _), fine in zip(norms, ok.tolist(), strict=True) if not fine]
            if bad:
                return bad[0]
        return step

    def batches_of(self, step: int) -> list[tuple[int, int]]:
        return sorted(self._batches.get(step, ()))

    def state_dict(self) -> dict[str, Any]:
        return {
            "lr_scale": self.lr_scale,
            "skip": [list(b) for b in sorted(self.skip)],
            "rollbacks": list(self.rollbacks),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.skip = {(int(e), int(b)) for e, b in state.get("skip", [])}
        self.rollbacks = list(state.get("rollbacks", []))
        self._batches, self._grad_norms = {}, {}


def scale_lr(trainer: Trainer, factor: float) -> None:
    """Multiply every group's learning rate, now and for the rest of the schedule.

    The schedule is ``lr = base_lr * factor(step)`` (``LambdaLR``), so both the groups'
    current ``lr`` (and ``initial_lr``) and the scheduler's ``base_lrs`` are scaled; both
    are part of the checkpointed optimizer and scheduler states.
    """
    if factor == 1.0:
        return
    for g in trainer.optimizer.param_groups:
        g["lr"] *= factor
        if "initial_lr" in g:
            g["initial_lr"] *= factor
    trainer.scheduler.base_lrs = [b * factor for b in trainer.scheduler.base_lrs]


def nonfinite_stop(trainer: Trainer, exc: NonFiniteRollback, why: str) -> TrainingError:
    """The error that ends a run on a non-finite loss (``stop``, or no rollback left)."""
    c = trainer.config
    latest = CheckpointStore(trainer.checkpoint_dir).latest() if c.save_checkpoints else None
    clip = f"a smaller clip_grad_norm (now {c.clip_grad_norm:g})" if c.clip_grad_norm else ""
    kept = (
        f"the last good checkpoint {latest.name} was kept; fit(resume=True) continues from it"
        if latest
        else "no checkpoint had been written yet"
    )
    rollback = "" if c.on_nonfinite == "rollback" else ", or on_nonfinite='rollback'"
    return TrainingError(
        f"the training {exc.what} became non-finite ({exc.value}) at step {exc.step} "
        f"(epoch {trainer.epoch + 1}){why}",
        where=f"{type(trainer.method).__name__}.training_step, run {trainer.run_dir}",
        fix=f"lower the learning rate (lr={c.lr:g}; try {c.lr / 10:g}), use "
        f"{clip or 'gradient clipping (clip_grad_norm=1.0)'}{rollback}, or check the inputs "
        f"for NaN/inf; {kept}",
    )


def agree_on_failure(trainer: Trainer, bad: NonFiniteRollback | None) -> NonFiniteRollback | None:
    """Under several processes, the earliest bad step of any process (one all-reduce)."""
    if trainer.accelerator.num_processes == 1:
        return bad
    none = torch.iinfo(torch.int64).max
    t = torch.tensor([bad.step if bad else none], dtype=torch.int64, device=trainer.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    step = int(t.item())
    if step == none:
        return None
    return bad if bad is not None and bad.step == step else NonFiniteRollback(step, math.nan)


def roll_back(trainer: Trainer, exc: NonFiniteRollback) -> dict[str, Any]:
    """Return to the last good checkpoint after a non-finite loss; return its RNG states.

    Like a resume inside the running process (callbacks get ``on_teardown`` then
    ``on_train_start``), plus the remedy: the micro-batches of the blamed step
    (:meth:`FaultLog.culprit`) join the skipped positions (``rollback_skip_batches``) and
    the learning rates are multiplied by ``rollback_lr_factor``. Both are kept in every
    later checkpoint, so a resumed run makes the same choices. Raises
    :class:`TrainingError` after ``max_rollbacks`` rollbacks, or when a rollback could
    change nothing.
    """
    c, f = trainer.config, trainer.faults
    store = CheckpointStore(trainer.checkpoint_dir)
    latest = store.latest()
    step = f.culprit(exc.step)
    batches = f.batches_of(step) if c.rollback_skip_batches else []
    if len(f.rollbacks) >= c.max_rollbacks:
        raise nonfinite_stop(trainer, exc, f" after max_rollbacks={c.max_rollbacks} rollbacks")
    if latest is None or (not batches and c.rollback_lr_factor == 1.0):
        raise nonfinite_stop(trainer, exc, " and a rollback could not avoid it")
    scale, skip = f.lr_scale * c.rollback_lr_factor, f.skip | set(batches)
    event: dict[str, Any] = {
        "step": exc.step,
        "what": exc.what,
        "value": repr(exc.value),
        "blamed_step": step,
        "skipped_batches": [list(b) for b in batches],
        "lr_scale": scale,
    }
    events = [*f.rollbacks, event]
    trainer.callbacks.call("on_teardown", trainer)
    rng, _ = restore_trainer(trainer, store, latest)
    event["restored_step"] = trainer.global_step
    scale_lr(trainer, scale / f.lr_scale)
    f.lr_scale, f.skip, f.rollbacks = scale, skip, events
    log.warning(
        "non-finite %s at step %d: rolled back to %s, skipping batches %s of step %d, lr x%g "
        "(rollback %d of at most %d)",
        exc.what,
        exc.step,
        latest.name,
        batches,
        step,
        scale,
        len(events),
        c.max_rollbacks,
    )
    trainer.callbacks.call("on_train_start", trainer)
    return rng
