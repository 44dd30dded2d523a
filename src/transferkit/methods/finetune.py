"""Fine-tuning: train (part of) a pretrained backbone together with a new head.

Freezing works on the backbone's layer groups (input -> output): ``freeze="all_but_head"``
trains only the head (the backbone's BatchNorm statistics stay fixed too), ``freeze=k``
freezes the first ``k`` groups, ``freeze="none"`` trains everything. The backbone's
learning rate is ``lr * backbone_lr_mult``, written into its parameter group's ``lr`` so
stock schedulers scale it. On top of that, each technique is one key, and they compose:

* discriminative learning rates (``layer_decay`` or ``group_lr_mults``): group ``i`` of
  ``n`` trains at ``lr * backbone_lr_mult * m_i`` with ``m_i = decay^(n-i)`` or the given
  list; the head at ``lr`` (Howard & Ruder 2018, ULMFiT, https://arxiv.org/abs/1801.06146);
* gradual unfreezing (``gradual_unfreeze_every``): only the head trains at first, then one
  more group from the top every N epochs, down to the ``freeze`` floor (ULMFiT, 3.3), as a
  resumable callback (:mod:`transferkit.finetune.unfreeze`);
* regularisers against forgetting (``l2sp``, ``delta``, ``bss``, ``lwf``), added to the
  loss and logged apart (:mod:`transferkit.finetune.regularizers`);
* parameter-efficient adapters (``peft``, :mod:`transferkit.finetune.peft`);
* training-batch augmentation (``augment``: per-modality policies incl. RandAugment,
  MixUp/CutMix soft targets, token-level text noise; :mod:`transferkit.augment_policy`),
  applied in ``training_step`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field, ValidationError, model_validator
from torch import nn

from transferkit.augment_policy import AugmentConfig
from transferkit.backbones.base import Backbone
from transferkit.engine.callbacks import Callback
from transferkit.errors import ConfigError
from transferkit.finetune.delta_fit import DeltaAttentionFit, fit_delta_attention
from transferkit.finetune.groups import discriminative_groups, group_multipliers
from transferkit.finetune.params import BSSParams, DeltaParams, L2SPParams, LwFParams
from transferkit.finetune.regularizers import Regularizers
from transferkit.finetune.unfreeze import GradualUnfreezing
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.supervised import SupervisedMethod, TaskKind, task_loss

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class FinetuneParams(MethodParams):
    freeze: str | int = Field(
        "none", description='"none", "all_but_head", or k = freeze the first k layer groups'
    )
    backbone_lr_mult: float = Field(0.1, gt=0, description="backbone lr = lr * this")
    bn_eval_when_frozen: bool = Field(True, description="keep frozen BatchNorm in eval mode")
    layer_decay: float | None = Field(
        None, gt=0, le=1, description="group i of n trains at lr*backbone_lr_mult*decay^(n-i)"
    )
    group_lr_mults: list[Annotated[float, Field(gt=0)]] | None = Field(
        None, description="one lr multiplier per layer group, input->output (x backbone_lr_mult)"
    )
    gradual_unfreeze_every: int | None = Field(
        None, ge=1, description="start head-only; unfreeze one more group (top down) every N epochs"
    )
    l2sp: L2SPParams | None = Field(None, description="L2-SP {alpha, beta}: pull to pretrained")
    delta: DeltaParams | None = Field(
        None, description='DELTA {alpha, layers, attention: "none"|"supervised"}'
    )
    bss: BSSParams | None = Field(None, description="Batch Spectral Shrinkage {eta, k}")
    lwf: LwFParams | None = Field(
        None, description="Learning without Forgetting {lambda, temperature}; needs source_head"
    )
    peft: dict[str, Any] | None = Field(
        None,
        description="adapters {kind: lora|ia3|loha, r, alpha, dropout, target_modules}; they "
        "train at lr*backbone_lr_mult (set backbone_lr_mult: 1 for the usual recipe)",
    )
    augment: AugmentConfig | None = Field(
        None,
        description="training-batch augmentation {image: {policy: none|flip_crop|randaugment|"
        "trivialaugment, random_resized_crop, hflip, mixup_alpha, cutmix_alpha}, text: "
        "{token_dropout, mask_prob, span_delete, swap_prob}, vector: {noise, dropout, "
        "mixup_alpha}}",
    )

    @model_validator(mode="after")
    def _exclusive(self) -> FinetuneParams:
        if self.layer_decay is not None and self.group_lr_mults is not None:
            raise ValueError("set layer_decay or group_lr_mults, not both")
        if self.peft is not None and (
            self.freeze not in ("none", 0) or self.gradual_unfreeze_every is not None
        ):
            raise ValueError(
                "peft freezes the whole backbone and trains its adapters: leave freeze at "
                '"none" and gradual_unfreeze_every unset'
            )
        return self


@register_method
class Finetune(SupervisedMethod):
    """Fine-tune a backbone with a new head (full, partial, gradual, regularised or PEFT).

    Args:
        backbone, head, task, params: as for every supervised method; build it on the
            pretrained backbone (the regularisers' start point is taken here).
        source_head: the source task's head (``[B, D] -> [B, C_s]``), needed by ``lwf``;
            it keeps training (LwF's ``theta_o``), a frozen copy provides the targets.
    """

    name: ClassVar[str] = "finetune"
    family: ClassVar[str] = "fine-tuning"
    paper: ClassVar[str] = (
        "Yosinski et al. 2014, How transferable are features in deep neural networks? "
        "https://arxiv.org/abs/1411.1792"
    )
    Params: ClassVar[type[MethodParams]] = FinetuneParams

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        task: TaskKind,
        params: FinetuneParams,
        *,
        source_head: nn.Module | None = None,
    ) -> None:
        super().__init__(backbone, head, task, params)
        p = params
        n = len(backbone.layer_groups())
        self.frozen_groups = self._resolve_freeze(p.freeze)
        self.multipliers_ = group_multipliers(n, layer_decay=p.layer_decay, mults=p.group_lr_mults)
        self.discriminative = p.layer_decay is not None or p.group_lr_mults is not None
        self.reg = Regularizers(
            backbone, l2sp=p.l2sp, delta=p.delta, bss=p.bss, lwf=p.lwf, source_head=source_head
        )
        self.source_head = source_head if p.lwf is not None else None
        self.peft_info_: dict[str, Any] | None = None
        if p.peft is not None:
            self.peft_info_ = _apply_peft(backbone, p.peft)
        frozen = {q for g in backbone.layer_groups()[: self.frozen_groups] for q in g.param_names}
        for name, q in backbone.named_parameters():
            if name in frozen:
                q.requires_grad_(False)
        self.unfreezing: GradualUnfreezing | None = None
        if p.gradual_unfreeze_every is not None:  # starts with every group frozen
            self.unfreezing = GradualUnfreezing(
                backbone, p.gradual_unfreeze_every, self.frozen_groups, self._refresh_norms
            )

    def _resolve_freeze(self, freeze: str | int) -> int:
        n = len(self.backbone.layer_groups())
        if freeze == "none":
            return 0
        if freeze == "all_but_head":
            return n
        try:
            k = int(freeze)
        except (TypeError, ValueError):
            raise ConfigError(
                f"freeze={freeze!r} is not understood",
                where="method.params.freeze",
                fix=f'use "none", "all_but_head" or an integer 0..{n}',
            ) from None
        if not 0 <= k <= n:
            raise ConfigError(
                f"freeze={k} is out of range: the backbone has {n} layer groups",
                where="method.params.freeze",
                fix=f"use an integer 0..{n}",
            )
        return k

    # ----------------------------------------------------------------- training
    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"loss": task + penalties, "task_loss", <penalty name>: ...}``; just ``loss``
        when no regulariser is configured. The batch is augmented first when ``augment`` is
        set (soft MixUp/CutMix targets enter the cross-entropy)."""
        x, y = self.augmented(batch)
        features, intermediates = self.reg.features(self.backbone, x)
        outputs = self.head(features)
        if self.task == "regression":
            outputs = outputs.squeeze(-1)
        loss = task_loss(outputs, y, self.task)
        if not self.reg.active:
            return {"loss": loss}
        terms = self.reg.penalties(
            self.backbone, self.head, x, features, intermediates, self.source_head
        )
        total = loss + torch.stack(list(terms.values())).sum()
        return {"loss": total, "task_loss": loss, **terms}

    def training_callbacks(self) -> list[Callback]:
        """Gradual unfreezing and DELTA's attention fit, when configured."""
        out: list[Callback] = []
        if self.unfreezing is not None:
            out.append(self.unfreezing)
        d = self.hparams.delta
        if d is not None and d.attention == "supervised" and self.reg.delta is not None:
            out.append(
                DeltaAttentionFit(
                    self.reg.delta, self.task, d.attention_samples, d.attention_temperature
                )
            )
        return out

    def fit_delta_attention(self, x: Any, y: torch.Tensor) -> list[torch.Tensor]:
        """Fit DELTA's supervised attention on a labelled batch (the Trainer does it itself)."""
        if self.reg.delta is None or self.hparams.delta is None:
            raise ConfigError("DELTA is not configured", where="method.params.delta")
        return fit_delta_attention(
            self.reg.delta, x, y, self.task, self.hparams.delta.attention_temperature
        )

    def train(self, mode: bool = True) -> Finetune:
        super().train(mode)
        if mode:
            self._refresh_norms()
        return self

    def _refresh_norms(self) -> None:
        """Norm layers whose parameters are all frozen go to eval mode (if configured);
        the others follow the method's mode."""
        if not self.hparams.bn_eval_when_frozen:
            return
        for m in self.backbone.modules():
            if isinstance(m, _NORM_TYPES):
                m.train(self.training and not _all_frozen(m))

    # ----------------------------------------------------------------- optimizer
    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Every trainable parameter exactly once (with gradual unfreezing, the frozen ones
        of the groups above the ``freeze`` floor too, so no optimizer rebuild is needed).

        Discriminative LR or gradual unfreezing: ``backbone.<group>`` groups + ``head``;
        otherwise ``head`` + one ``backbone`` group. With ``l2sp`` weight decay is 0.
        """
        mult = self.hparams.backbone_lr_mult
        if self.discriminative or self.unfreezing is not None:
            groups = discriminative_groups(
                self.backbone,
                self.head,
                base_lr,
                self.multipliers_,
                mult,
                first_group=self.frozen_groups,
                trainable_only=self.unfreezing is None,
            )
        else:
            head = [q for q in self.head.parameters() if q.requires_grad]
            body = [q for q in self.backbone.parameters() if q.requires_grad]
            groups = [{"params": head, "lr": base_lr, "name": "head"}]
            if body:
                groups.append({"params": body, "lr": base_lr * mult, "name": "backbone"})
        if self.source_head is not None:
            groups.append(
                {
                    "params": list(self.source_head.parameters()),
                    "lr": base_lr,
                    "name": "source_head",
                }
            )
        if self.hparams.l2sp is not None:
            for g in groups:
                g["weight_decay"] = 0.0
        return groups


def _all_frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def _apply_peft(backbone: Backbone, spec: dict[str, Any]) -> dict[str, Any]:
    """Validate ``spec`` as a ``PeftConfig`` and inject the adapters (imported lazily)."""
    try:
        from transferkit.finetune.peft import PeftConfig, apply_peft
    except ImportError as exc:
        raise ConfigError(
            f"parameter-efficient fine-tuning is not available ({exc})",
            where="method.params.peft",
            fix="drop the peft key, or install the PEFT support",
        ) from None
    try:
        cfg = PeftConfig.model_validate(spec)
    except ValidationError as err:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(
            f"invalid PEFT settings: {msgs}",
            where="method.params.peft",
            fix="use {kind: lora|ia3|loha, r, alpha, dropout, target_modules}",
        ) from None
    return dict(apply_peft(backbone, cfg))
