"""Reproducible data order: one seeded permutation per epoch.

The permutation of epoch ``e`` is ``torch.randperm(N, generator=g)`` with ``g`` seeded from
``(seed, e)`` (through ``numpy.random.SeedSequence``, so nearby seeds and epochs give
unrelated streams). It depends on nothing else: not on the global RNG, not on how many
batches were drawn before. A resumed run regenerates the permutation of its epoch and skips
the batches it already consumed (``Accelerator.skip_first_batches``).

Under multi-process training Accelerate shards the batches of this sampler across
processes (``BatchSamplerShard`` with ``split_batches``, see ``engine.accel``): each global
batch of ``batch_size`` examples is cut into one contiguous slice per process, so the
batches, and the number of steps, are those of a 1-process run. Every process computes
the same permutation, so no synchronisation is needed. A short last batch is the one
exception: Accelerate completes it to ``batch_size`` with the first examples of the epoch,
so that every process gets an equal slice (:func:`build_train_loader` says so).

The ``DataLoader`` gets a private ``torch.Generator`` (re-seeded per epoch), so creating an
iterator never draws from the global RNG: dropout masks after a resume line up with those
of an uninterrupted run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from transferkit.errors import DataError

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed derived from ``(seed, epoch, stream)``."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


class EpochPermutationSampler(Sampler[int]):
    """Yields a permutation of ``range(num_items)`` that depends only on (seed, epoch)."""

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def permutation(self, epoch: int | None = None) -> torch.Tensor:
        """The index order of ``epoch`` (default: the current epoch)."""
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, self.epoch if epoch is None else epoch))
        return torch.randperm(self.num_items, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.num_items


def build_train_loader(
    dataset: torch.utils.data.Dataset,
    collate_fn: Callable[[list[Any]], Any] | None,
    *,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
) -> tuple[DataLoader, EpochPermutationSampler]:
    """A shuffling ``DataLoader`` over a map-style dataset, and its sampler."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as exc:
        raise DataError(
            "the training dataset has no length",
            where=type(dataset).__name__,
            fix="pass a map-style torch Dataset (with __len__ and __getitem__)",
        ) from exc
    if n == 0 or (drop_last and n < batch_size):
        raise DataError(
            f"the training dataset yields no batch ({n} examples, batch_size={batch_size}, "
            f"drop_last={drop_last})",
            where=type(dataset).__name__,
            fix="provide more training examples or a smaller batch_size",
        )
    _warn_padded_last_batch(n, batch_size, drop_last)
    sampler = EpochPermutationSampler(n, seed)
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, 0, stream=1))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=False,
    )
    return loader, sampler


def _warn_padded_last_batch(n: int, batch_size: int, drop_last: bool) -> None:
    """Warn (main process) when several processes will pad the epoch's short last batch."""
    from transferkit.engine import accel

    procs = accel.num_processes()
    if procs == 1 or drop_last or n % batch_size == 0 or not accel.is_main_process():
        return
    log.warning(
        "the last batch of each epoch holds %d of %d examples; with %d processes it is "
        "completed with examples from the start of the epoch (each process needs %d), so "
        "this run differs slightly from a 1-process run (use a training set size that is "
        "a multiple of batch_size for identical batches)",
        n % batch_size,
        batch_size,
        procs,
        batch_size // procs,
    )


def reseed_loader(loader: DataLoader, seed: int, epoch: int) -> None:
    """Re-seed the loader's private generator (worker base seeds) for ``epoch``."""
    if loader.generator is not None:
        loader.generator.manual_seed(epoch_seed(seed, epoch, stream=1))


def lone_batchnorm_batch(method: nn.Module, dataset: Any, config: Any) -> bool:
    """True when the last batch would hold one example and ``method`` has BatchNorm.

    Batch norm cannot train on a single example (torch raises); the trainer then drops that
    last batch (a different example each epoch, as the order changes) and says so.
    """
    n, bs = len(dataset), config.batch_size
    if n % bs != 1 or n == 1:
        return False
    bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in method.modules())
    if bn:
        log.warning(
            "dropping the last batch of each epoch: it would hold 1 example, which BatchNorm "
            "cannot train on (choose a batch_size that does not leave 1 example over)"
        )
    return bn
