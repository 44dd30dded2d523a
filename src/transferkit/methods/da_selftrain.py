"""Self-training domain adaptation: Pseudo-Label (with a periodically synced teacher) and
FixMatch.

Both train on labelled source batches and on *pseudo-labels* of the unlabelled target::

    L = CE(h(g(x_s)), y_s) + lambda * 1/B_t sum_j m_j * CE(z_j, yhat_j)

with ``yhat_j = argmax_c p_jc`` and the confidence mask ``m_j = [max_c p_jc >= tau]``, where
``p [B_t, C]`` are the *labelling* probabilities (a frozen teacher for Pseudo-Label, the weak
view for FixMatch) and ``z [B_t, C]`` the student's logits (on the same input for
Pseudo-Label, on the strong view for FixMatch). The mean runs over the whole target batch,
so a batch with few confident examples contributes little (FixMatch's normalisation).

Logged besides ``cls_loss`` and ``transfer_loss``: ``mask_rate`` (the fraction of target
examples above the threshold) and, when the batch carries target labels ``"y_t"`` (only
for diagnostics: they are never trained on), ``pseudo_label_acc`` (accuracy of the selected
pseudo-labels; absent when none is selected) and ``labeller_acc`` (accuracy of the argmax
over all target examples).

Augmentation policies (``augment``, :class:`~transferkit.augment_policy.AugmentConfig`) set
FixMatch's strong target view and Pseudo-Label's source batch (plus, with ``augment_target``,
the student's target inputs). MixUp/CutMix act on the labelled source cross-entropy only (soft
targets): a target view is never mixed, so each pseudo-label belongs to one example.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from transferkit.augment import augment
from transferkit.augment_policy import AugmentConfig, BatchAugmenter, ImageAugment, mix_batch
from transferkit.backbones.base import Backbone
from transferkit.engine.callbacks import Callback
from transferkit.errors import DataError
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.domain_adaptation import (
    DAParams,
    DomainAdaptationMethod,
    _batch_size,
    _concat,
)
from transferkit.methods.supervised import TaskKind, task_loss

if TYPE_CHECKING:
    from transferkit.engine.trainer import Trainer

__all__ = [
    "FixMatch",
    "FixMatchParams",
    "PseudoLabel",
    "PseudoLabelParams",
    "TeacherSync",
    "class_thresholds",
    "masked_cross_entropy",
    "mix_only",
    "pseudo_labels",
]


# ----------------------------------------------------------------------------- pure functions
def class_thresholds(conf: Tensor, labels: Tensor, num_classes: int, q: float) -> Tensor:
    """Per-class thresholds ``t_c = quantile_q({conf_j : labels_j = c})`` ``[C]`` (linear
    interpolation, as ``torch.quantile``); ``+inf`` for classes predicted nowhere.

    With ``conf_j >= t_{labels_j}`` each predicted class keeps its most confident
    ``1 - q`` fraction of the batch (at least one example): CBST's class-balanced selection
    (Zou et al. 2018, https://arxiv.org/abs/1810.07911) with portion ``p = 1 - q``, computed
    per batch instead of per round over the whole target set.
    """
    out = torch.full((num_classes,), float("inf"), dtype=conf.dtype, device=conf.device)
    for c in labels.unique().tolist():
        out[c] = torch.quantile(conf[labels == c].float(), q)
    return out


def pseudo_labels(
    probs: Tensor, threshold: float, class_balance: bool = False
) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels and their confidence mask from probabilities ``[B, C]``.

    Returns ``(labels [B] int64, mask [B] float32)``: ``labels = argmax_c probs``, ``mask_j =
    1`` where ``max_c probs_j >= threshold`` (or, with ``class_balance``, ``>= t_{labels_j}``
    from :func:`class_thresholds` with ``q = threshold``), else 0.
    """
    conf, labels = probs.float().max(-1)  # compare in float32 under bf16/fp16 autocast
    if class_balance:
        thr = class_thresholds(conf, labels, probs.shape[-1], threshold)[labels]
    else:
        thr = torch.full_like(conf, threshold)
    return labels, (conf >= thr).float()


def masked_cross_entropy(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """``1/B sum_j mask_j * CE(logits_j, labels_j)`` for ``logits [B, C]``, ``labels [B]``,
    ``mask [B]`` (0 for an empty batch)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (ce * mask.to(ce.dtype)).mean()


def mix_only(
    augmenter: BatchAugmenter, x: Any, y: Tensor, generator: torch.Generator | None = None
) -> tuple[Any, Tensor]:
    """Only the MixUp/CutMix step of ``augmenter``'s policy on a labelled batch: ``(x', soft
    targets [B, C])`` (:func:`~transferkit.augment_policy.mix_batch`); else ``(x, y)``."""
    if not augmenter.mixes:
        return x, y
    s = augmenter.section
    alphas = (getattr(s, "mixup_alpha", 0.0), getattr(s, "cutmix_alpha", 0.0))
    return mix_batch(x, y, int(augmenter.num_classes or 0), *alphas, generator=generator)


def _alters_inputs(section: Any) -> bool:
    """Whether a policy section changes inputs by more than mixing them."""
    if isinstance(section, ImageAugment):
        return section.policy != "none" or section.random_resized_crop or section.hflip
    values = section.model_dump() if section is not None else {}
    return any(v > 0 for k, v in values.items() if k not in ("mixup_alpha", "cutmix_alpha"))


# ----------------------------------------------------------------------------- shared base
class SelfTrainParams(DAParams):
    """Parameters of every self-training method."""

    threshold: float = Field(
        0.95, ge=0, le=1, description="confidence a pseudo-label needs to be trained on"
    )
    augment: AugmentConfig | None = Field(
        None, description="fixmatch's strong view, pseudo_label's source; mixup on source CE only"
    )


class _SelfTraining(DomainAdaptationMethod):
    """Computes the masked pseudo-label loss and its diagnostics."""

    def _check_target(self, batch: Mapping[str, Any]) -> None:
        if "x_t" not in batch:
            raise DataError(
                f"{self.name} needs target inputs but the batch has no 'x_t'",
                where="batch",
                fix="give the run a target (unlabelled) dataset for domain adaptation",
            )

    def _unlabelled_loss(
        self,
        logits: Tensor,
        probs: Tensor,
        batch: Mapping[str, Any],
        class_balance: bool = False,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Masked CE of student ``logits [B_t, C]`` on pseudo-labels of ``probs [B_t, C]``."""
        labels, mask = pseudo_labels(probs.detach(), self.hparams.threshold, class_balance)
        loss = masked_cross_entropy(logits, labels, mask)
        extras = {"mask_rate": mask.mean().detach() if len(mask) else mask.sum()}
        y_t = batch.get("y_t")
        if isinstance(y_t, Tensor):
            correct = (labels == y_t.long()).to(mask.dtype)
            extras["labeller_acc"] = correct.mean()
            if mask.sum() > 0:
                extras["pseudo_label_acc"] = (correct * mask).sum() / mask.sum()
        return loss, extras

    def _combine(
        self, cls: Tensor, transfer: Tensor, logits_t: Tensor, extras: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """``cls + trade_off * transfer`` (+ ``mcc_weight * MCC(logits_t)``, see
        :meth:`~DomainAdaptationMethod.add_mcc`) and the scalars to log."""
        loss, more = self.add_mcc(cls + self.hparams.trade_off * transfer, logits_t)
        return {
            "loss": loss,
            "cls_loss": cls.detach(),
            "transfer_loss": transfer.detach(),
            **extras,
            **more,
        }


# ----------------------------------------------------------------------------- Pseudo-Label
class TeacherSync(Callback):
    """Copies the student into :class:`PseudoLabel`'s frozen teacher at train start (if it
    was never synced) and whenever ``relabel_every_steps`` optimizer steps have passed since
    the last copy; also sets the ramp-up weight from ``trainer.global_step``.

    Its state (the step of the last copy) is saved in every checkpoint and the teacher's
    weights are in the method's ``state_dict``, so a resumed run syncs at the same steps.
    """

    def __init__(self, method: PseudoLabel) -> None:
        self.method = method
        self.last_sync_step: int | None = None

    def sync(self, global_step: int) -> None:
        self.method.sync_teacher()
        self.last_sync_step = int(global_step)

    def on_train_start(self, trainer: Trainer) -> None:
        if self.last_sync_step is None:
            self.sync(trainer.global_step)
        self.method.set_step(trainer.global_step)

    def on_step_end(self, trainer: Trainer) -> None:
        every = self.method.hparams.relabel_every_steps
        if self.last_sync_step is None or trainer.global_step - self.last_sync_step >= every:
            self.sync(trainer.global_step)
        self.method.set_step(trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"last_sync_step": self.last_sync_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        last = state.get("last_sync_step")
        self.last_sync_step = None if last is None else int(last)


class PseudoLabelParams(SelfTrainParams):
    relabel_every_steps: int = Field(
        100, ge=1, description="optimizer steps between two copies of the student to the teacher"
    )
    class_balance: bool = Field(
        False,
        description="CBST-like per-class thresholds: threshold becomes the per-class quantile "
        "of the batch's confidences, keeping the top 1 - threshold of each predicted class "
        "(CBST's portion grows from 0.2 to 0.5: threshold 0.8 to 0.5)",
    )
    rampup_steps: int = Field(
        0, ge=0, description="linear ramp of the pseudo-label weight from 0 (0: no ramp)"
    )
    augment_target: bool = Field(
        False, description="pseudo_label: also augment (never mix) the student's target inputs"
    )


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False`` that shares the (tokenizer-holding)
    ``preprocess`` object instead of copying it."""
    pre = getattr(module, "preprocess", None)
    memo = {} if pre is None else {id(pre): pre}
    clone = copy.deepcopy(module, memo)
    clone.requires_grad_(False)
    return clone


@register_method
class PseudoLabel(_SelfTraining):
    """Self-training on a frozen teacher's confident target predictions.

    The teacher ``(g', h')`` is a copy of the student ``(g, h)`` held as the submodule
    ``teacher`` (no gradients, not in any optimizer group, always in eval mode, saved in the
    ``state_dict``); :class:`TeacherSync` re-copies it every ``relabel_every_steps`` steps.
    With ``p = softmax(h'(g'(x_t)))`` ``[B_t, C]`` and student logits ``z_t = h(g(x_t))``,
    ``transfer_loss = w(t) * 1/B_t sum_j m_j CE(z_tj, argmax p_j)`` with the ramp
    ``w(t) = min(1, t / rampup_steps)`` (Lee's ``alpha(t)``; ``w = 1`` without ramp-up).
    ``class_balance`` uses CBST-like per-class thresholds (:func:`class_thresholds`).
    The ramp weight is set by the callback; outside a trainer it is 1 only without ramp-up.
    With ``augment`` the student sees :meth:`student_batch`; the teacher's ``p`` always
    comes from the un-augmented ``x_t``.

    Until the first re-sync the teacher is the initial model; with a freshly initialised
    head its predictions are near uniform and rarely pass the threshold, so the first
    ``relabel_every_steps`` steps act as a source-only warm-up. The teacher doubles the
    model's memory and adds one no-grad forward over ``x_t`` per step.
    """

    name: ClassVar[str] = "pseudo_label"
    paper: ClassVar[str] = (
        "Lee 2013, Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for "
        "Deep Neural Networks, ICML workshops; self-training for DA as in Zou et al. 2018, "
        "Domain Adaptation for Semantic Segmentation via Class-Balanced Self-Training, "
        "ECCV, https://arxiv.org/abs/1810.07911"
    )
    Params: ClassVar[type[MethodParams]] = PseudoLabelParams

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: PseudoLabelParams
    ) -> None:
        super().__init__(backbone, head, task, params)
        self.teacher = nn.ModuleDict(
            {"backbone": _frozen_copy(backbone), "head": _frozen_copy(head)}
        )
        self.teacher.eval()
        self.unlabelled_weight = 1.0 if params.rampup_steps == 0 else 0.0

    def train(self, mode: bool = True) -> PseudoLabel:
        """Switch the student's mode; the teacher stays in eval mode (fixed BN/dropout)."""
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def sync_teacher(self) -> None:
        """Copy every parameter and buffer of the student into the teacher (bit-equal)."""
        self.teacher["backbone"].load_state_dict(self.backbone.state_dict())
        self.teacher["head"].load_state_dict(self.head.state_dict())

    def set_step(self, global_step: int) -> None:
        """Set the ramp-up weight ``w(t) = min(1, t / rampup_steps)``."""
        n = self.hparams.rampup_steps
        self.unlabelled_weight = 1.0 if n == 0 else min(1.0, global_step / n)

    def training_callbacks(self) -> list[Callback]:
        """The teacher re-synchronisation (:class:`TeacherSync`)."""
        return [TeacherSync(self)]

    def student_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """What the student trains on: ``{"x", "y", "x_t"}``, the source through the whole
        policy (``y`` may become soft targets ``[B_s, C]``; :meth:`augmented`) and, with
        ``augment_target``, the target without mixing. Unchanged in eval mode."""
        self._check_target(batch)
        (x, y), x_t = self.augmented(batch), batch["x_t"]
        if self.augmenter is not None and self.training and self.hparams.augment_target:
            x_t, _ = self.augmenter(x_t, None)  # no labels: never mixed
        return {"x": x, "y": y, "x_t": x_t}

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss", "cls_loss", "transfer_loss", "mask_rate", "unlabelled_weight", ...}``."""
        seen = self.student_batch(batch)
        _, _, logits_s, logits_t = self.forward_domains(seen)
        with torch.no_grad():  # pseudo-labels of the un-augmented target
            probs = self.teacher["head"](self.teacher["backbone"](batch["x_t"])).softmax(-1)
        cls = task_loss(logits_s, seen["y"], "classification")
        pl, extras = self._unlabelled_loss(logits_t, probs, batch, self.hparams.class_balance)
        w = self.unlabelled_weight
        extras["unlabelled_weight"] = torch.tensor(w)
        return self._combine(cls, w * pl, logits_t, extras)


# ----------------------------------------------------------------------------- FixMatch
class FixMatchParams(SelfTrainParams):
    temperature: float = Field(
        1.0, gt=0, description="softmax temperature of the weak-view confidence (<1 sharpens)"
    )
    mask_token_id: int | None = Field(
        None, ge=0, description="text: token id put in place of 15% of strong-view tokens"
    )


@register_method
class FixMatch(_SelfTraining):
    """FixMatch: confident predictions on a weakly augmented target view supervise the
    strongly augmented view of the same examples.

    One forward runs over ``[weak(x_s); weak(x_t); strong(x_t)]`` (augmentations from
    :mod:`transferkit.augment`, drawn from the global RNG so a seeded run is reproducible).
    With ``q = softmax(z_weak / T)`` (no gradient) ``[B_t, C]``,
    ``transfer_loss = 1/B_t sum_j [max q_j >= tau] CE(z_strong_j, argmax q_j)`` and
    ``lambda = trade_off`` is the paper's ``lambda_u``. Defaults follow the paper
    (``tau = 0.95``, ``lambda_u = 1``, hard labels, ``T = 1``). The target batch is run
    twice (``B_s + 2 B_t`` rows per forward); BatchNorm sees all three views, as in the paper.
    An added MCC term (``mcc_weight``) acts on the weak-view target logits.

    With ``augment`` the strong view is the policy's output on ``x_t`` (never mixed; the
    built-in one when the policy only mixes), and a policy's MixUp/CutMix mixes the weak
    source view and its labels (soft ``cls_loss``).
    """

    name: ClassVar[str] = "fixmatch"
    paper: ClassVar[str] = (
        "Sohn et al. 2020, FixMatch: Simplifying Semi-Supervised Learning with Consistency "
        "and Confidence, NeurIPS, https://arxiv.org/abs/2001.07685"
    )
    Params: ClassVar[type[MethodParams]] = FixMatchParams

    def views(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Student batch: ``x`` = weak source view (mixed, ``y`` soft ``[B_s, C]``, when the
        policy mixes), ``x_t`` = weak then strong target view (``2 B_t`` rows). Draw order:
        weak source, weak target, strong target, source mixing."""
        g, x_t, y, aug = generator, batch["x_t"], batch["y"], self.augmenter
        x = augment(batch["x"], "weak", generator=g)
        weak = augment(x_t, "weak", generator=g)
        if aug is None or not _alters_inputs(aug.section):
            tok = self.hparams.mask_token_id
            strong = augment(x_t, "strong", generator=g, mask_token_id=tok)
        else:
            strong, _ = aug(x_t, None, generator=g)  # no labels: never mixed
        if aug is not None:
            x, y = mix_only(aug, x, y, g)
        return {"x": x, "y": y, "x_t": _concat(weak, strong)}

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss", "cls_loss", "transfer_loss", "mask_rate", ...}``."""
        self._check_target(batch)
        n_t = _batch_size(batch["x_t"])
        seen = self.views(batch)
        _, _, logits_s, logits_t = self.forward_domains(seen)
        weak, strong = logits_t[:n_t], logits_t[n_t:]
        probs = (weak.detach() / self.hparams.temperature).softmax(-1)
        cls = task_loss(logits_s, seen["y"], "classification")
        transfer, extras = self._unlabelled_loss(strong, probs, batch)
        return self._combine(cls, transfer, weak, extras)
