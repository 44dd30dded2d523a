"""Crash-safe checkpoints: safetensors weights + pickle-free trainer state.

Layout under ``run_dir/checkpoints/``::

    latest                      name of the newest complete checkpoint (atomic pointer)
    ckpt-00000120-step/
        model.safetensors       method.state_dict() (same keys; shared tensors cloned)
        trainer_state.pt        torch.save of plain containers + tensors, loaded with
                                torch.load(weights_only=True): optimizer, scheduler, RNG
                                states, counters, callback states, history, sha256 of
                                model.safetensors
        manifest.json           sha256 of both files

A checkpoint is written into a hidden temporary directory, every file is fsynced, the
directory is renamed into place and only then ``latest`` is replaced (temp file + rename).
A process killed at any moment therefore leaves ``latest`` pointing at a complete
checkpoint (a killed write leaves a ``.tmp-*`` directory, which nothing reads and the next
save removes). A checkpoint directory is never replaced in place. A write that fails (disk
full, read-only directory) removes what it wrote and raises
:class:`~transferkit.errors.CheckpointError` naming the checkpoint that was kept. Loading
verifies both checksums and raises :class:`~transferkit.errors.CheckpointError` on any
mismatch. :func:`dataset_fingerprint` and :func:`method_signature` describe the data and
the method a checkpoint was written for (``engine.state`` refuses a resume when they
differ).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from transferkit.errors import CheckpointError
from transferkit.utils.io import atomic_write_text, sha256_file

FORMAT = 1
WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"
MANIFEST = "manifest.json"
LATEST = "latest"
_FIX = (
    "start the run again without resume (the checkpoints will be replaced), or restore "
    "the checkpoints directory from a backup"
)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (if present) CUDA RNG states as loadable containers."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def tensors_for_saving(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no storage shared between keys (safetensors needs it).

    Tied weights (two keys, one storage) are cloned, so every key of ``state_dict`` is kept
    and loading gives back exactly ``state_dict``.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state_dict.items():
        t = value.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        whole = storage.nbytes() == t.numel() * t.element_size()
        if storage.data_ptr() in seen or not whole:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> str:
    """Write ``state_dict`` as safetensors at ``path`` (fsynced); return its sha256.

    An I/O failure inside safetensors (which reports it as ``SafetensorError: ... (os error
    28)``) is raised as the ``OSError`` it is, so callers can tell a full disk.
    """
    try:
        save_file(tensors_for_saving(state_dict), str(path), metadata={"format": "pt"})
    except SafetensorError as exc:
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        num = int(code.group(1))
        raise OSError(num, os.strerror(num), str(path)) from exc
    _fsync_path(path)
    return sha256_file(path)


def load_weights(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read safetensors weights, checking the sha256 first when it is given."""
    if not path.is_file():
        raise CheckpointError("the weights file is missing", where=str(path), fix=_FIX)
    if sha256 is not None and sha256_file(path) != sha256:
        raise CheckpointError(
            "the weights file does not match its recorded sha256 (it was truncated or modified)",
            where=str(path),
            fix=_FIX,
        )
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"the weights file cannot be read ({exc})", where=str(path), fix=_FIX
        ) from exc


