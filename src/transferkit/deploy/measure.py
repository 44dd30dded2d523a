"""Deployment numbers of a model: size and CPU speed, as a dict for ``metrics.json``.

:func:`measure_deployment` reports

* ``params``: the number of parameters (shared tensors counted once);
* ``size_bytes``: the size of its weights saved as safetensors (what ships);
* ``latency_ms``: median wall time of one batch-1 forward pass, in milliseconds;
* ``throughput_per_s``: examples per second at batch ``throughput_batch`` (64), from the
  median time of one such pass.

Timing protocol: the model in eval mode on the CPU, ``torch.inference_mode``, a fixed number
of intra-op threads (restored afterwards), ``warmup`` untimed passes, then the median of
``repeats`` timed passes (``time.perf_counter``); the median resists the odd slow pass a
shared machine produces. Batches repeat the first example of ``example_inputs``.
:func:`compare_deployment` turns a teacher's and a student's numbers into ratios.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from transferkit.deploy.predict import Inputs, predict_module, repeat_batch
from transferkit.engine.checkpoint import tensors_for_saving
from transferkit.engine.evaluate import module_device
from transferkit.errors import ConfigError

__all__ = [
    "compare_deployment",
    "count_parameters",
    "fixed_threads",
    "measure_deployment",
    "safetensors_bytes",
    "time_forward",
]


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements; a tensor shared by two modules is counted once."""
    return sum(p.numel() for p in module.parameters())  # parameters() de-duplicates


def safetensors_bytes(module: nn.Module) -> int:
    """Size in bytes of ``module.state_dict()`` written as a safetensors file."""
    with tempfile.TemporaryDirectory(prefix="tk-size-") as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(tensors_for_saving(module.state_dict()), str(path))
        return path.stat().st_size


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; the old value is restored."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def time_forward(module: nn.Module, inputs: Inputs, *, warmup: int, repeats: int) -> list[float]:
    """Seconds per forward pass for ``repeats`` timed passes after ``warmup`` untimed ones."""
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            module(inputs)
        for _ in range(repeats):
            t0 = time.perf_counter()
            module(inputs)
            times.append(time.perf_counter() - t0)
    return times


def _check(threads: int, warmup: int, repeats: int, batch: int) -> None:
    for name, value, low in (
        ("threads", threads, 1),
        ("warmup", warmup, 0),
        ("repeats", repeats, 1),
        ("throughput_batch", batch, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(
                f"{name}={value!r} must be an integer >= {low}",
                where=f"measure_deployment({name}=...)",
                fix="e.g. threads=1, warmup=3, repeats=20, throughput_batch=64",
            )


def measure_deployment(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    throughput_batch: int = 64,
) -> dict[str, Any]:
    """Parameters, safetensors size, CPU latency (batch 1) and throughput (batch 64).

    Args:
        model: a trained method (its prediction module is measured, see
            :func:`~transferkit.deploy.predict.predict_module`) or an ``nn.Module``.
        example_inputs: prepared inputs (tensor or dict of tensors), at least one example.
        threads: intra-op threads while timing; warmup / repeats: untimed / timed passes.
        throughput_batch: batch size of the throughput measurement.
    """
    _check(threads, warmup, repeats, throughput_batch)
    module = predict_module(model)
    if module_device(module).type != "cpu":
        module = copy.deepcopy(module).cpu()
    was_training = module.training
    module.eval()
    try:
        with fixed_threads(threads):
            one = time_forward(
                module, repeat_batch(example_inputs, 1), warmup=warmup, repeats=repeats
            )
            many = time_forward(
                module,
                repeat_batch(example_inputs, throughput_batch),
                warmup=warmup,
                repeats=repeats,
            )
    finally:
        module.train(was_training)
    return {
        "params": count_parameters(module),
        "size_bytes": safetensors_bytes(module),
        "latency_ms": 1000.0 * statistics.median(one),
        "throughput_per_s": throughput_batch / statistics.median(many),
        "throughput_batch": throughput_batch,
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "device": "cpu",
        "torch": torch.__version__,
    }


def compare_deployment(student: dict[str, Any], teacher: dict[str, Any]) -> dict[str, float]:
    """Teacher / student ratios: ``compression`` (params), ``size_ratio``, ``speedup``
    (batch-1 latency) and ``throughput_gain`` (student / teacher examples per second)."""
    return {
        "compression": teacher["params"] / max(student["params"], 1),
        "size_ratio": teacher["size_bytes"] / max(student["size_bytes"], 1),
        "speedup": teacher["latency_ms"] / student["latency_ms"],
        "throughput_gain": student["throughput_per_s"] / teacher["throughput_per_s"],
    }
