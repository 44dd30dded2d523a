"""Unsupervised domain adaptation: the shared training step and the discrepancy methods.

A batch is ``{"x": source inputs [B_s, ...], "y": source labels [B_s], "x_t": target inputs
[B_t, ...]}`` (target unlabelled). Every method minimises

.. math::

    L = \\mathrm{CE}(h(g(x_s)), y_s) + \\lambda\\, L_{transfer}(f_s, f_t, z_s, z_t)

with ``f = g(x)`` the pooled backbone features ``[B, D]``, ``z = h(f)`` the logits ``[B, C]``
and ``lambda = trade_off``. This module holds the base class and the discrepancy methods
(DAN, JAN, Deep CORAL, MCC); the adversarial ones (DANN, CDAN, MDD) live in
:mod:`transferkit.methods.da_adversarial`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from transferkit.backbones.base import Backbone
from transferkit.errors import ConfigError, DataError
from transferkit.losses.coral import coral_loss
from transferkit.losses.mcc import mcc_loss
from transferkit.losses.mmd import joint_mmd2, mmd2
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.supervised import SupervisedMethod, TaskKind

__all__ = [
    "DAN",
    "JAN",
    "MCC",
    "DANParams",
    "DAParams",
    "DeepCORAL",
    "DomainAdaptationMethod",
    "JANParams",
    "MCCParams",
]


class DAParams(MethodParams):
    """Parameters shared by every domain adaptation method."""

    trade_off: float = Field(1.0, ge=0, description="weight lambda of the transfer loss")
    backbone_lr_mult: float = Field(0.1, gt=0, description="backbone lr = lr * this")
    mcc_weight: float = Field(
        0.0, ge=0, description="add Minimum Class Confusion on target logits (e.g. DANN+MCC)"
    )
    mcc_temperature: float = Field(2.5, gt=0, description="temperature of the added MCC term")
    peft: dict[str, Any] | None = Field(
        None,
        description="adapt through adapters only {kind: lora|ia3|loha, r, alpha, ...} "
        "(e.g. LoRA + DANN); they train at lr*backbone_lr_mult",
    )


def _left_padded(batch: Mapping[str, Tensor]) -> bool:
    mask = batch.get("attention_mask")
    return mask is not None and mask.ndim == 2 and bool((mask[:, 0] == 0).any())


def _pad_to(t: Tensor, length: int, left: bool) -> Tensor:
    """Pad ``t`` ``[B, L, ...]`` with zeros along dim 1 to ``length`` (masked positions)."""
    if t.ndim < 2 or t.shape[1] == length:
        return t
    pad = t.new_zeros((t.shape[0], length - t.shape[1], *t.shape[2:]))
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def _concat(x_s: Any, x_t: Any) -> Any:
    """Concatenate two input batches along dim 0 (tensors, or dicts of tensors for text).

    Tokenised text batches are padded per batch, so the source's ``[B_s, L_s]`` and the
    target's ``[B_t, L_t]`` tensors can differ in length: the shorter ones are padded with
    zeros (attention mask 0, so the model ignores them) on the side the tokenizer pads.
    """
    if isinstance(x_s, Tensor) and isinstance(x_t, Tensor):
        return torch.cat([x_s, x_t])
    if isinstance(x_s, Mapping) and isinstance(x_t, Mapping) and x_s.keys() == x_t.keys():
        left = _left_padded(x_s) or _left_padded(x_t)
        out = {}
        for k in x_s:
            a, b = x_s[k], x_t[k]
            if a.ndim >= 2 and b.ndim == a.ndim and a.shape[1] != b.shape[1]:
                n = max(a.shape[1], b.shape[1])
                a, b = _pad_to(a, n, left), _pad_to(b, n, left)
            out[k] = torch.cat([a, b])
        return out
    raise DataError(
        f"source and target inputs have incompatible types {type(x_s).__name__} and "
        f"{type(x_t).__name__}",
        where='batch["x"] / batch["x_t"]',
        fix="prepare both domains with the same backbone preprocessing",
    )


def _batch_size(x: Any) -> int:
    return int(x.shape[0]) if isinstance(x, Tensor) else int(next(iter(x.values())).shape[0])


class DomainAdaptationMethod(SupervisedMethod):
    """Backbone + head trained on labelled source and unlabelled target batches.

    One forward runs over the concatenated ``[x_s; x_t]`` batch, so BatchNorm layers see
    statistics of both domains mixed (what TLlib and skada do); the features and logits are
    then split back. Subclasses implement :meth:`transfer_loss` and may list extra modules
    (discriminators, auxiliary heads) in :meth:`extra_groups`, which train at ``base_lr``.

    Raises:
        ConfigError: ``task`` is not classification.
    """

    family: ClassVar[str] = "domain-adaptation"
    Params: ClassVar[type[MethodParams]] = DAParams

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: MethodParams
    ) -> None:
        if task != "classification":
            raise ConfigError(
                f"{type(self).__name__} supports classification only, got task={task!r}",
                where="method",
                fix="use a classification dataset, or finetune for regression",
            )
        super().__init__(backbone, head, task, params)
        self.peft_info_: dict[str, Any] | None = None
        if getattr(params, "peft", None) is not None:
            from transferkit.methods.finetune import _apply_peft

            self.peft_info_ = _apply_peft(backbone, params.peft)  # type: ignore[attr-defined]

    def forward_domains(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(f_s [B_s, D], f_t [B_t, D], logits_s [B_s, C], logits_t [B_t, C])``."""
        if "x_t" not in batch:
            raise DataError(
                f"{self.name} needs target inputs but the batch has no 'x_t'",
                where="batch",
                fix="give the run a target (unlabelled) dataset for domain adaptation",
            )
        n_s = _batch_size(batch["x"])
        f = self.backbone(_concat(batch["x"], batch["x_t"]))
        logits = self.head(f)
        return f[:n_s], f[n_s:], logits[:n_s], logits[n_s:]

    def transfer_loss(
        self, f_s: Tensor, f_t: Tensor, logits_s: Tensor, logits_t: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's alignment loss and extra scalars to log (detached)."""
        raise NotImplementedError

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss": cls + trade_off * transfer, "cls_loss", "transfer_loss", ...}``."""
        f_s, f_t, logits_s, logits_t = self.forward_domains(batch)
        cls = F.cross_entropy(logits_s, batch["y"].long())
        transfer, extras = self.transfer_loss(f_s, f_t, logits_s, logits_t)
        loss = cls + self.hparams.trade_off * transfer
        loss, more = self.add_mcc(loss, logits_t)
        return {
            "loss": loss,
            "cls_loss": cls.detach(),
            "transfer_loss": transfer.detach(),
            **extras,
            **more,
        }

    def add_mcc(self, loss: Tensor, logits_t: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``loss + mcc_weight * MCC(logits_t)`` when ``mcc_weight > 0`` (a combination)."""
        w = float(getattr(self.hparams, "mcc_weight", 0.0))
        if w <= 0:
            return loss, {}
        mcc = mcc_loss(logits_t, self.hparams.mcc_temperature)
        return loss + w * mcc, {"mcc_loss": mcc.detach()}

    def extra_groups(self) -> list[tuple[str, nn.Module]]:
        """``(group name, module)`` pairs trained at ``base_lr`` besides the head."""
        return []

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """``head`` at ``base_lr``, ``backbone`` at ``base_lr * backbone_lr_mult``, then each
        extra module (``domain`` / ``aux``) at ``base_lr``; every trainable parameter once."""
        seen: set[int] = set()

        def take(module: nn.Module) -> list[nn.Parameter]:
            out = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in out)
            return out

        groups = [{"params": take(self.head), "lr": base_lr, "name": "head"}]
        body = take(self.backbone)
        if body:
            mult = self.hparams.backbone_lr_mult
            groups.append({"params": body, "lr": base_lr * mult, "name": "backbone"})
        for name, module in self.extra_groups():
            params = take(module)
            if params:
                groups.append({"params": params, "lr": base_lr, "name": name})
        return groups


class DANParams(DAParams):
    num_kernels: int = Field(5, ge=1, description="Gaussian kernels in the MK-MMD bank")
    kernel_mul: float = Field(2.0, gt=1, description="bandwidth ratio between kernels")
    base: Literal["median", "mean"] = Field("median", description="bank centre distance")
    unbiased: bool = Field(False, description="unbiased (U-statistic) MMD estimate")


@register_method
class DAN(DomainAdaptationMethod):
    """Deep Adaptation Network: multi-kernel MMD between pooled source/target features."""

    name: ClassVar[str] = "dan"
    paper: ClassVar[str] = (
        "Long et al. 2015, Learning Transferable Features with Deep Adaptation Networks, "
        "ICML, https://arxiv.org/abs/1502.02791"
    )
    Params: ClassVar[type[MethodParams]] = DANParams

    def transfer_loss(
        self, f_s: Tensor, f_t: Tensor, logits_s: Tensor, logits_t: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.hparams
        loss = mmd2(
            f_s,
            f_t,
            num_kernels=p.num_kernels,
            kernel_mul=p.kernel_mul,
            base=p.base,
            unbiased=p.unbiased,
        )
        return loss, {}


class JANParams(DANParams):
    softmax_sigma: float | None = Field(
        0.92, gt=0, description="fixed bandwidth of the softmax layer (None: the bank)"
    )


@register_method
class JAN(DomainAdaptationMethod):
    """Joint Adaptation Network: joint MMD over features and softmax predictions."""

    name: ClassVar[str] = "jan"
    paper: ClassVar[str] = (
        "Long et al. 2017, Deep Transfer Learning with Joint Adaptation Networks, ICML, "
        "https://arxiv.org/abs/1605.06636"
    )
    Params: ClassVar[type[MethodParams]] = JANParams

    def transfer_loss(
        self, f_s: Tensor, f_t: Tensor, logits_s: Tensor, logits_t: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.hparams
        sig = None if p.softmax_sigma is None else [p.softmax_sigma]
        loss = joint_mmd2(
            [f_s, logits_s.softmax(-1)],
            [f_t, logits_t.softmax(-1)],
            sigmas=[None, sig],
            num_kernels=p.num_kernels,
            kernel_mul=p.kernel_mul,
            base=p.base,
            unbiased=p.unbiased,
        )
        return loss, {}


@register_method
class DeepCORAL(DomainAdaptationMethod):
    """Deep CORAL: align the feature covariances, ``||C_s - C_t||_F^2 / (4 D^2)``."""

    name: ClassVar[str] = "deep_coral"
    paper: ClassVar[str] = (
        "Sun & Saenko 2016, Deep CORAL: Correlation Alignment for Deep Domain Adaptation, "
        "ECCV workshops, https://arxiv.org/abs/1607.01719"
    )
    Params: ClassVar[type[MethodParams]] = DAParams

    def transfer_loss(
        self, f_s: Tensor, f_t: Tensor, logits_s: Tensor, logits_t: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return coral_loss(f_s, f_t), {}


class MCCParams(DAParams):
    temperature: float = Field(2.5, gt=0, description="softmax temperature of the confusion")


@register_method
class MCC(DomainAdaptationMethod):
    """Minimum Class Confusion on the target predictions (no feature alignment)."""

    name: ClassVar[str] = "mcc"
    paper: ClassVar[str] = (
        "Jin et al. 2020, Minimum Class Confusion for Versatile Domain Adaptation, ECCV, "
        "https://arxiv.org/abs/1912.03699"
    )
    Params: ClassVar[type[MethodParams]] = MCCParams

    def transfer_loss(
        self, f_s: Tensor, f_t: Tensor, logits_s: Tensor, logits_t: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return mcc_loss(logits_t, self.hparams.temperature), {}
