"""transferkit's own small architectures for fast CPU work: ``tk:smallcnn`` and ``tk:mlp``.

``tk:smallcnn``: ``depth`` blocks of 3x3 conv -> BatchNorm -> ReLU; block ``i`` has
``width * 2**i`` channels and stride 2 for ``i > 0``, followed by global average pooling,
so ``num_features = width * 2**(depth - 1)``. It runs on any input of at least 1x1 pixel
(8x8 digits, 28x28 MNIST, photos); images keep their native size unless ``input_size`` is
given. ``tk:mlp``: ``Linear -> ReLU`` per entry of ``hidden`` on feature vectors ``[B, F]``.

Both are randomly initialised (``pretrained`` is ignored: their weights come from ``file:``
checkpoints) and deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from transferkit.backbones.base import Prepared, Preprocess
from transferkit.backbones.preprocess import parse_size, prepare_images, prepare_vectors
from transferkit.backbones.taps import PoolRule, TappedBackbone
from transferkit.errors import BackboneError


def _positive_int(value: Any, name: str, spec: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BackboneError(
            f"{name} must be a positive integer, got {value!r}", where=spec, fix=f"e.g. {name}=32"
        )
    return value


class SmallCNN(TappedBackbone):
    """Conv-BN-ReLU blocks + global average pooling: ``[B, C, H, W] -> [B, width*2^(d-1)]``."""

    def __init__(
        self,
        in_chans: int = 1,
        width: int = 32,
        depth: int = 3,
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.spec = "tk:smallcnn"
        self.modality = "image"
        in_chans = _positive_int(in_chans, "in_chans", self.spec)
        width = _positive_int(width, "width", self.spec)
        depth = _positive_int(depth, "depth", self.spec)
        size = parse_size(input_size, self.spec) if input_size is not None else (0, 0)
        self.init_kwargs = {"in_chans": in_chans, "width": width, "depth": depth}
        if input_size is not None:
            self.init_kwargs["input_size"] = list(size)
        self.preprocess = Preprocess(
            "image", mean=(0.5,) * in_chans, std=(0.5,) * in_chans, input_size=(in_chans, *size)
        )
        blocks, c_in = [], in_chans
        for i in range(depth):
            c_out = width * 2**i
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                )
            )
            c_in = c_out
        self.model = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.pool_rule = PoolRule()
        self.num_features = c_in
        h, w = size if size != (0, 0) else (8, 8)
        self._init_groups(
            [f"block{i}" for i in range(depth)],
            [[f"{i}.0.weight", f"{i}.1.weight", f"{i}.1.bias"] for i in range(depth)],
            [lambda: torch.zeros(2, in_chans, h, w)],
        )

    def forward(self, x: Prepared) -> torch.Tensor:
        return self.model(x)

    def prepare(self, raw: Any) -> torch.Tensor:
        return prepare_images(raw, self.preprocess)


class MLP(TappedBackbone):
    """``Linear -> ReLU`` stack on feature vectors: ``[B, in_features] -> [B, hidden[-1]]``."""

    def __init__(self, in_features: int | None = None, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.spec = "tk:mlp"
        self.modality = "vector"
        if in_features is None:
            raise BackboneError(
                "tk:mlp needs in_features (the number of input columns)",
                where=self.spec,
                fix="create_backbone('tk:mlp', in_features=<F>)",
            )
        in_features = _positive_int(in_features, "in_features", self.spec)
        if isinstance(hidden, int) or not hidden:
            raise BackboneError(
                f"hidden must be a non-empty list of layer widths, got {hidden!r}",
                where=self.spec,
                fix="e.g. hidden=[256, 256]",
            )
        widths = [_positive_int(h, "hidden", self.spec) for h in hidden]
        self.init_kwargs = {"in_features": in_features, "hidden": widths}
        self.preprocess = Preprocess("vector", extra={"in_features": in_features})
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_features, *widths[:-1]], widths, strict=True):
            layers += [nn.Linear(c_in, c_out), nn.ReLU()]
        self.model = nn.Sequential(*layers)
        self.pool_rule = PoolRule()
        self.in_features = in_features
        self.num_features = widths[-1]
        self._init_groups(
            [f"linear{i}" for i in range(len(widths))],
            [[f"{2 * i}.weight", f"{2 * i}.bias"] for i in range(len(widths))],
            [lambda: torch.zeros(2, in_features)],
        )

    def forward(self, x: Prepared) -> torch.Tensor:
        return self.model(x)

    def prepare(self, raw: Any) -> torch.Tensor:
        return prepare_vectors(raw, self.in_features)


def build_tk(name: str, pretrained: bool = True, **kw: Any) -> TappedBackbone:
    """``tk:<name>`` -> :class:`SmallCNN` or :class:`MLP` (``pretrained`` is ignored)."""
    del pretrained  # random init only; trained weights come from file: checkpoints
    classes = {"smallcnn": SmallCNN, "mlp": MLP}
    if name not in classes:
        from transferkit.backbones.names import unknown_name_error

        raise unknown_name_error("tk", name)
    try:
        return classes[name](**kw)
    except TypeError as exc:
        raise BackboneError(
            f"tk:{name} got an unknown option ({exc})",
            where=f"tk:{name}",
            fix="smallcnn takes in_chans, width, depth, input_size; mlp takes in_features, hidden",
        ) from exc
