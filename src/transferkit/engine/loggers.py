"""Logging callbacks: JSONL log, rich progress bar, optional TensorBoard.

All of them act on the main process only and see the records the trainer builds:

* step records (every ``log_every_steps`` optimizer steps): ``{"type": "train", "step",
  "epoch", "lr", "loss", <other scalars of training_step>, "lr_<group>"...}`` where
  ``loss`` and the scalars are means over the micro-batches since the previous record;
* epoch records: ``{"type": "epoch", "step", "epoch", "lr", "train_loss", "val_*"...,
  "seconds"}``.

``epoch`` is 1-based in records (epoch 1 is the first pass over the data).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from transferkit.engine.callbacks import Callback
from transferkit.utils.io import atomic_write_text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from transferkit.engine.trainer import Trainer


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    return value


class JsonlLogger(Callback):
    """Appends one JSON object per step/epoch record to ``path`` (``run_dir/log.jsonl``).

    Its state is the number of lines written: a resumed run first cuts the file back to
    the lines that existed at the checkpoint, so no record appears twice. Non-finite
    numbers are written as ``null`` (strict JSON).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines = 0
        self._fh: IO[str] | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.is_main_process:
            return
        kept: list[str] = []
        if self.lines and self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            kept = [ln for ln in text.split("\n") if ln][: self.lines]
        self.lines = len(kept)
        atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in teardown)

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        clean = {k: _jsonable(v) for k, v in record.items()}
        self._fh.write(json.dumps(clean, allow_nan=False) + "\n")
        self._fh.flush()
        self.lines += 1

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._write(record)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._write(record)

    def on_teardown(self, trainer: Trainer) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def state_dict(self) -> dict[str, Any]:
        return {"lines": self.lines}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lines = int(state["lines"])


class ProgressBar(Callback):
    """A rich progress bar over optimizer steps (loss, lr, elapsed time, ETA).

    Shown only on the main process and when ``console`` is a terminal (default: a stderr
    console), so logs and pipes stay clean. One line per epoch summarises its metrics.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = self.console or Console(stderr=True)
        if not trainer.is_main_process or not console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "training", total=trainer.total_steps, completed=trainer.global_step, loss="-"
        )

    def on_epoch_start(self, trainer: Trainer) -> None:
        if self._progress is not None and self._task is not None:
            desc = f"epoch {trainer.epoch + 1}/{trainer.config.epochs}"
            self._progress.update(self._task, description=desc)

    def on_step_end(self, trainer: Trainer) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, loss=f"{record['loss']:.4g}")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._progress is None:
            return
        parts = [
            f"{k} {v:.4g}"
            for k, v in record.items()
            if isinstance(v, float) and k not in ("lr", "seconds")
        ]
        line = f"epoch {record['epoch']}: " + "  ".join(parts)
        self._progress.console.print(line, markup=False, highlight=False)

    def on_teardown(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class TensorBoardLogger(Callback):
    """Writes every numeric record field as a TensorBoard scalar, if tensorboard is installed.

    Without the ``tensorboard`` package it warns once and does nothing. On resume the
    events after the checkpoint's step are purged (``SummaryWriter(purge_step=...)``).
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.is_main_process:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn(
                "tensorboard is not installed; TensorBoard logging is skipped "
                "(pip install tensorboard to enable it)",
                stacklevel=2,
            )
            return
        purge = trainer.global_step if trainer.global_step > 0 else None
        self._writer = SummaryWriter(str(self.log_dir), purge_step=purge)

    def _scalars(self, prefix: str, record: dict[str, Any]) -> None:
        if self._writer is None:
            return
        for k, v in record.items():
            if k not in ("step", "epoch", "type") and isinstance(v, int | float):
                self._writer.add_scalar(f"{prefix}/{k}", v, record["step"])

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._scalars("train", record)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._scalars("epoch", record)

    def on_teardown(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
