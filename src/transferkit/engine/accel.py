"""The Hugging Face Accelerate pieces of the trainer, and the few cross-process helpers.

Device placement, mixed precision, DDP wrapping, gradient accumulation, gradient clipping
and data sharding all come from :class:`accelerate.Accelerator`; nothing here talks to
``torch.distributed`` directly. Launch multi-GPU / multi-node runs with
``accelerate launch`` (or ``torchrun``); the same code then runs one process per device
(see ``docs/distributed.md``).

Global-batch semantics. ``TrainConfig.batch_size`` is the *global* batch of one
micro-step: with ``N`` processes every process gets ``batch_size / N`` examples of the same
global batch (Accelerate's ``split_batches``), so the number of steps, the learning-rate
schedule and the checkpoint counters do not depend on ``N``, and a run may resume under
another process count. DDP averages the per-process gradients, which for a loss that is a
mean over examples equals the gradient of the global batch.

Experiment code that writes files or must agree across processes uses the helpers below:
:func:`is_main_process`, :func:`barrier`, :func:`broadcast`, :func:`on_main` (run once on
the main process, share the result or the error) and :func:`shard_bounds` /
:func:`gather_arrays` (split an evaluation across processes and put it back together).
Without a launcher (one process) they do nothing and never initialise Accelerate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import (
    DistributedDataParallelKwargs,
    broadcast_object_list,
    gather_object,
    get_int_from_env,
    parse_flag_from_env,
)
from torch import nn

from transferkit.engine.config import TrainConfig
from transferkit.errors import ConfigError, TransferkitError

T = TypeVar("T")
_WORLD_SIZE_ENV = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]


class StepModule(nn.Module):
    """Routes ``forward(batch)`` to ``method.training_step(batch)``.

    Accelerate's mixed precision (autocast) and DDP gradient synchronisation act on a
    module's ``forward``; wrapping the method this way lets them act on the training step
    without the method knowing. ``method`` is the very same object (state-dict keys of the
    checkpoint are the method's own).
    """

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Mapping[str, Any]) -> Any:
        return self.method.training_step(batch)  # type: ignore[operator]


def make_accelerator(config: TrainConfig) -> Accelerator:
    """An ``Accelerator`` for ``config`` (precision, accumulation, DDP options).

    Batches are split across processes (``split_batches=True``): ``config.batch_size`` is
    the global batch and must be divisible by the number of processes.

    Accelerate keeps its state in process-wide singletons. In a single process a later
    trainer may need another precision or device (e.g. a CPU run after a GPU run); the
    singleton is then reset. Under a multi-process launch the settings must agree.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of the process count, or the
            settings differ from those of an earlier trainer of a launched run.
    """
    precision = config.resolved_precision()
    kwargs: dict[str, Any] = {
        "mixed_precision": precision,
        "cpu": config.cpu,
        "gradient_accumulation_steps": config.grad_accum_steps,
        "dataloader_config": DataLoaderConfiguration(
            split_batches=True, use_seedable_sampler=False, even_batches=True
        ),
        "kwargs_handlers": [
            DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)
        ],
        "step_scheduler_with_optimizer": False,
    }
    if launched():
        process_state(cpu=config.cpu)
    try:
        acc = Accelerator(**kwargs)
    except ValueError as exc:
        if "already been initialized" not in str(exc):
            raise
        if PartialState().num_processes > 1:
            raise ConfigError(
                f"this process already runs Accelerate with other settings ({exc})",
                where="TrainConfig.mixed_precision / TrainConfig.cpu",
                fix="use the same precision and device for every trainer of a launched run",
            ) from exc
        AcceleratorState._reset_state(reset_partial_state=True)
        acc = Accelerator(**kwargs)
    _check_global_batch(config.batch_size, acc.num_processes)
    return acc


def _check_global_batch(batch_size: int, processes: int) -> None:
    if batch_size % processes:
        raise ConfigError(
            f"batch_size {batch_size} cannot be split evenly across {processes} processes "
            "(batch_size is the global batch; each process gets batch_size / processes)",
            where="train.batch_size (TrainConfig.batch_size)",
            fix=f"use a multiple of {processes}, e.g. {processes * max(1, batch_size // processes)}"
            f" or {processes * (batch_size // processes + 1)}",
        )


# ----------------------------------------------------------------- cross-process helpers
def launched() -> bool:
    """True when this process is one of several started by a launcher (torchrun, ...)."""
    return get_int_from_env(_WORLD_SIZE_ENV, 1) > 1


def process_state(cpu: bool = False) -> PartialState:
    """Accelerate's process state, joining the launcher's process group on first use.

    On a machine without an accelerator (or with ``ACCELERATE_USE_CPU``, which
    ``accelerate launch --cpu`` sets) the processes are CPU processes talking over gloo.
    Accelerate alone would treat a ``torchrun`` process on such a machine as a lone
    process, so N processes would silently train N independent copies.
    """
    cpu = cpu or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available()
    return PartialState(cpu=cpu)


def num_processes() -> int:
    return process_state().num_processes if launched() else 1


def process_index() -> int:
    return process_state().process_index if launched() else 0


def is_main_process() -> bool:
    """True on the process that writes files (global rank 0), and without a launcher."""
    return not launched() or bool(process_state().is_main_process)


def barrier() -> None:
    """Wait until every process gets here (no-op in one process)."""
    if launched():
        process_state().wait_for_everyone()


def broadcast(obj: T) -> T:
    """The main process's ``obj`` on every process (pickled; no-op in one process)."""
    if not launched():
        return obj
    process_state()
    return broadcast_object_list([obj], from_process=0)[0]


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on the main process only; every process returns its result.

    If ``fn`` raises on the main process, every process raises: the main process its own
    exception; the others the same :class:`TransferkitError` subclass (what / where / fix)
    or, for any other exception, a ``RuntimeError`` naming it, so no process is left
    waiting for the others. Acts as a barrier.
    """
    if not launched():
        return fn(*args, **kwargs)
    outcome: tuple[str, Any] | None = None
    error: BaseException | None = None
    if is_main_process():
        try:
            outcome = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # re-raised below, on every process
            error, outcome = exc, ("error", _describe(exc))
    outcome = broadcast(outcome)
    assert outcome is not None
    if outcome[0] == "ok":
        return outcome[1]
    if error is not None:
        raise error
    raise _rebuild(outcome[1])


def _describe(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, TransferkitError):
        return (type(exc), exc.what, exc.where, exc.fix)
    return (None, f"{type(exc).__name__}: {exc}", None, None)


def _rebuild(desc: tuple[Any, ...]) -> BaseException:
    cls, what, where, fix = desc
    if cls is not None:
        try:
            return cls(what, where=where, fix=fix)
        except TypeError:  # a subclass with another signature
            return TransferkitError(what, where=where, fix=fix)
    return RuntimeError(f"the main process failed ({what})")


def shard_bounds(n: int) -> tuple[int, int]:
    """``[start, stop)`` of this process's contiguous share of ``n`` items (in rank order).

    Shares differ by at most one item; ranks past the data get an empty share.
    """
    p, i = num_processes(), process_index()
    base, extra = divmod(n, p)
    start = i * base + min(i, extra)
    return start, start + base + (1 if i < extra else 0)


def gather_arrays(local: np.ndarray) -> np.ndarray:
    """Concatenate every process's rows (rank order) on every process: inverse of
    :func:`shard_bounds`. Empty shares are skipped, so their shape does not matter."""
    if not launched():
        return local
    process_state()
    parts = [a for a in gather_object([np.asarray(local)]) if len(a)]
    return np.concatenate(parts) if parts else np.asarray(local)
