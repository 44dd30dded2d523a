"""``create_backbone(spec)``: resolve a ``"<family>:<name>"`` spec to a Backbone.

Families (each its own module, imported only when used, since timm and transformers are
slow to import): ``timm``, ``torchvision``, ``hf``, ``packaged``, ``tk``, ``file``. Unknown
families and model names raise :class:`BackboneError` with close matches.
"""

from __future__ import annotations

import importlib
from typing import Any

from transferkit.backbones.base import Backbone
from transferkit.backbones.names import split_spec

BUILDERS: dict[str, tuple[str, str]] = {
    "timm": ("transferkit.backbones.timm_backbone", "build_timm"),
    "torchvision": ("transferkit.backbones.torchvision_backbone", "build_torchvision"),
    "hf": ("transferkit.backbones.hf", "build_hf"),
    "packaged": ("transferkit.backbones.packaged", "build_packaged"),
    "tk": ("transferkit.backbones.tk", "build_tk"),
    "file": ("transferkit.backbones.checkpoint", "load_backbone_file"),
}


def create_backbone(spec: str, pretrained: bool = True, **kw: Any) -> Backbone:
    """Build the backbone ``spec`` names, e.g. ``create_backbone("timm:resnet18")``.

    Args:
        spec: ``"timm:<name>"``, ``"torchvision:<name>"``, ``"hf:<hub id or directory>"``,
            ``"packaged:minilm-l6"``, ``"packaged:efficientnet-lite0"``, ``"tk:smallcnn"``,
            ``"tk:mlp"`` or ``"file:<path>.safetensors"``.
        pretrained: load pretrained weights (``False``: random initialisation).
        **kw: family options (``input_size``, ``in_chans``, ``pooling``, ...); the rest is
            passed to the underlying library.

    Returns:
        A :class:`Backbone` on the CPU, in training mode.
    """
    family, name = split_spec(spec)
    module, func = BUILDERS[family]
    build = getattr(importlib.import_module(module), func)
    return build(name, pretrained, **kw)
