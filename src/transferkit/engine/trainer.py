"""The Trainer: runs any :class:`~transferkit.methods.base.Method` with exact resume.

It knows nothing about algorithms: per micro-batch it calls
``method.training_step(batch) -> {"loss": tensor, other scalars}`` and back-propagates the
loss (or, when the method has a callable ``manual_backward``, calls
``manual_backward(outputs, accelerator)`` instead; see ``_manual_step``), builds the optimizer
from ``method.param_groups(base_lr)`` and calls ``val_fn(method) -> {metric: value}`` at
epoch ends. Everything device-, precision- and process-related is Hugging Face
Accelerate (``engine.accel``).

Exact resume. A checkpoint (``engine.checkpoint``) holds the weights, optimizer,
scheduler and grad-scaler states, the RNG states, the epoch, the number of micro-batches
consumed in it, the optimizer step count, callback states, the history and the running
loss sums. ``fit(resume=True)`` restores all of it, regenerates the epoch's permutation
(``engine.data``), skips the consumed batches and restores the RNG states right before the
next batch, so a run killed at any point and resumed ends with weights bit-identical to an
uninterrupted run with the same seed (on the same hardware and software). Datasets and
collate functions must not draw from the global RNGs for this to hold. A resume is refused
(:class:`~transferkit.errors.CheckpointError`, nothing written) when the checkpoint is
corrupted or was written for other settings, data, method or architecture
(``engine.state``).

Faults. A non-finite loss (checked whenever scalars are flushed: at log steps,
checkpoints and epoch ends) stops the run with a
:class:`~transferkit.errors.TrainingError`, keeping the last good checkpoint, or with
``on_nonfinite="rollback"`` returns to that checkpoint in place and goes on, skipping the
offending micro-batches and/or lowering the learning rate (``TrainConfig``,
``engine.state.roll_back``). A checkpoint that cannot be written (disk full) raises a
CheckpointError and leaves the previous one intact (``engine.checkpoint``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from torch import nn

from transferkit.engine.accel import StepModule, make_accelerator
from transferkit.engine.callbacks import Callback, CallbackList, EarlyStopping
from transferkit.engine.checkpoint import CheckpointStore, dataset_fingerprint, restore_rng_state
from transferkit.engine.config import TrainConfig, check_trainer_inputs
from transferkit.engine.data import build_train_loader, lone_batchnorm_batch, reseed_loader
from transferkit.engine.loggers import JsonlLogger, ProgressBar, TensorBoardLogger
from transferkit.engine.optim import build_optimizer
from transferkit.engine.schedules import build_scheduler
from transferkit.engine.state import (
    FaultLog,
    NonFiniteRollback,
    TrainResult,
    agree_on_failure,
    nonfinite_stop,
    restore_trainer,
    roll_back,
    trainer_state,
    weights_finite,
)
from transferkit.engine.tracker import NonFiniteLoss, ScalarTracker
from transferkit.errors import TrainingError

log = logging.getLogger(__name__)
ValFn = Callable[[nn.Module], Mapping[str, float]]


class Trainer:
    """Train ``method`` on ``train_dataset`` as ``config`` says; write into ``run_dir``.

    Args:
        method: a Method (``training_step``, ``param_groups``, ``predict``). Callbacks it
            returns from an optional ``training_callbacks()`` are added after ``callbacks``.
        train_dataset: a map-style torch Dataset; batches come from ``collate_fn``.
        config: a :class:`TrainConfig`.
        run_dir: ``log.jsonl`` and ``checkpoints/`` go here.
        val_fn: ``val_fn(method) -> {name: value}``, called at epoch ends on the main
            process under eval mode and ``torch.inference_mode``; names without a
            ``val_`` prefix get one.
        callbacks: extra :class:`Callback` objects.
        quiet: no progress bar.
    """

    def __init__(
        self,
        method: nn.Module,
        train_dataset: torch.utils.data.Dataset,
        collate_fn: Callable[[list[Any]], Any] | None,
        config: TrainConfig,
        run_dir: str | Path,
        val_fn: ValFn | None = None,
        callbacks: Iterable[Callback] = (),
        quiet: bool = False,
    ) -> None:
        check_trainer_inputs(method, config, val_fn)
        self.method, self.train_dataset, self.collate_fn = method, train_dataset, collate_fn
        self.config, self.val_fn, self.quiet = config, val_fn, quiet
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.user_callbacks = [*callbacks, *self._method_callbacks()]
        self.accelerator: Any = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.early_stopping: EarlyStopping | None = None
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.total_steps = self.steps_per_epoch = self.batches_per_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self._last_save = time.monotonic()
        self.faults = FaultLog()
        self.data_fingerprint = ""

    def _method_callbacks(self) -> list[Callback]:
        fn = getattr(self.method, "training_callbacks", None)
        return list(fn()) if callable(fn) else []

    # ----------------------------------------------------------------- public surface
    @property
    def is_main_process(self) -> bool:
        return self.accelerator is None or bool(self.accelerator.is_main_process)

    @property
    def saves_checkpoints(self) -> bool:
        return self.config.save_checkpoints

    @property
    def device(self) -> torch.device:
        return self.accelerator.device if self.accelerator is not None else torch.device("cpu")

    def request_stop(self, reason: str) -> None:
        """Stop after the current optimizer step (or epoch end), recording ``reason``."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def fit(self, resume: bool = False) -> TrainResult:
        """Train (or, with ``resume``, continue from the latest checkpoint) and return.

        A refused resume (corrupted checkpoint, other settings, data, method or
        architecture) raises :class:`~transferkit.errors.CheckpointError` before anything
        is written.
        """
        self._setup()
        store = CheckpointStore(self.checkpoint_dir)
        latest = store.latest() if resume else None
        rng = None
        if latest is not None:
            rng, finished = restore_trainer(self, store, latest)
            if finished is not None:
                log.info("run in %s had finished; loaded its final weights", self.run_dir)
                return finished
        else:
            if resume:
                log.info("no checkpoint in %s; starting from scratch", self.checkpoint_dir)
            self._fresh_start(store)
        try:
            self.callbacks.call("on_train_start", self)
            if rng is not None:
                restore_rng_state(rng)
            elif self.config.on_nonfinite == "rollback":
                self._save("start")  # something to roll back to
            return self._train_loop()
        finally:
            self.callbacks.call("on_teardown", self)

    def _train_loop(self) -> TrainResult:
        while True:
            try:
                while self.epoch < self.config.epochs and self.stop_reason is None:
                    self._run_epoch()
                return self._finish()
            except NonFiniteRollback as exc:
                restore_rng_state(roll_back(self, exc))

    # ----------------------------------------------------------------- set-up / restore
    def _builtin_callbacks(self) -> list[Callback]:
        c = self.config
        cbs: list[Callback] = [JsonlLogger(self.run_dir / "log.jsonl")]
        if not self.quiet:
            cbs.append(ProgressBar())
        self.early_stopping = None
        if c.early_stopping:
            self.early_stopping = EarlyStopping(
                c.monitor, c.mode, c.patience, c.min_delta, c.restore_best
            )
            cbs.append(self.early_stopping)
        if c.tensorboard:
            cbs.append(TensorBoardLogger(self.run_dir / "tensorboard"))
        return cbs

    def _setup(self) -> None:
        """Accelerator, loader, optimizer, scheduler and callbacks; counters at zero."""
        c = self.config
        self.accelerator = acc = make_accelerator(c)
        loader, self._sampler = build_train_loader(
            self.train_dataset,
            self.collate_fn,
            batch_size=c.batch_size,
            seed=c.seed,
            num_workers=c.num_workers,
            drop_last=c.drop_last or lone_batchnorm_batch(self.method, self.train_dataset, c),
        )
        optimizer = build_optimizer(self.method, c)
        self._model, self.optimizer, self._loader = acc.prepare(
            StepModule(self.method), optimizer, loader
        )
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._direct_step = (
            isinstance(self.optimizer, AcceleratedOptimizer)
            and acc.scaler is None
            and acc.distributed_type not in (DistributedType.XLA, DistributedType.DEEPSPEED)
        )
        self._step_skipped = False
        self.batches_per_epoch = len(self._loader)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / c.grad_accum_steps)
        self.total_steps = c.epochs * self.steps_per_epoch
        if c.max_steps is not None:
            self.total_steps = min(self.total_steps, c.max_steps)
        self.scheduler = build_scheduler(self.optimizer.optimizer, c, self.total_steps)
        self._factor = self.scheduler.lr_lambdas[0]
        self.tracker = ScalarTracker()
        self.callbacks = CallbackList([*self._builtin_callbacks(), *self.user_callbacks])
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.history, self.stop_reason = [], None
        self.faults = FaultLog()
        self.data_fingerprint = self._fingerprint() if self.saves_checkpoints else ""

    def _fingerprint(self) -> str:
        """Content hash of the training data as of epoch 0 (each epoch sets its own again)."""
        set_epoch = getattr(self.train_dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(0)
        return dataset_fingerprint(self.train_dataset)

    def _fresh_start(self, store: CheckpointStore) -> None:
        """Forget earlier checkpoints of this run directory (a later resume must not find
        them) and seed every RNG from ``config.seed``."""
        if self.is_main_process:
            store.clear()
        self.accelerator.wait_for_everyone()
        set_seed(self.config.seed)

    # ----------------------------------------------------------------- training loop
    def _run_epoch(self) -> None:
        e, skip, c = self.epoch, self.step_in_epoch, self.config
        self._sampler.set_epoch(e)
        self._loader.set_epoch(e)
        reseed_loader(self._loader, c.seed, e)
        if callable(getattr(self.train_dataset, "set_epoch", None)):
            self.train_dataset.set_epoch(e)  # type: ignore[attr-defined]
        self._model.train()
        self.callbacks.call("on_epoch_start", self)
        t0 = time.perf_counter()
        if skip < self.batches_per_epoch:
            loader = self._loader
            if skip:
                loader = self.accelerator.skip_first_batches(self._loader, skip)
                loader.set_epoch(e)
            try:
                self._consume(loader)
            finally:
                if hasattr(loader, "end"):  # idempotent; needed when leaving early
                    loader.end()
        self._end_epoch(t0)

    def _consume(self, loader: Iterable[Any]) -> None:
        """Micro-steps over ``loader``, passing over batches skipped by a rollback."""
        for batch in loader:
            if (self.epoch, self.step_in_epoch) in self.faults.skip:
                self.step_in_epoch += 1
                continue
            self._micro_step(batch)
            if self.stop_reason is not None and self.accelerator.sync_gradients:
                break

    def _loss_of(self, outputs: Any) -> torch.Tensor:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else None
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.requires_grad:
            raise TrainingError(
                "training_step must return a dict whose 'loss' is a scalar tensor that "
                "depends on trainable parameters",
                where=f"{type(self.method).__name__}.training_step",
                fix="return {'loss': loss, ...} computed from the model",
            )
        return loss

    def _micro_step(self, batch: Any) -> None:
        acc, clip = self.accelerator, self.config.clip_grad_norm
        manual = getattr(self.method, "manual_backward", None)
        with acc.accumulate(self._model):
            if callable(manual):
                outputs = self._manual_step(batch, manual)
            else:
                outputs = self._model(batch)
                acc.backward(self._loss_of(outputs))
            if acc.sync_gradients:
                if clip is not None:
                    outputs = {**outputs, "grad_norm": acc.clip_grad_norm_(self._params, clip)}
                self.callbacks.call("on_before_optimizer_step", self)
                self._optimizer_step()
        if self.config.on_nonfinite == "rollback":
            gn = outputs.get("grad_norm")
            self.faults.record(self.global_step + 1, self.epoch, self.step_in_epoch, gn)
        self.step_in_epoch += 1
        self.tracker.add(outputs, self.global_step + 1)
        if acc.sync_gradients:
            self._after_optimizer_step()

    def _manual_step(self, batch: Any, manual: Callable[..., Any]) -> Any:
        """Forward under ``no_sync`` and let the method write ``.grad`` itself.

        For methods that need several backward passes per step (multi-task gradient
        surgery): ``manual_backward(outputs, accelerator)`` replaces
        ``accelerator.backward(loss)``; it must scale by the accumulation steps, and leave
        ``.grad`` averaged over processes when ``accelerator.sync_gradients`` (DDP's own
        reducer is kept out of it). The scalars it returns join the step's outputs.
        """
        with self.accelerator.no_sync(self._model):
            outputs = self._model(batch)
            self._loss_of(outputs)
            extra = manual(outputs, self.accelerator)
        return {**outputs, **extra} if extra else outputs

    def _optimizer_step(self) -> None:
        """Step and zero the optimizer (called only when gradients are synchronised).

        ``AcceleratedOptimizer.step`` probes for the optional ``lomo_optim`` package twice
        per call and ``zero_grad`` inspects a signature each time (together ~0.1-1 ms per
        step, more on a busy machine); without a grad scaler or XLA those wrappers add
        nothing else, so the wrapped torch optimizer is stepped directly.
        """
        if self._direct_step:
            self.optimizer.optimizer.step()
            self.optimizer.optimizer.zero_grad(set_to_none=True)
            self._step_skipped = False
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._step_skipped = bool(self.optimizer.step_was_skipped)

    def _after_optimizer_step(self) -> None:
        c = self.config
        logging_now = (self.global_step + 1) % c.log_every_steps == 0
        used_lrs = [g["lr"] for g in self.optimizer.param_groups] if logging_now else None
        used_step = self.scheduler.last_epoch
        if not self._step_skipped:
            self.scheduler.step()
        self.global_step += 1
        self.callbacks.call("on_step_end", self)
        if used_lrs is not None:
            self._log_step(used_step, used_lrs)
        if c.max_steps is not None and self.global_step >= c.max_steps:
            self.request_stop("max_steps")
        end_of_epoch = self.accelerator.gradient_state.end_of_dataloader
        every = c.checkpoint_every_steps
        if (
            every
            and self.global_step % every == 0
            and not end_of_epoch
            and self.stop_reason is None
        ):
            self._save("step")

    def _lr_fields(self, step: int, lrs: list[float]) -> dict[str, float]:
        """``lr``: the base lr times the schedule factor at ``step``; ``lr_<group>`` each."""
        out = {"lr": self.config.lr * self.faults.lr_scale * self._factor(step)}
        names: dict[str, float] = {}
        for g, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            names.setdefault(str(g.get("name", "")), lr)
        if len(names) > 1:
            out.update({f"lr_{n}": v for n, v in names.items()})
        return out

    def _log_step(self, used_step: int, lrs: list[float]) -> None:
        means = self._checked(self.tracker.window_means)
        record = {
            "type": "train",
            "step": self.global_step,
            "epoch": self.epoch + 1,
            **self._lr_fields(used_step, lrs),
            "loss": means.pop("loss"),
            **means,
        }
        self.callbacks.call("on_log", self, record)

    def _checked(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` (a tracker flush); a non-finite loss stops or rolls back the run.

        Under several processes they agree on the first bad step (an all-reduce), so all
        stop or roll back together.
        """
        try:
            out, bad = fn(), None
        except NonFiniteLoss as exc:
            out, bad = None, NonFiniteRollback(exc.step, exc.value)
        bad = agree_on_failure(self, bad)
        if bad is None:
            self.faults.verified(self.global_step)
            return out
        if self.config.on_nonfinite == "rollback":
            raise bad
        raise nonfinite_stop(self, bad, "") from None

    # ----------------------------------------------------------------- epoch end
    def _should_validate(self) -> bool:
        e = self.epoch + 1
        return self.val_fn is not None and (
            e % self.config.eval_every_epochs == 0
            or e >= self.config.epochs
            or self.stop_reason is not None
        )

    def _validate(self) -> dict[str, float]:
        metrics: dict[str, float] | None = None
        if self.is_main_process:
            was_training = self.method.training
            self.method.eval()
            try:
                with torch.inference_mode():
                    raw = self.val_fn(self.method)  # type: ignore[misc]
            finally:
                self.method.train(was_training)
            if not isinstance(raw, Mapping):
                raise TrainingError(
                    "val_fn must return a dict of metric values",
                    where="Trainer(val_fn)",
                    fix="return {'val_accuracy': ...}",
                )
            metrics = {
                (k if k.startswith("val_") else f"val_{k}"): float(v) for k, v in raw.items()
            }
        if self.accelerator.num_processes > 1:
            metrics = broadcast_object_list([metrics])[0]
        return metrics or {}

    def _end_epoch(self, t0: float) -> None:
        means = self._checked(self.tracker.epoch_means)
        lr = (
            self.config.lr
            * self.faults.lr_scale
            * self._factor(max(self.scheduler.last_epoch - 1, 0))
        )
        record: dict[str, Any] = {
            "type": "epoch",
            "step": self.global_step,
            "epoch": self.epoch + 1,
            "lr": lr,
            "train_loss": means.pop("loss", math.nan),
        }
        record.update({f"train_{k}": v for k, v in means.items()})
        if self._should_validate():
            record.update(self._validate())
        record["seconds"] = time.perf_counter() - t0
        self.history.append(record)
        self.callbacks.call("on_epoch_end", self, record)
        self.epoch += 1
        self.step_in_epoch = 0
        recent = time.monotonic() - self._last_save < self.config.checkpoint_min_interval_s
        if not recent:
            self._save("epoch")

    def _finish(self) -> TrainResult:
        self.callbacks.call("on_train_end", self)
        es = self.early_stopping
        evaluated = [r for r in self.history if any(k.startswith("val_") for k in r)]
        final = (
            {k: v for k, v in evaluated[-1].items() if k.startswith("val_")} if evaluated else {}
        )
        result = TrainResult(
            history=list(self.history),
            best_metric=es.best if es else None,
            best_epoch=es.best_epoch if es else None,
            global_step=self.global_step,
            epochs_completed=self.epoch,
            stopped_reason=self.stop_reason or "completed",
            final_metrics=final,
            rollbacks=list(self.faults.rollbacks),
        )
        self._save("final", result=result)
        return result

    # ----------------------------------------------------------------- checkpoints
    def _save(self, tag: str, result: TrainResult | None = None) -> None:
        self._last_save = time.monotonic()
        if not self.saves_checkpoints:
            return
        self._checked(self.tracker.flush)
        if not weights_finite(self.method):
            if self.config.on_nonfinite == "rollback" and tag != "start":
                raise NonFiniteRollback(self.global_step, math.nan, "weights")
            raise TrainingError(
                f"the weights became non-finite by step {self.global_step}; no checkpoint "
                "was written",
                where=f"run {self.run_dir}",
                fix="lower the learning rate or enable gradient clipping (clip_grad_norm)",
            )
        path = None
        if self.is_main_process:
            name = f"ckpt-{self.global_step:08d}-{tag}"
            path = CheckpointStore(self.checkpoint_dir).save(
                name, self.method.state_dict(), trainer_state(self, result)
            )
        self.accelerator.wait_for_everyone()
        self.callbacks.call("on_checkpoint", self, path)
