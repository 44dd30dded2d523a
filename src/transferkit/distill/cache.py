"""Teacher cache: run the frozen teacher ONCE over the training set, not every epoch.

Without random augmentation the teacher sees the same inputs every epoch, so its outputs
(logits, pooled embedding, hint maps; see :class:`~transferkit.distill.teacher.FrozenTeacher`)
can be computed once and replayed. :func:`teacher_outputs` returns them as float32 numpy
arrays ``[N, ...]`` in dataset order, kept in memory and, with ``cache_dir``, on disk as
``teacher-<key>.safetensors``. The key is a content hash of the teacher's spec and weights
(backbone and head), the hint layers, the pooling flag and the raw inputs (the hashing
helpers of :mod:`transferkit.engine.extract`), so a changed teacher or data set never
reuses stale outputs. The teacher prepares the raw inputs itself (its own resolution and
normalisation), whatever the student's preprocessing is.

Full token maps of text teachers cannot be cached (their length depends on each batch's
padding): use pooled hints there, or the live teacher.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import send_to_device
from safetensors.numpy import load_file, save_file

from transferkit.distill.teacher import FrozenTeacher
from transferkit.engine.evaluate import module_device
from transferkit.engine.extract import _inputs_hash, _weights_hash
from transferkit.errors import ConfigError, DataError
from transferkit.utils.io import atomic_path

__all__ = ["clear_teacher_memory", "teacher_cache_key", "teacher_outputs"]

_MEMORY: dict[str, dict[str, np.ndarray]] = {}


def teacher_cache_key(teacher: FrozenTeacher, x: Any, layers: Sequence[int], pool: bool) -> str:
    """Content hash of (teacher spec + weights, hint layers, pooling, inputs)."""
    h = hashlib.sha256()
    h.update(b"teacher-cache-v1\x00")
    h.update(str(getattr(teacher.backbone, "spec", type(teacher.backbone).__name__)).encode())
    h.update(_weights_hash(teacher).encode())  # type: ignore[arg-type]
    h.update(str(teacher.normalize_layers(layers)).encode())
    h.update(b"pool" if pool else b"full")
    h.update(_inputs_hash(x).encode())
    return h.hexdigest()[:32]


def _take(x: Any, start: int, stop: int) -> Any:
    return x[start:stop] if isinstance(x, np.ndarray) else list(x[start:stop])


def _check_cacheable(teacher: FrozenTeacher, layers: Sequence[int], pool: bool) -> None:
    if layers and not pool and teacher.backbone.modality == "text":
        raise ConfigError(
            "full token maps of a text teacher cannot be cached: their length changes with "
            "each batch's padding",
            where="method.params.hint_layers / teacher cache",
            fix="set hint_pool: true, or turn the teacher cache off (live teacher)",
        )


def _compute(
    teacher: FrozenTeacher,
    x: Any,
    layers: Sequence[int],
    pool: bool,
    batch_size: int,
    device: torch.device,
    max_bytes: int,
) -> dict[str, np.ndarray]:
    chunks: dict[str, list[np.ndarray]] = {}
    total = 0
    for start in range(0, len(x), batch_size):
        batch = send_to_device(teacher.prepare(_take(x, start, start + batch_size)), device)
        for key, t in teacher.outputs(batch, layers, pool=pool).items():
            arr = t.float().cpu().numpy()
            total += arr.nbytes
            chunks.setdefault(key, []).append(arr)
        if total > max_bytes:
            raise ConfigError(
                f"the teacher cache would exceed {max_bytes / 2**30:.1f} GiB "
                f"(after {start + batch_size} of {len(x)} examples)",
                where="teacher cache",
                fix="use pooled hints (hint_pool: true), fewer hint layers, raise max_bytes, "
                "or turn the cache off",
            )
    return {k: np.concatenate(v) for k, v in chunks.items()}


def teacher_outputs(
    teacher: FrozenTeacher,
    x: Any,
    *,
    layers: Sequence[int] = (),
    pool: bool = False,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    max_bytes: int = 2 * 2**30,
) -> dict[str, np.ndarray]:
    """Teacher outputs for every raw example in ``x``, in order (cached).

    Args:
        teacher: the frozen teacher.
        x: raw inputs (list of strings, image array ``[N, H, W(, C)]``, vectors ``[N, F]``).
        layers: teacher layer-group indices of the hints (``"t_feats_<k>"`` keys).
        pool: pooled ``[N, D_k]`` hints instead of full maps.
        batch_size: teacher batch size; device: where to run it (default: its own).
        cache_dir: directory for the on-disk copy (``None``: memory only).
        max_bytes: refuse caches larger than this (full conv maps add up).

    Returns:
        ``{"t_logits": [N, C], "t_embed": [N, D_t], "t_feats_<k>": [N, ...]}`` float32.
    """
    if len(x) == 0:
        raise DataError("no inputs to run the teacher on", where="teacher cache")
    _check_cacheable(teacher, layers, pool)
    key = teacher_cache_key(teacher, x, layers, pool)
    path = Path(cache_dir) / f"teacher-{key}.safetensors" if cache_dir else None
    if key not in _MEMORY and path is not None and path.is_file():
        _MEMORY[key] = dict(load_file(str(path)))
    if key not in _MEMORY:
        dev = torch.device(device) if device is not None else module_device(teacher)
        outs = _compute(teacher, x, layers, pool, batch_size, dev, max_bytes)
        _MEMORY[key] = outs
        if path is not None:
            with atomic_path(path) as tmp:
                save_file(outs, str(tmp))
    return dict(_MEMORY[key])


def clear_teacher_memory() -> None:
    """Forget the in-memory teacher caches (disk copies stay)."""
    _MEMORY.clear()
