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
checkpoint. Loading verifies both checksums and raises
:class:`~transferkit.errors.CheckpointError` on any mismatch.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

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
    """Write ``state_dict`` as safetensors at ``path`` (fsynced); return its sha256."""
    save_file(tensors_for_saving(state_dict), str(path), metadata={"format": "pt"})
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
        """Write checkpoint ``name`` atomically and point ``latest`` at it."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            sha = save_weights(tmp / WEIGHTS, weights)
            torch.save({**state, "format": FORMAT, "weights_sha256": sha}, tmp / STATE)
            _fsync_path(tmp / STATE)
            manifest = {"format": FORMAT, "files": {WEIGHTS: sha, STATE: sha256_file(tmp / STATE)}}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _fsync_path(tmp / MANIFEST)
            _fsync_path(tmp)
            final = self.root / name
            if final.exists():
                old = self.root / f".old-{name}-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                shutil.rmtree(old)
            tmp.rename(final)
            _fsync_path(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(self.root / LATEST, name + "\n")
        _fsync_path(self.root)
        self._prune(keep=name)
        return final

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
