"""Run ``method.predict`` over a dataset, in order, under eval mode and inference mode."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch import nn
from torch.utils.data import DataLoader


def module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter or buffer (CPU when it has none)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, Mapping):
        return batch["x"], batch.get("y")
    if isinstance(batch, list | tuple) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def evaluate_predictions(
    method: nn.Module,
    dataset: torch.utils.data.Dataset,
    collate_fn: Callable[[list[Any]], Any] | None,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions of ``method`` on every item of ``dataset``, in dataset order.

    Batches are ``{"x": inputs, "y": targets}`` dicts (or ``(x, y)`` pairs) and are moved
    to the method's device. Returns ``(outputs, targets)``: ``outputs`` is float32
    ``[N, C]`` (logits) or ``[N]`` (regression); ``targets`` is ``[N]``, or None when the
    batches carry no ``y``. The method's train/eval mode is restored afterwards.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    device = module_device(method)
    outs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    was_training = method.training
    method.eval()
    try:
        with torch.inference_mode():
            for batch in loader:
                x, y = _split_batch(batch)
                out = method.predict(send_to_device(x, device))  # type: ignore[operator]
                outs.append(out.detach().float().cpu())
                if y is not None:
                    targets.append(torch.as_tensor(y).cpu())
    finally:
        method.train(was_training)
    if not outs:
        return np.zeros((0,), dtype=np.float32), None
    y_all = torch.cat(targets).numpy() if len(targets) == len(outs) else None
    return torch.cat(outs).numpy(), y_all
