"""ADDA: Adversarial Discriminative Domain Adaptation, trained by ONE trainer run.

Tzeng, Hoffman, Saenko & Darrell 2017, "Adversarial Discriminative Domain Adaptation",
CVPR, https://arxiv.org/abs/1702.05464.

ADDA is sequential. With ``T`` trainer steps and ``s = source_fraction``:

1. **Phase 0** (optimizer steps ``1 .. ceil(s T)``): the backbone ``M_s`` and head ``C`` are
   trained on labelled source data, ``min CE(C(M_s(x_s)), y_s)``.
2. **Switch** (when ``global_step`` reaches ``ceil(s T)``, done by :class:`ADDAPhaseSwitch`):
   the backbone's weights and buffers are copied into the frozen ``source_encoder`` (kept in
   eval mode, so its BatchNorm statistics stay those of phase 0), the head is frozen, and the
   backbone becomes the target encoder ``M_t``, initialised from ``M_s``.
3. **Phase 1**: a domain discriminator ``D`` (source = 1, target = 0) and ``M_t`` play the
   GAN game with inverted labels:

   .. math::

       L_D = \\tfrac12 \\mathrm{BCE}(D(M_s(x_s)), 1) + \\tfrac12 \\mathrm{BCE}(D(M_t(x_t)), 0),
       \\qquad L_M = \\mathrm{BCE}(D(M_t(x_t)), 1).

   Both updates happen in ONE optimizer step on ``loss = L_D + trade_off * L_M``: ``L_D``
   sees ``M_t(x_t).detach()``, so its gradient reaches only ``D``; ``L_M`` evaluates ``D``
   through :func:`torch.func.functional_call` with *detached* copies of its parameters, so
   its gradient reaches only ``M_t``. Each player therefore receives exactly the gradient of
   its own objective (not the minimax gradient a reversal layer would give).

Prediction is ``C(M_t(x))`` in both phases. Everything a resumed run needs is in the model
``state_dict``: the phase (a buffer), ``source_encoder`` and the discriminator; the head's
freezing is re-applied after every ``load_state_dict``. ``source_encoder`` exists from
construction (a deep copy: twice the backbone's memory) so the keys never change.
Under multi-process (DDP) training set ``find_unused_parameters: true``: each phase leaves
some parameters without gradient.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call

from transferkit.backbones.base import Backbone
from transferkit.engine.callbacks import Callback
from transferkit.errors import ConfigError, DataError
from transferkit.losses.adversarial import DomainDiscriminator
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.domain_adaptation import DAParams, DomainAdaptationMethod
from transferkit.methods.supervised import TaskKind

if TYPE_CHECKING:
    from transferkit.engine.trainer import Trainer

__all__ = ["ADDA", "ADDAParams", "ADDAPhaseSwitch", "switch_step"]


def switch_step(source_fraction: float, total_steps: int) -> int:
    """Global step after which ADDA switches: ``ceil(source_fraction * total_steps)``, >= 1.

    The product is rounded to 9 decimals first, so ``0.3 * 10`` gives 3, not 4.
    """
    return max(1, math.ceil(round(source_fraction * total_steps, 9)))


def _bce(logits: Tensor, label: float) -> Tensor:
    """Mean binary cross-entropy of ``logits [B]`` against the constant ``label``."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def _reapply_phase(module: nn.Module, _incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: the loaded phase decides what is frozen."""
    module._apply_phase()  # type: ignore[operator]


class ADDAParams(DAParams):
    source_fraction: float = Field(
        0.3, gt=0, lt=1, description="share of the total steps spent on source training"
    )
    hidden: int = Field(500, ge=1, description="discriminator width (the paper: 500-500-1)")
    dropout: float = Field(0.0, ge=0, lt=1, description="discriminator dropout")


