"""Feature extraction with a frozen backbone: batched, padding-aware, cached, bounded memory.

``extract_features(backbone, x)`` returns pooled features ``[N, D]`` (float32) of raw inputs
``x`` (a list of strings, an image array or a list of image paths), or one ``[N, D_i]``
array per index in ``layers``. Text is processed in length-sorted order so each batch pads
to similar lengths; every batch is written straight to its rows of a preallocated output,
so the input order needs no reordering pass and nothing is concatenated.

Caching. Results are kept in memory and, with ``cache_dir``, on disk, keyed by a content
hash of (backbone spec, weights, layers, inputs). The disk copy streams batch by batch into
preallocated ``.npy`` files (``numpy.lib.format.open_memmap``), so extracting 100,000
examples needs about as much memory as extracting 10,000: the written pages are flushed
and dropped from the process every ``WINDOW_BYTES`` (see :class:`MappedFile`), and the
result is returned as a read-only memory map (``np.load(mmap_mode="r",
allow_pickle=False)``). One entry is ``features-<key>-<i>.npy`` per output plus the
manifest ``features-<key>.json`` (shapes and sha256 of every file). Each ``.npy`` is
written to a temporary file and renamed; the manifest is written last, so an interrupted
write never leaves a valid entry, and a damaged file fails its checksum and is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import send_to_device

from transferkit.backbones.base import Backbone
from transferkit.engine.evaluate import module_device
from transferkit.utils.io import atomic_path, atomic_write_json, sha256_file

log = logging.getLogger(__name__)

_MEMORY: dict[str, list[np.ndarray]] = {}
#: resident bytes written through a mapping before its pages are flushed and dropped
WINDOW_BYTES = 32 << 20
FORMAT = "transferkit-features-v2"
_HASH_CHUNK = 1 << 24


def _weights_hash(backbone: Backbone) -> str:
    h = hashlib.sha256()
    for name, t in backbone.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _inputs_hash(x: Any) -> str:
    """sha256 of the inputs; arrays are hashed in row blocks (a memory-mapped input is never
    copied whole), giving the same digest as hashing all their bytes at once."""
    h = hashlib.sha256()
    if isinstance(x, np.ndarray) and x.dtype != object:
        h.update(str((x.shape, x.dtype)).encode())
        if x.ndim == 0 or x.size == 0:
            h.update(np.ascontiguousarray(x).tobytes())
        else:
            rows = max(1, _HASH_CHUNK // max(1, x[0].nbytes))
            for start in range(0, len(x), rows):
                h.update(np.ascontiguousarray(x[start : start + rows]).tobytes())
    else:
        for item in x:
            h.update(str(item).encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
    return h.hexdigest()


def cache_key(backbone: Backbone, x: Any, layers: Sequence[int] | None) -> str:
    """Content hash identifying one extraction (backbone + weights + layers + inputs)."""
    h = hashlib.sha256()
    h.update(backbone.spec.encode())
    h.update(_weights_hash(backbone).encode())
    h.update(str(list(layers) if layers is not None else None).encode())
    h.update(_inputs_hash(x).encode())
    return h.hexdigest()[:32]


class MappedFile:
    """A preallocated file written through a shared memory map with bounded resident memory.

    Pages written through a shared file mapping stay resident, and count in the process's
    RSS, until the kernel needs the memory. :meth:`wrote` flushes the mapping and drops its
    pages (``madvise(MADV_DONTNEED)``; the data stays in the file) after every
    ``window_bytes`` written, so the resident set stays near ``window_bytes`` whatever the
    file size. Call :meth:`close` once every view from :meth:`ndarray` has been dropped.
    """

    def __init__(self, path: str | Path, window_bytes: int = WINDOW_BYTES) -> None:
        self._fh = open(path, "r+b")  # noqa: SIM115 (closed in close())
        self._mm = mmap.mmap(self._fh.fileno(), 0)
        self.window_bytes, self._pending = window_bytes, 0

    def ndarray(self, offset: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable array view of the file's bytes from ``offset``."""
        return np.ndarray(shape, dtype=dtype, buffer=self._mm, offset=offset)

    def wrote(self, nbytes: int) -> None:
        self._pending += nbytes
        if self._pending >= self.window_bytes:
            self.release()

    def release(self) -> None:
        """Write dirty pages back and drop the mapping's resident pages."""
        self._mm.flush()
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)
        self._pending = 0

    def close(self) -> None:
        self._mm.flush()
        self._mm.close()
        self._fh.close()


