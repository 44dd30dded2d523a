"""``file:<path>``: backbones saved by transferkit, as safetensors (never pickle).

:func:`save_backbone` writes the backbone's ``state_dict`` with metadata
``{"format": "transferkit-backbone", "transferkit_spec": spec, "init_kwargs": json}``
atomically (temp file + fsync + rename). Loading rebuilds ``spec`` with
``pretrained=False`` and the stored ``init_kwargs`` (keyword arguments given to
``create_backbone`` override them), then loads the weights strictly. A whole Method state
dict saved by the trainer (keys prefixed ``backbone.``) is accepted too: the prefix is
stripped and the other keys (heads) are ignored; give ``backbone_spec=`` when it has no metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from transferkit.backbones.base import Backbone
from transferkit.errors import BackboneError, CheckpointError
from transferkit.utils.io import atomic_path

FORMAT = "transferkit-backbone"
PREFIX = "backbone."


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors; tensors sharing storage are copied (safetensors needs it)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[k] = t.clone() if t.numel() and ptr in seen else t
        seen.add(ptr)
    return out


def save_backbone(backbone: Backbone, path: str | Path) -> Path:
    """Write ``backbone``'s weights + spec + init kwargs to ``path`` (safetensors, atomic)."""
    path = Path(path)
    try:
        kwargs = json.dumps(backbone.init_kwargs)
    except TypeError as exc:
        raise CheckpointError(
            f"the backbone's init_kwargs are not JSON-serialisable ({exc})",
            where=backbone.spec,
            fix="create the backbone with plain keyword values (numbers, strings, lists)",
        ) from exc
    meta = {"format": FORMAT, "transferkit_spec": backbone.spec, "init_kwargs": kwargs}
    state = _unshared(backbone.state_dict())
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise BackboneError(
            f"no such checkpoint file: {path}",
            where=f"file:{path}",
            fix="check the path (a .safetensors file written by transferkit)",
        )
    if path.suffix.lower() in (".pt", ".pth", ".bin", ".ckpt", ".pkl"):
        raise BackboneError(
            f"{path.name} looks like a pickle checkpoint; file: reads safetensors only "
            "(unpickling can run arbitrary code)",
            where=f"file:{path}",
            fix="convert it: safetensors.torch.save_file(torch.load(p, weights_only=True), "
            "'model.safetensors')",
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return meta, load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BackboneError(
            f"not a readable safetensors file ({exc})",
            where=f"file:{path}",
            fix="pass a .safetensors file written by save_backbone",
        ) from exc


def _backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith(PREFIX) for k in state):
        return {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    return state


def load_backbone_file(name: str, pretrained: bool = True, **kw: Any) -> Backbone:
    """``file:<path>`` -> the saved backbone.

    With ``pretrained=False`` the same architecture is built, randomly initialised, and
    the saved weights are not loaded (the target-only baseline needs exactly that).
    """
    from transferkit.backbones.factory import create_backbone

    path = Path(name).expanduser()
    meta, state = _read(path)
    spec = kw.pop("backbone_spec", None) or meta.get("transferkit_spec")
    if not spec:
        raise BackboneError(
            "the checkpoint does not say which backbone it holds (no transferkit_spec)",
            where=f"file:{path}",
            fix="pass backbone_spec='<family>:<name>' (and its options) to create_backbone",
        )
    if spec.startswith("file:"):
        raise BackboneError("a checkpoint cannot point to another file: spec", where=str(path))
    init = json.loads(meta.get("init_kwargs") or "{}")
    init.update(kw)
    backbone = create_backbone(spec, pretrained=False, **init)
    if not pretrained:
        return backbone
    fix = "create it with the spec and options it was saved with"
    try:
        result = backbone.load_state_dict(_backbone_state(state), strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise BackboneError(
            f"checkpoint does not fit {spec}: {str(exc)[:400]}", where=f"file:{path}", fix=fix
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(
            f"checkpoint does not fit {spec}: {len(result.missing_keys)} missing keys "
            f"{result.missing_keys[:3]}, {len(result.unexpected_keys)} unexpected "
            f"{result.unexpected_keys[:3]}",
            where=f"file:{path}",
            fix=fix,
        )
    return backbone
