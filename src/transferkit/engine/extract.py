"""Feature extraction with a frozen backbone: batched, padding-aware, cached.

``extract_features(backbone, x)`` returns pooled features ``[N, D]`` (float32 numpy) of raw
inputs ``x`` (a list of strings, an image array or a list of image paths). Text is
processed in length-sorted order so each batch pads to similar lengths, then restored to
the input order. Results are cached in memory and, when ``cache_dir`` is given, on disk as
safetensors, keyed by a content hash of (backbone spec, weights, layers, inputs): running
the same extraction again is instant.
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

from transferkit.backbones.base import Backbone
from transferkit.engine.evaluate import module_device
from transferkit.utils.io import atomic_path

_MEMORY: dict[str, np.ndarray] = {}


def _weights_hash(backbone: Backbone) -> str:
    h = hashlib.sha256()
    for name, t in backbone.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _inputs_hash(x: Any) -> str:
    h = hashlib.sha256()
    if isinstance(x, np.ndarray):
        h.update(str((x.shape, x.dtype)).encode())
        h.update(np.ascontiguousarray(x).tobytes())
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


def _order(x: Any, modality: str) -> np.ndarray:
    if modality == "text":
        return np.argsort([len(s) for s in x], kind="stable")
    return np.arange(len(x))


def _take(x: Any, idx: np.ndarray) -> Any:
    return x[idx] if isinstance(x, np.ndarray) else [x[i] for i in idx]


@torch.inference_mode()
def _run(
    backbone: Backbone,
    x: Any,
    batch_size: int,
    device: torch.device,
    layers: Sequence[int] | None,
) -> list[np.ndarray]:
    order = _order(x, backbone.modality)
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        batch = send_to_device(backbone.prepare(_take(x, idx)), device)
        if layers is None:
            outs = [backbone(batch)]
        else:
            outs = backbone.forward_intermediates(batch, list(layers))
        chunks.append([o.float().cpu().numpy() for o in outs])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return [np.concatenate([c[j] for c in chunks])[inverse] for j in range(len(chunks[0]))]


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
    restored afterwards.
    """
    if len(x) == 0:
        raise ValueError("no inputs to extract features from")
    key = cache_key(backbone, x, layers)
    path = Path(cache_dir) / f"features-{key}.safetensors" if cache_dir else None
    if key not in _MEMORY and path is not None and path.is_file():
        stored = load_file(str(path))
        _MEMORY[key] = [stored[f"f{i}"] for i in range(len(stored))]
    if key not in _MEMORY:
        dev = torch.device(device) if device is not None else module_device(backbone)
        was_training = backbone.training
        backbone.eval()
        try:
            feats = _run(backbone, x, batch_size, dev, layers)
        finally:
            backbone.train(was_training)
        _MEMORY[key] = feats
        if path is not None:
            with atomic_path(path) as tmp:
                save_file({f"f{i}": f for i, f in enumerate(feats)}, str(tmp))
    feats = _MEMORY[key]
    return feats[0] if layers is None else list(feats)


def clear_memory_cache() -> None:
    """Forget every in-memory extraction (disk caches stay)."""
    _MEMORY.clear()
