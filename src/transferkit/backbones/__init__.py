"""Backbones: one small surface over timm, torchvision, transformers and transferkit's own.

``create_backbone(spec)`` resolves ``"timm:<name>"``, ``"torchvision:<name>"``,
``"hf:<hub id or dir>"``, ``"packaged:minilm-l6"``, ``"packaged:efficientnet-lite0"``,
``"tk:smallcnn"``, ``"tk:mlp"`` and ``"file:<path>"``; ``save_backbone`` writes the
checkpoints ``file:`` reads. See :class:`~transferkit.backbones.base.Backbone` for the surface.
"""

from __future__ import annotations

from transferkit.backbones.base import Backbone, LayerGroup, Preprocess
from transferkit.backbones.catalog import describe_families, list_packaged, models_table
from transferkit.backbones.checkpoint import save_backbone
from transferkit.backbones.factory import create_backbone

__all__ = [
    "Backbone",
    "LayerGroup",
    "Preprocess",
    "create_backbone",
    "describe_families",
    "list_packaged",
    "models_table",
    "save_backbone",
]
