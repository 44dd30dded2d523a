"""The contract between algorithms and the trainer.

A :class:`Method` is an ``nn.Module`` that owns a backbone, its head(s) and its losses.
The trainer only ever calls:

* ``training_step(batch) -> {"loss": scalar tensor, other scalars...}``;
* ``predict(x) -> outputs`` (logits ``[B, C]`` for classification, ``[B]`` for regression);
* ``param_groups(base_lr) -> list[dict]`` for the optimizer: each dict has ``params``,
  ``lr`` (the multiplier is already applied, so stock schedulers honour it) and ``name``.

A batch is a dict: ``{"x": prepared inputs, "y": labels [B]}`` for supervised methods;
domain adaptation adds ``"x_t"`` (target inputs), multi-task adds one ``"y_<task>"`` per task.
Methods never move tensors between devices: the trainer places module and batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from transferkit.errors import ConfigError
from transferkit.registry import Registry


class MethodParams(BaseModel):
    """Base of every method's parameter schema (strict: unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Method(nn.Module):
    """Base class of every registered training algorithm.

    Class attributes describe it for ``transferkit methods``: ``name``, ``family``
    (``"feature-extraction"``, ``"fine-tuning"``, ``"domain-adaptation"``, ``"multi-task"``,
    ``"distillation"``), ``paper`` (citation + link) and ``Params`` (a :class:`MethodParams`
    schema whose field descriptions document the parameters). ``closed_form`` methods
    (e.g. a linear probe) are fitted on extracted features by ``fit_features`` instead of
    by the trainer.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    closed_form: ClassVar[bool] = False

    @classmethod
    def describe_params(cls) -> dict[str, str]:
        """Parameter name -> "type = default: description", for ``transferkit methods``."""
        out = {}
        for name, f in cls.Params.model_fields.items():
            ann = getattr(f.annotation, "__name__", None) or str(f.annotation)
            default = f.get_default(call_default_factory=True)
            out[name] = f"{ann} = {default!r}: {f.description or ''}".rstrip(": ")
        return out

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, x: Any) -> torch.Tensor:
        raise NotImplementedError

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Default: one group with every trainable parameter at ``base_lr``."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": base_lr, "name": "all"}]


METHODS: Registry[type[Method]] = Registry("method", ConfigError)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator registering ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS.register(cls.name)(cls)
    return cls
