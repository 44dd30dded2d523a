"""One self-contained prediction module for deployment: prepared inputs -> outputs.

:func:`predict_module` turns a trained method into the module that is measured and
exported: for methods that own a ``backbone`` and a ``head`` (every supervised method,
the distillation student) exactly ``head(backbone(x))`` — no teacher, no regressors, no
loss modules — and otherwise a thin wrapper around ``method.predict``. Text models take
a dict of ``[B, L]`` tensors; :class:`PositionalInputs` exposes them as positional
arguments (in a fixed key order) for exporters that need a flat signature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from transferkit.errors import DataError
from transferkit.methods.base import Method

__all__ = ["BackboneHead", "PositionalInputs", "flat_inputs", "predict_module", "repeat_batch"]

Inputs = Tensor | Mapping[str, Tensor]


class BackboneHead(nn.Module):
    """``head(backbone(x))``, squeezed to ``[B]`` for regression."""

    def __init__(self, backbone: nn.Module, head: nn.Module, regression: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.regression = regression

    def forward(self, x: Any) -> Tensor:
        out = self.head(self.backbone(x))
        return out.squeeze(-1) if self.regression else out


class _MethodPredict(nn.Module):
    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: Any) -> Tensor:
        return self.method.predict(x)


def predict_module(obj: nn.Module) -> nn.Module:
    """The module to deploy for ``obj`` (a Method or any ``nn.Module``)."""
    if isinstance(obj, Method):
        backbone, head = getattr(obj, "backbone", None), getattr(obj, "head", None)
        if isinstance(backbone, nn.Module) and isinstance(head, nn.Module):
            return BackboneHead(backbone, head, getattr(obj, "task", None) == "regression")
        return _MethodPredict(obj)
    if isinstance(obj, nn.Module):
        return obj
    raise DataError(
        f"cannot deploy a {type(obj).__name__}",
        where="export / measure (model)",
        fix="pass a trained method or an nn.Module",
    )


class PositionalInputs(nn.Module):
    """Call a dict-input module with positional tensors ``forward(*tensors)``."""

    def __init__(self, module: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.keys = list(keys)

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.module(dict(zip(self.keys, tensors, strict=True)))


def flat_inputs(example: Inputs) -> tuple[list[str], tuple[Tensor, ...]]:
    """``(input names, tensors)``: ``(["x"], (x,))`` or the dict's keys and values."""
    if isinstance(example, Tensor):
        return ["x"], (example,)
    if (
        isinstance(example, Mapping)
        and example
        and all(isinstance(v, Tensor) for v in example.values())
    ):
        keys = list(example)
        return keys, tuple(example[k] for k in keys)
    raise DataError(
        f"example inputs must be a prepared tensor or a dict of tensors, got "
        f"{type(example).__name__}",
        where="example_inputs",
        fix="pass backbone.prepare(raw_examples)",
    )


def repeat_batch(example: Inputs, batch: int) -> Inputs:
    """A batch of ``batch`` copies of the first example (same shape otherwise)."""

    def rep(t: Tensor) -> Tensor:
        return t[:1].repeat(batch, *([1] * (t.ndim - 1))).contiguous()

    if isinstance(example, Tensor):
        return rep(example)
    return {k: rep(v) for k, v in example.items()}