class CheckpointStore:
    """Writes, finds and reads the checkpoints of one run (see module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def clear(self) -> None:
        """Remove every checkpoint and temporary directory (a fresh start)."""
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if p.name.startswith(("ckpt-", ".tmp-", ".old-", "best-")) or p.name == LATEST:
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    def save(self, name: str, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
        """Write checkpoint ``name`` atomically and point ``latest`` at it.

        An existing checkpoint is never replaced in place: if ``name`` is taken, the new one
        is written as ``name.1`` (``name.2``, ...). Any failure (a full disk, a read-only
        directory) removes the temporary directory, leaves ``latest`` on the previous
        checkpoint and raises :class:`~transferkit.errors.CheckpointError`.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._write_error(exc, name) from exc
        final = self._free_name(name)
        tmp = self.root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            self._write_files(tmp, weights, state)
            tmp.rename(final)
            atomic_write_text(self.root / LATEST, final.name + "\n")
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.exists() and not self._is_latest(final.name):
                shutil.rmtree(final, ignore_errors=True)
            if isinstance(exc, OSError):
                raise self._write_error(exc, final.name) from exc
            raise
        with contextlib.suppress(OSError):  # the rename is done; durability is best effort
            _fsync_path(self.root)
        self._prune(keep=final.name)
        return final

    def _is_latest(self, name: str) -> bool:
        pointer = self.root / LATEST
        return pointer.is_file() and pointer.read_text().strip() == name

    def _free_name(self, name: str) -> Path:
        final, n = self.root / name, 0
        while final.exists():
            n += 1
            final = self.root / f"{name}.{n}"
        return final

    @staticmethod
    def _write_files(tmp: Path, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        sha = save_weights(tmp / WEIGHTS, weights)
        torch.save({**state, "format": FORMAT, "weights_sha256": sha}, tmp / STATE)
        _fsync_path(tmp / STATE)
        manifest = {"format": FORMAT, "files": {WEIGHTS: sha, STATE: sha256_file(tmp / STATE)}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _fsync_path(tmp / MANIFEST)
        _fsync_path(tmp)

    def _write_error(self, exc: OSError, name: str) -> CheckpointError:
        """A CheckpointError for a failed write; names the checkpoint that is kept."""
        pointer = self.root / LATEST
        kept = pointer.read_text().strip() if pointer.is_file() else None
        keeps = (
            f"the previous checkpoint {kept} is intact and `resume` continues from it"
            if kept
            else "no earlier checkpoint exists"
        )
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what, fix = "no space left on the device", "free disk space (or use another --out)"
        else:
            what = exc.strerror or type(exc).__name__
            fix = "make the run directory writable (or use another --out)"
        return CheckpointError(
            f"could not write checkpoint {name}: {what}; {keeps}",
            where=str(self.root),
            fix=f"{fix}, then resume",
        )

    def _prune(self, keep: str) -> None:
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith(("ckpt-", ".tmp-", ".old-")) and p.name != keep:
                shutil.rmtree(p, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint directory, or None when there is none."""
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        path = self.root / name
        if not name or not path.is_dir():
            raise CheckpointError(
                f"'latest' names checkpoint {name!r}, which does not exist",
                where=str(pointer),
                fix=_FIX,
            )
        return path

    def load(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Verify and read a checkpoint: ``(weights, trainer_state)``."""
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"the checkpoint manifest is missing or unreadable ({exc})",
                where=str(path / MANIFEST),
                fix=_FIX,
            ) from exc
        if not (path / STATE).is_file() or sha256_file(path / STATE) != files.get(STATE):
            raise CheckpointError(
                "the trainer state is missing or does not match its recorded sha256",
                where=str(path / STATE),
                fix=_FIX,
            )
        try:
            state = torch.load(path / STATE, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"the trainer state cannot be read ({exc})", where=str(path / STATE), fix=_FIX
            ) from exc
        if state.get("format") != FORMAT or state.get("weights_sha256") != files.get(WEIGHTS):
            raise CheckpointError(
                "the trainer state does not belong to these weights (format or checksum differs)",
                where=str(path),
                fix=_FIX,
            )
        return load_weights(path / WEIGHTS, files.get(WEIGHTS)), state


# ------------------------------------------------- what a checkpoint must match on resume
FINGERPRINT_ITEMS = 256


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` (tensors, arrays, strings, numbers, containers) into ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray) and obj.dtype != object:
        h.update(f"a{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, str | bytes | os.PathLike):
        raw = os.fsencode(obj) if not isinstance(obj, str) else obj.encode("utf-8", "replace")
        h.update(b"s%d:" % len(raw) + raw)
    elif obj is None or isinstance(obj, bool | int | float | complex | np.generic):
        h.update(f"n{obj!r};".encode())
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for key in sorted(obj, key=str):
            _feed(h, str(key))
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, list | tuple | np.ndarray):
        h.update(b"[")
        for x in obj:
            _feed(h, x)
        h.update(b"]")
    elif callable(getattr(obj, "tobytes", None)):  # PIL images and the like
        h.update(type(obj).__name__.encode() + obj.tobytes())
    else:
        h.update(f"?{type(obj).__qualname__}".encode())


def dataset_fingerprint(dataset: Any, max_items: int = FINGERPRINT_ITEMS) -> str:
    """sha256 of up to ``max_items`` evenly spaced items (all of them for small sets).

    Items must be a deterministic function of their index (as exact resume already
    requires). A dataset may define ``fingerprint() -> str`` to replace this.
    """
    own = getattr(dataset, "fingerprint", None)
    if callable(own):
        return str(own())
    n = len(dataset)
    h = hashlib.sha256(f"n={n}".encode())
    picks = np.linspace(0, n - 1, min(n, max_items)).round().astype(np.int64)
    for i in sorted(set(picks.tolist())):
        h.update(b"#%d" % i)
        _feed(h, dataset[i])
    return h.hexdigest()


def method_signature(method: nn.Module) -> dict[str, Any]:
    """The method's class and hyper-parameters (its ``hparams``, when it has them)."""
    cls = type(method)
    hp = getattr(method, "hparams", None)
    params = hp.model_dump(mode="json") if isinstance(hp, BaseModel) else None
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "params": params}
