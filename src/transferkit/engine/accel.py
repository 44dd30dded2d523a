"""The Hugging Face Accelerate pieces of the trainer.

Device placement, mixed precision, DDP wrapping, gradient accumulation, gradient clipping
and data sharding all come from :class:`accelerate.Accelerator`; nothing here talks to
``torch.distributed`` directly. Launch multi-GPU / multi-node runs with
``accelerate launch`` (or ``torchrun``); the same code then runs one process per device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn

from transferkit.engine.config import TrainConfig
from transferkit.errors import ConfigError


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

    Accelerate keeps its state in process-wide singletons. In a single process a later
    trainer may need another precision or device (e.g. a CPU run after a GPU run); the
    singleton is then reset. Under a multi-process launch the settings must agree.
    """
    precision = config.resolved_precision()
    kwargs: dict[str, Any] = {
        "mixed_precision": precision,
        "cpu": config.cpu,
        "gradient_accumulation_steps": config.grad_accum_steps,
        "dataloader_config": DataLoaderConfiguration(use_seedable_sampler=False, even_batches=True),
        "kwargs_handlers": [
            DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)
        ],
        "step_scheduler_with_optimizer": False,
    }
    try:
        return Accelerator(**kwargs)
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
    return Accelerator(**kwargs)
