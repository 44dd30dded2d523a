"""Teacher cache: run the frozen teacher ONCE over the training set, not every epoch.

Without random augmentation the teacher sees the same inputs every epoch, so its outputs
(logits, pooled embedding, hint maps; see :class:`~transferkit.distill.teacher.FrozenTeacher`)
can be computed once and replayed. :func:`teacher_outputs` returns them as float32 arrays
``[N, ...]`` in dataset order, kept in memory and, with ``cache_dir``, on disk as
``teacher-<key>.safetensors``. The key is a content hash of the teacher's spec and weights
(backbone and head), the hint layers, the pooling flag and the raw inputs (the hashing
helpers of :mod:`transferkit.engine.extract`), so a changed teacher or data set never
reuses stale outputs. The teacher prepares the raw inputs itself (its own resolution and
normalisation), whatever the student's preprocessing is.

Bounded memory. The disk copy is streamed: after the first batch fixes every output's
shape, the whole safetensors file (header, then one contiguous float32 block per output)
is preallocated and each batch is written into its rows through a memory map whose pages
are dropped as it goes (:class:`~transferkit.engine.extract.MappedFile`). The header's
``__metadata__`` records the format and the sha256 of the data block, filled in once the
data is complete; the file is written to a temporary name and renamed. Reading maps each
output read-only (no copy), after the checksum passes; a damaged or foreign file is
recomputed. Any safetensors reader (``safetensors.numpy.load_file``) reads the file too.

Full token maps of text teachers cannot be cached (their length depends on each batch's
padding): use pooled hints there, or the live teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import send_to_device

from transferkit.distill.teacher import FrozenTeacher
from transferkit.engine.evaluate import module_device
from transferkit.engine.extract import MappedFile, _inputs_hash, _weights_hash
from transferkit.errors import ConfigError, DataError
from transferkit.utils.io import atomic_path

__all__ = ["clear_teacher_memory", "teacher_cache_key", "teacher_outputs"]

log = logging.getLogger(__name__)
_MEMORY: dict[str, dict[str, np.ndarray]] = {}
FORMAT = "transferkit-teacher-cache-v2"
_PLACEHOLDER = "0" * 64
_MAX_HEADER = 100 << 20


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


def _batches(
    teacher: FrozenTeacher,
    x: Any,
    layers: Sequence[int],
    pool: bool,
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """``(rows, {output key: float32 array [B, ...]})`` per batch, in dataset order."""
    for start in range(0, len(x), batch_size):
        batch = send_to_device(teacher.prepare(_take(x, start, start + batch_size)), device)
        outs = teacher.outputs(batch, layers, pool=pool)
        stop = min(start + batch_size, len(x))
        yield slice(start, stop), {k: t.float().cpu().numpy() for k, t in outs.items()}


def _shapes(first: dict[str, np.ndarray], n: int, max_bytes: int) -> dict[str, tuple[int, ...]]:
    """Full output shapes ``[n, ...]`` from the first batch; refuse caches over budget."""
    shapes = {k: (n, *a.shape[1:]) for k, a in sorted(first.items())}
    total = sum(4 * int(np.prod(s)) for s in shapes.values())
    if total > max_bytes:
        raise ConfigError(
            f"the teacher cache would exceed {max_bytes / 2**30:.1f} GiB "
            f"({total / 2**30:.2f} GiB for {n} examples)",
            where="teacher cache",
            fix="use pooled hints (hint_pool: true), fewer hint layers, raise max_bytes, "
            "or turn the cache off",
        )
    return shapes


def _to_memory(
    batches: Iterator[tuple[slice, dict[str, np.ndarray]]], n: int, max_bytes: int
) -> dict[str, np.ndarray]:
    outs: dict[str, np.ndarray] = {}
    for rows, arrs in batches:
        if not outs:
            outs = {k: np.empty(s, np.float32) for k, s in _shapes(arrs, n, max_bytes).items()}
        for k, a in arrs.items():
            outs[k][rows] = a
    return outs


def _header(shapes: dict[str, tuple[int, ...]]) -> bytes:
    """A safetensors header (length prefix + JSON padded to 8 bytes) with a sha256 slot."""
    doc: dict[str, Any] = {"__metadata__": {"format": FORMAT, "sha256": _PLACEHOLDER}}
    begin = 0
    for k, s in shapes.items():
        end = begin + 4 * int(np.prod(s))
        doc[k] = {"dtype": "F32", "shape": list(s), "data_offsets": [begin, end]}
        begin = end
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text


def _sha256_from(path: Path, offset: int, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _write_file(
    path: Path, batches: Iterator[tuple[slice, dict[str, np.ndarray]]], n: int, max_bytes: int
) -> None:
    """Stream every batch into a preallocated safetensors file at ``path``; fill the sha256."""
    views: dict[str, np.ndarray] = {}
    mapped: MappedFile | None = None
    try:
        for rows, arrs in batches:
            if mapped is None:
                shapes = _shapes(arrs, n, max_bytes)
                head = _header(shapes)
                with open(path, "wb") as fh:
                    fh.write(head)
                    fh.truncate(len(head) + sum(4 * int(np.prod(s)) for s in shapes.values()))
                mapped, offset = MappedFile(path), len(head)
                for k, s in shapes.items():
                    views[k] = mapped.ndarray(offset, s, np.float32)
                    offset += views[k].nbytes
            for k, a in arrs.items():
                views[k][rows] = a
                mapped.wrote(a.nbytes)
    finally:
        views.clear()
        if mapped is not None:
            mapped.close()
    digest = _sha256_from(path, len(head))
    with open(path, "r+b") as fh:
        slot = b'"sha256":"' + _PLACEHOLDER.encode()
        fh.seek(head.index(slot) + len(slot) - len(_PLACEHOLDER))
        fh.write(digest.encode())


def read_cache_file(path: str | Path, n: int) -> dict[str, np.ndarray] | None:
    """The outputs stored in ``path`` as read-only memory maps, or None if unusable.

    Usable means: a safetensors file of this format whose data block has the recorded
    sha256 and whose float32 outputs all have ``n`` rows.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > _MAX_HEADER:
                raise ValueError(f"header of {size} bytes")
            doc = json.loads(fh.read(size))
        meta = doc.pop("__metadata__", {})
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        if _sha256_from(p, 8 + size) != meta.get("sha256"):
            raise ValueError("the data fails its sha256 check")
        out = {}
        for k, info in doc.items():
            begin, _ = info["data_offsets"]
            if info["dtype"] != "F32" or info["shape"][0] != n:
                raise ValueError(f"{k}: {info['dtype']} {info['shape']}")
            shape = tuple(info["shape"])
            out[k] = np.memmap(p, dtype=np.float32, mode="r", offset=8 + size + begin, shape=shape)
        return out
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        log.warning("teacher cache %s is unusable (%s): recomputing", p, exc)
        return None


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
        cache_dir: directory for the on-disk copy, streamed with bounded memory and
            returned as read-only memory maps (``None``: in memory only).
        max_bytes: refuse caches larger than this (full conv maps add up); checked after
            the first batch, before the rest of the data is read.

    Returns:
        ``{"t_logits": [N, C], "t_embed": [N, D_t], "t_feats_<k>": [N, ...]}`` float32.
    """
    if len(x) == 0:
        raise DataError("no inputs to run the teacher on", where="teacher cache")
    _check_cacheable(teacher, layers, pool)
    key = teacher_cache_key(teacher, x, layers, pool)
    path = Path(cache_dir) / f"teacher-{key}.safetensors" if cache_dir else None
    if key not in _MEMORY and path is not None and path.is_file():
        loaded = read_cache_file(path, len(x))
        if loaded is not None:
            _MEMORY[key] = loaded
    if key not in _MEMORY:
        dev = torch.device(device) if device is not None else module_device(teacher)
        with torch.inference_mode():
            batches = _batches(teacher, x, layers, pool, batch_size, dev)
            if path is None:
                _MEMORY[key] = _to_memory(batches, len(x), max_bytes)
            else:
                with atomic_path(path) as tmp:
                    _write_file(tmp, batches, len(x), max_bytes)
                loaded = read_cache_file(path, len(x))
                assert loaded is not None
                _MEMORY[key] = loaded
    return dict(_MEMORY[key])


def clear_teacher_memory() -> None:
    """Forget the in-memory teacher caches (disk copies stay)."""
    _MEMORY.clear()
