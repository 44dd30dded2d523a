"""The frozen teacher of knowledge distillation: backbone + head, never trained.

:class:`FrozenTeacher` turns off gradients for every parameter, stays in eval mode
whatever ``train()`` is called with (so BatchNorm statistics and dropout never change), and
computes everything a distillation loss may need from one forward pass under
``torch.no_grad``:

* ``"t_logits"``: ``head(backbone(x))`` ``[B, C]``;
* ``"t_embed"``: the pooled features ``backbone(x)`` ``[B, D_t]`` (relational KD);
* ``"t_feats_<k>"``: the output of layer group ``k`` (non-negative index), full
  (``[B, C, H, W]`` / ``[B, L, D]``) or pooled ``[B, D_k]``
  (see :func:`transferkit.distill.features.forward_with_hints`).

The same function feeds the live path and the teacher cache, so both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from transferkit.backbones.base import Backbone, Prepared
from transferkit.backbones.taps import normalize_indices
from transferkit.distill.features import forward_with_hints

__all__ = ["FrozenTeacher", "feature_key"]


def feature_key(k: int) -> str:
    """Batch key of the teacher's layer-group ``k`` output: ``"t_feats_<k>"``."""
    return f"t_feats_{k}"


class FrozenTeacher(nn.Module):
    """A trained backbone + head used only to produce targets.

    Args:
        backbone: the teacher's feature extractor.
        head: maps ``[B, D_t]`` to logits ``[B, C]``.
    """

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Always eval mode: the teacher's BatchNorm / dropout never change."""
        del mode
        return super().train(False)

    def forward(self, x: Prepared) -> Tensor:
        """Teacher logits ``[B, C]`` (no gradients)."""
        with torch.no_grad():
            return self.head(self.backbone(x))

    def normalize_layers(self, indices: Sequence[int]) -> list[int]:
        """Layer-group indices as non-negative ints (negative ones count from the end)."""
        n = len(self.backbone.layer_groups())
        return normalize_indices(list(indices), n, "method.params.hint_layers (teacher)")

    @torch.no_grad()
    def outputs(
        self, x: Prepared, layers: Sequence[int] = (), *, pool: bool = False
    ) -> dict[str, Tensor]:
        """``{"t_logits", "t_embed", "t_feats_<k>" for k in layers}`` for prepared ``x``."""
        super().train(False)
        idx = self.normalize_layers(layers)
        embed, maps = forward_with_hints(self.backbone, x, idx, pool)
        out = {"t_logits": self.head(embed), "t_embed": embed}
        for k, m in zip(idx, maps, strict=True):
            out[feature_key(k)] = m
        return {k: v.detach() for k, v in out.items()}

    def prepare(self, raw: Any) -> Prepared:
        """The teacher backbone's own preprocessing of raw inputs."""
        return self.backbone.prepare(raw)