class ADDAPhaseSwitch(Callback):
    """Switches ``method`` to the adversarial phase once ``global_step >= switch_step``.

    Called at train start (a resumed run past the switch stays switched: the phase is a
    model buffer) and after every optimizer step.
    """

    def __init__(self, method: ADDA) -> None:
        self.method = method
        self.switch_at: int | None = None

    def update(self, global_step: int, total_steps: int) -> None:
        self.switch_at = switch_step(self.method.hparams.source_fraction, total_steps)
        if global_step >= self.switch_at and self.method.phase_index == 0:
            self.method.switch_to_adaptation()

    def on_train_start(self, trainer: Trainer) -> None:
        self.update(trainer.global_step, trainer.total_steps)

    def on_step_end(self, trainer: Trainer) -> None:
        self.update(trainer.global_step, trainer.total_steps)

    def state_dict(self) -> dict[str, Any]:
        return {"switch_at": self.switch_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.switch_at = state.get("switch_at")


@register_method
class ADDA(DomainAdaptationMethod):
    """Source training, then a GAN between the target encoder and a domain discriminator."""

    name: ClassVar[str] = "adda"
    paper: ClassVar[str] = (
        "Tzeng et al. 2017, Adversarial Discriminative Domain Adaptation, CVPR, "
        "https://arxiv.org/abs/1702.05464"
    )
    Params: ClassVar[type[MethodParams]] = ADDAParams

    phase: Tensor

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: ADDAParams
    ) -> None:
        super().__init__(backbone, head, task, params)
        self.source_encoder = copy.deepcopy(backbone)
        self.discriminator = DomainDiscriminator(
            backbone.num_features, params.hidden, params.dropout
        )
        self.register_buffer("phase", torch.zeros((), dtype=torch.long))
        self.register_load_state_dict_post_hook(_reapply_phase)
        self._apply_phase()

    @property
    def phase_index(self) -> int:
        """0: source training; 1: adversarial adaptation (a host-side mirror of ``phase``,
        refreshed on every switch and ``load_state_dict``, so steps need no device sync)."""
        return self._phase

    def _apply_phase(self) -> None:
        """Mirror the ``phase`` buffer and freeze what it keeps fixed (idempotent)."""
        self._phase = int(self.phase.item())
        self.source_encoder.requires_grad_(False)
        self.source_encoder.eval()
        self.head.requires_grad_(self._phase == 0)
        self.head.train(self.training and self._phase == 0)  # frozen: no BN/dropout updates

    def switch_to_adaptation(self) -> None:
        """Copy the backbone into ``source_encoder`` (bit-equal), freeze it and the head."""
        self.source_encoder.load_state_dict(self.backbone.state_dict())
        self.phase.fill_(1)
        self._apply_phase()

    def train(self, mode: bool = True) -> ADDA:
        """As ``nn.Module.train``, but the frozen parts (``source_encoder``; the head in
        phase 1) stay in eval mode."""
        super().train(mode)
        self.source_encoder.eval()
        self.head.train(mode and self._phase == 0)
        return self

    def training_callbacks(self) -> list[Callback]:
        """The phase switch (:class:`ADDAPhaseSwitch`)."""
        return [ADDAPhaseSwitch(self)]

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Phase 0: ``{"loss": CE, "cls_loss", "phase"}``; phase 1: ``{"loss": L_D +
        trade_off * L_M, "disc_loss", "adv_loss", "domain_acc", "phase"}`` (with
        ``mcc_weight > 0``, phase 1 adds MCC on ``head(M_t(x_t))`` and logs ``"mcc_loss"``)."""
        if "x_t" not in batch:
            raise DataError(
                f"{self.name} needs target inputs but the batch has no 'x_t'",
                where="batch",
                fix="give the run a target (unlabelled) dataset for domain adaptation",
            )
        if self.phase_index == 0:
            cls = F.cross_entropy(self.head(self.backbone(batch["x"])), batch["y"].long())
            return {"loss": cls, "cls_loss": cls.detach(), "phase": self.phase.detach().float()}
        return self._adversarial_step(batch["x"], batch["x_t"])

    def _adversarial_step(self, x_s: Any, x_t: Any) -> dict[str, Tensor]:
        """Phase 1: ``L_D`` on detached target features, ``L_M`` through a parameter-detached
        discriminator (module docstring), both in one scalar."""
        with torch.no_grad():
            f_s = self.source_encoder(x_s)
        f_t = self.backbone(x_t)
        d_s = self.discriminator(f_s).reshape(-1)
        d_t = self.discriminator(f_t.detach()).reshape(-1)
        disc = 0.5 * (_bce(d_s, 1.0) + _bce(d_t, 0.0))
        frozen = {n: p.detach() for n, p in self.discriminator.named_parameters()}
        adv = _bce(functional_call(self.discriminator, frozen, (f_t,)).reshape(-1), 1.0)
        acc = 0.5 * ((d_s > 0).float().mean() + (d_t <= 0).float().mean())
        loss, more = disc + self.hparams.trade_off * adv, {}
        if self.hparams.mcc_weight > 0:  # through the frozen head: only M_t learns from it
            loss, more = self.add_mcc(loss, self.head(f_t))
        return {
            **more,
            "loss": loss,
            "disc_loss": disc.detach(),
            "adv_loss": adv.detach(),
            "domain_acc": acc.detach(),
            "phase": self.phase.detach().float(),
        }

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """``head`` and ``domain`` at ``base_lr``, ``backbone`` at ``base_lr *
        backbone_lr_mult``, whatever the phase (so an optimizer built before or after the
        switch has the same groups); ``source_encoder`` is never optimised."""
        if any(p.requires_grad for p in self.source_encoder.parameters()):
            raise ConfigError(
                "ADDA's source encoder must stay frozen",
                where="ADDA.source_encoder",
                fix="do not unfreeze source_encoder; it is a copy taken at the phase switch",
            )
        groups = [
            {"params": list(self.head.parameters()), "lr": base_lr, "name": "head"},
            {
                "params": [p for p in self.backbone.parameters() if p.requires_grad],
                "lr": base_lr * self.hparams.backbone_lr_mult,
                "name": "backbone",
            },
            {"params": list(self.discriminator.parameters()), "lr": base_lr, "name": "domain"},
        ]
        return [g for g in groups if g["params"]]
