"""The one surface every backbone exposes, whatever hub it came from.

A :class:`Backbone` maps *prepared* inputs to pooled features ``[B, D]``:

* image backbones take a float tensor ``[B, C, H, W]`` (already normalised);
* text backbones take a dict of tensors from the tokenizer
  (``input_ids``, ``attention_mask``, ... each ``[B, L]``);
* vector backbones (``tk:mlp``) take a float tensor ``[B, F]``.

``prepare(raw)`` turns raw user inputs (strings, PIL images, uint8/float numpy arrays,
tensors, grayscale or RGB) into exactly that form on the CPU, so users never write
preprocessing code. Layer groups are data: ``layer_groups()`` lists the groups from
input to output, each with the names of its parameters, which is what freezing,
discriminative learning rates and gradual unfreezing work on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Modality = Literal["image", "text", "vector"]
Prepared = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class LayerGroup:
    """A contiguous block of a backbone, ordered from input to output.

    Attributes:
        name: human-readable name (``"stem"``, ``"stages.2"``, ``"encoder.layer.3"``).
        param_names: names (as in ``backbone.named_parameters()``) of its parameters.
        dim: dimension of the pooled feature this group outputs (``forward_intermediates``).
    """

    name: str
    param_names: tuple[str, ...]
    dim: int


@dataclass
class Preprocess:
    """What ``prepare`` does to raw inputs; stored so a checkpoint can rebuild it.

    Image: ``mean``/``std`` per channel in [0, 1] units, ``input_size`` ``(C, H, W)``.
    Text: ``tokenizer`` (a Hugging Face tokenizer) and ``max_length``.
    """

    modality: Modality
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int, int] | None = None
    interpolation: str = "bilinear"
    tokenizer: Any = None
    max_length: int = 128
    extra: dict[str, Any] = field(default_factory=dict)


class Backbone(nn.Module, ABC):
    """Pretrained (or randomly initialised) feature extractor with a uniform surface.

    Attributes:
        spec: the spec string it was created from (``"timm:resnet18"``).
        modality: ``"image"``, ``"text"`` or ``"vector"``.
        num_features: ``D``, the size of ``forward``'s output.
        preprocess: how raw inputs are prepared.
        init_kwargs: keyword arguments given to ``create_backbone`` (for ``file:`` reload).
    """

    spec: str
    modality: Modality
    num_features: int
    preprocess: Preprocess
    init_kwargs: dict[str, Any]

    @abstractmethod
    def forward(self, x: Prepared) -> torch.Tensor:
        """Pooled features ``[B, num_features]``."""

    @abstractmethod
    def layer_groups(self) -> list[LayerGroup]:
        """Layer groups ordered input -> output; every trainable parameter is in exactly one."""

    @abstractmethod
    def forward_intermediates(self, x: Prepared, indices: Sequence[int]) -> list[torch.Tensor]:
        """Pooled outputs ``[B, D_i]`` of the layer groups ``indices``, from ONE forward pass.

        Negative indices count from the end; the last group's pooled output equals
        ``forward(x)``.
        """

    @abstractmethod
    def prepare(self, raw: Any) -> Prepared:
        """Turn a batch of raw inputs into the tensor(s) ``forward`` takes (on the CPU)."""

    def group_index_of(self) -> dict[str, int]:
        """Map each parameter name to the index of its layer group."""
        return {p: i for i, g in enumerate(self.layer_groups()) for p in g.param_names}
