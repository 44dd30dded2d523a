"""Fine-tuning: train (part of) a pretrained backbone together with a new head.

Freezing works on the backbone's layer groups (input -> output): ``freeze="all_but_head"``
trains only the head (the backbone's BatchNorm statistics stay fixed too), ``freeze=k``
freezes the first ``k`` groups, ``freeze="none"`` trains everything. The backbone's
learning rate is ``lr * backbone_lr_mult`` and is written into its parameter group's
``lr`` so stock schedulers scale it (Howard & Ruder 2018, "Universal Language Model
Fine-tuning for Text Classification", https://arxiv.org/abs/1801.06146).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.supervised import SupervisedMethod, TaskKind

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class FinetuneParams(MethodParams):
    freeze: str | int = Field(
        "none", description='"none", "all_but_head", or k = freeze the first k layer groups'
    )
    backbone_lr_mult: float = Field(0.1, gt=0, description="backbone lr = lr * this")
    bn_eval_when_frozen: bool = Field(True, description="keep frozen BatchNorm in eval mode")


@register_method
class Finetune(SupervisedMethod):
    """Fine-tune a backbone with a new head (full, partial or head only)."""

    name: ClassVar[str] = "finetune"
    family: ClassVar[str] = "fine-tuning"
    paper: ClassVar[str] = (
        "Yosinski et al. 2014, How transferable are features in deep neural networks? "
        "https://arxiv.org/abs/1411.1792"
    )
    Params: ClassVar[type[MethodParams]] = FinetuneParams

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: FinetuneParams
    ) -> None:
        super().__init__(backbone, head, task, params)
        self.frozen_groups = self._resolve_freeze(params.freeze)
        groups = backbone.layer_groups()
        frozen_names = {p for g in groups[: self.frozen_groups] for p in g.param_names}
        for name, p in backbone.named_parameters():
            if name in frozen_names:
                p.requires_grad_(False)
        self._frozen_modules = [
            m for m in backbone.modules() if isinstance(m, _NORM_TYPES) and _all_frozen(m)
        ]

    def _resolve_freeze(self, freeze: str | int) -> int:
        n = len(self.backbone.layer_groups())
        if freeze == "none":
            return 0
        if freeze == "all_but_head":
            return n
        try:
            k = int(freeze)
        except (TypeError, ValueError):
            from transferkit.errors import ConfigError

            raise ConfigError(
                f"freeze={freeze!r} is not understood",
                where="method.params.freeze",
                fix=f'use "none", "all_but_head" or an integer 0..{n}',
            ) from None
        if not 0 <= k <= n:
            from transferkit.errors import ConfigError

            raise ConfigError(
                f"freeze={k} is out of range: the backbone has {n} layer groups",
                where="method.params.freeze",
                fix=f"use an integer 0..{n}",
            )
        return k

    def train(self, mode: bool = True) -> Finetune:
        super().train(mode)
        if mode and self.hparams.bn_eval_when_frozen:
            for m in self._frozen_modules:
                m.eval()
        return self

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        head = [p for p in self.head.parameters() if p.requires_grad]
        body = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": base_lr, "name": "head"}]
        if body:
            lr = base_lr * self.hparams.backbone_lr_mult
            groups.append({"params": body, "lr": lr, "name": "backbone"})
        return groups


def _all_frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)
