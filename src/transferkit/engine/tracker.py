"""Scalar bookkeeping without per-step host syncs.

Each micro-batch's scalars (``loss`` and whatever else ``training_step`` returns) are kept
as detached device tensors; nothing is copied to the host until :meth:`flush`, which the
trainer calls only when it logs, checkpoints or ends an epoch. ``flush`` stacks the pending
values (one device->host copy per key), checks that every loss is finite, and folds them
into running sums for the current log window and the current epoch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from transferkit.errors import TrainingError

if TYPE_CHECKING:
    from transferkit.engine.trainer import Trainer


class NonFiniteLoss(Exception):
    """Raised by :meth:`ScalarTracker.flush` with the first step whose loss was not finite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"non-finite loss {value} at step {step}")
        self.step = step
        self.value = value


class ScalarTracker:
    """Means of scalar outputs over the log window and over the epoch."""

    def __init__(self) -> None:
        self._pending: dict[str, list[torch.Tensor]] = {}
        self._steps: list[int] = []
        self.window: dict[str, list[float]] = {}
        self.epoch: dict[str, list[float]] = {}

    def add(self, outputs: dict[str, Any], step: int) -> None:
        """Record the scalars of one micro-batch of optimizer step ``step`` (1-based)."""
        self._steps.append(step)
        for key, value in outputs.items():
            if isinstance(value, torch.Tensor):
                if value.ndim == 0:
                    self._pending.setdefault(key, []).append(value.detach())
            elif isinstance(value, int | float) and not isinstance(value, bool):
                self._pending.setdefault(key, []).append(torch.tensor(float(value)))

    def flush(self) -> None:
        """Move pending values to the host; raise :class:`NonFiniteLoss` if a loss is bad."""
        if not self._steps:
            return
        pending, steps = self._pending, self._steps
        self._pending, self._steps = {}, []
        for key, values in pending.items():
            host = torch.stack([v.float() for v in values]).cpu()
            if key == "loss":
                bad = (~torch.isfinite(host)).nonzero()
                if len(bad):
                    i = int(bad[0, 0])
                    raise NonFiniteLoss(steps[i], float(host[i]))
            total, count = float(host.double().sum()), len(values)
            for sums in (self.window, self.epoch):
                s = sums.setdefault(key, [0.0, 0])
                s[0] += total
                s[1] += count

    @staticmethod
    def _means(sums: dict[str, list[float]]) -> dict[str, float]:
        return {k: (s / n if n else math.nan) for k, (s, n) in sums.items()}

    def window_means(self) -> dict[str, float]:
        """Means since the last call (flush first); resets the window."""
        self.flush()
        out, self.window = self._means(self.window), {}
        return out

    def epoch_means(self) -> dict[str, float]:
        """Means over the epoch (flush first); resets the epoch sums."""
        self.flush()
        out, self.epoch = self._means(self.epoch), {}
        return out

    def state_dict(self) -> dict[str, Any]:
        """Running sums (call :meth:`flush` first; pending tensors are not saved)."""
        return {
            "window": {k: list(v) for k, v in self.window.items()},
            "epoch": {k: list(v) for k, v in self.epoch.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending, self._steps = {}, []
        self.window = {k: [float(v[0]), int(v[1])] for k, v in state["window"].items()}
        self.epoch = {k: [float(v[0]), int(v[1])] for k, v in state["epoch"].items()}


def nonfinite_error(exc: NonFiniteLoss, trainer: Trainer, latest: str | None) -> TrainingError:
    """The user-facing error for a non-finite loss: step, epoch, what to try, what was kept."""
    lr, clip = trainer.config.lr, trainer.config.clip_grad_norm
    clip_fix = (
        f"a smaller clip_grad_norm (now {clip:g})"
        if clip
        else "gradient clipping (clip_grad_norm=1.0)"
    )
    kept = (
        f"the last good checkpoint {latest} was kept; fit(resume=True) continues from it"
        if latest
        else "no checkpoint had been written yet"
    )
    return TrainingError(
        f"the training loss became non-finite ({exc.value}) at step {exc.step} "
        f"(epoch {trainer.epoch + 1})",
        where=f"{type(trainer.method).__name__}.training_step, run {trainer.run_dir}",
        fix=f"lower the learning rate (lr={lr:g}; try {lr / 10:g}), use {clip_fix}, or "
        f"check the inputs for NaN/inf; {kept}",
    )