class NpyWriter:
    """Rows of a preallocated ``.npy`` file (``open_memmap`` header), written in batches."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any = np.float32) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        offset = header.offset
        del header  # only the header and the file size were wanted
        self._file = MappedFile(path)
        self._out: np.ndarray | None = self._file.ndarray(offset, shape, np.dtype(dtype))

    def write(self, rows: np.ndarray | slice, values: np.ndarray) -> None:
        assert self._out is not None
        self._out[rows] = values
        self._file.wrote(values.nbytes)

    def close(self) -> None:
        self._out = None  # the view must go before the mapping can close
        self._file.close()


def _order(x: Any, modality: str) -> np.ndarray:
    if modality == "text":
        return np.argsort([len(s) for s in x], kind="stable")
    return np.arange(len(x))


def _take(x: Any, idx: np.ndarray) -> Any:
    return x[idx] if isinstance(x, np.ndarray) else [x[i] for i in idx]


def _batches(
    backbone: Backbone,
    x: Any,
    batch_size: int,
    device: torch.device,
    layers: Sequence[int] | None,
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """``(row indices, [features of each output])`` per batch, under inference mode."""
    order = _order(x, backbone.modality)
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        with torch.inference_mode():
            batch = send_to_device(backbone.prepare(_take(x, idx)), device)
            if layers is None:
                outs = [backbone(batch)]
            else:
                outs = backbone.forward_intermediates(batch, list(layers))
            arrs = [o.float().cpu().numpy() for o in outs]
        yield idx, arrs


def _to_memory(batches: Iterator[tuple[np.ndarray, list[np.ndarray]]], n: int) -> list[np.ndarray]:
    outs: list[np.ndarray] = []
    for idx, arrs in batches:
        if not outs:
            outs = [np.empty((n, *a.shape[1:]), np.float32) for a in arrs]
        for out, a in zip(outs, arrs, strict=True):
            out[idx] = a
    return outs


def _entry_paths(cache_dir: Path, key: str, count: int) -> tuple[Path, list[Path]]:
    return cache_dir / f"features-{key}.json", [
        cache_dir / f"features-{key}-{i}.npy" for i in range(count)
    ]


def _to_disk(
    batches: Iterator[tuple[np.ndarray, list[np.ndarray]]],
    n: int,
    cache_dir: Path,
    key: str,
    count: int,
) -> list[np.ndarray]:
    """Stream every batch into ``count`` temporary ``.npy`` files; commit; return memmaps."""
    manifest, paths = _entry_paths(cache_dir, key, count)
    files: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(p)) for p in paths]
        writers: list[NpyWriter] = []
        shapes: list[tuple[int, ...]] = []
        try:
            for idx, arrs in batches:
                if not writers:
                    shapes = [(n, *a.shape[1:]) for a in arrs]
                    writers = [NpyWriter(t, s) for t, s in zip(tmps, shapes, strict=True)]
                for w, a in zip(writers, arrs, strict=True):
                    w.write(idx, a)
        finally:
            for w in writers:
                w.close()
        for p, t, s in zip(paths, tmps, shapes, strict=True):
            files.append({"name": p.name, "shape": list(s), "sha256": sha256_file(t)})
    atomic_write_json(manifest, {"format": FORMAT, "key": key, "examples": n, "files": files})
    loaded = load_cached(cache_dir, key, n)
    assert loaded is not None
    return loaded


def load_cached(cache_dir: str | Path, key: str, n: int) -> list[np.ndarray] | None:
    """The disk entry ``key`` as read-only memory maps, or None if absent or damaged.

    An entry counts only if its manifest exists and every file has the recorded sha256,
    shape ``[n, ...]`` and dtype float32; the files are read with ``allow_pickle=False``.
    """
    manifest = Path(cache_dir) / f"features-{key}.json"
    if not manifest.is_file():
        return None
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("examples") != n:
            raise ValueError(f"format {meta.get('format')!r}, {meta.get('examples')} examples")
        out = []
        for f in meta["files"]:
            path = manifest.parent / f["name"]
            if sha256_file(path) != f["sha256"]:
                raise ValueError(f"{f['name']} fails its sha256 check")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(arr.shape) != f["shape"] or arr.dtype != np.float32:
                raise ValueError(f"{f['name']} has shape {arr.shape} {arr.dtype}")
            out.append(arr)
        return out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("feature cache entry %s is unusable (%s): recomputing", manifest, exc)
        return None


def extract_features(
    backbone: Backbone,
    x: Any,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    layers: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Pooled features of ``x``: ``[N, D]``, or one ``[N, D_i]`` per index in ``layers``.

    The backbone runs in eval mode under ``torch.inference_mode``; its train/eval mode is
    restored afterwards. With ``cache_dir`` the result streams to disk and comes back as
    read-only memory maps (copy one with ``np.array(f)`` to modify it); without, it is an
    in-memory array. Either way the same object is returned for the same content key.
    """
    if len(x) == 0:
        raise ValueError("no inputs to extract features from")
    key = cache_key(backbone, x, layers)
    count = 1 if layers is None else len(layers)
    if key not in _MEMORY and cache_dir is not None:
        loaded = load_cached(cache_dir, key, len(x))
        if loaded is not None:
            _MEMORY[key] = loaded
    if key not in _MEMORY:
        dev = torch.device(device) if device is not None else module_device(backbone)
        was_training = backbone.training
        backbone.eval()
        try:
            batches = _batches(backbone, x, batch_size, dev, layers)
            if cache_dir is None:
                _MEMORY[key] = _to_memory(batches, len(x))
            else:
                _MEMORY[key] = _to_disk(batches, len(x), Path(cache_dir), key, count)
        finally:
            backbone.train(was_training)
    feats = _MEMORY[key]
    return feats[0] if layers is None else list(feats)


def clear_memory_cache() -> None:
    """Forget every in-memory extraction (disk caches stay)."""
    _MEMORY.clear()
