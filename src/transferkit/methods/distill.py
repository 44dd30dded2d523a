"""Knowledge distillation: train a student (backbone + head) to imitate a frozen teacher.

The loss is ``ce_weight * CE(z_s, y) + sum_k w_k L_k`` over the configured kinds:

* ``kd`` — Hinton et al. 2015, ``T^2 KL(softmax(z_t/T) || softmax(z_s/T))``;
* ``dkd`` — Zhao et al. 2022, ``T^2 (alpha TCKD + beta NCKD)``;
* ``fitnets`` — Romero et al. 2015, ``mean((u_t - r(v_s))^2)`` per hint pair, with a
  learned regressor ``r`` (1x1 conv / Linear) trained at the base learning rate;
* ``at`` — Zagoruyko & Komodakis 2017, attention-map distance per hint pair (the paper's
  weight is ``beta / 2 = 500``);
* ``rkd`` — Park et al. 2019, distance + angle structure of the pooled embeddings (weights
  ``rkd_distance_weight = 25``, ``rkd_angle_weight = 50`` inside the term).

(The maths of each term is in :mod:`transferkit.losses.distill`,
:mod:`~transferkit.losses.distill_features` and :mod:`~transferkit.losses.distill_relational`.)
``ce_weight = 0`` distils on unlabelled data: labels are ignored and DKD's target class is
the teacher's arg-max. Hint pairs ``[student_group, teacher_group]`` index the two
backbones' ``layer_groups()`` (negative indices count from the end).

The teacher (:class:`~transferkit.distill.teacher.FrozenTeacher`) is NOT a sub-module: its
parameters are not in ``parameters()``, ``state_dict()`` or any optimizer group, so
checkpoints and exported weights hold the student only; it still follows ``.to(device)``
and dtype casts, and always runs in eval mode without gradients. Batches are ``{"x",
"y"?}`` (live teacher on ``"x_teacher"`` if present, else on ``"x"``) or carry cached
teacher outputs ``{"t_logits", "t_embed", "t_feats_<k>"}``
(:class:`~transferkit.distill.data.TeacherCachedDataset`), which are used instead.

``augment`` (an :class:`~transferkit.augment_policy.AugmentConfig`) augments each training
batch ONCE and feeds the same augmented ``x`` to the student and to the teacher (live, no
gradients): cached teacher outputs describe the un-augmented inputs, so an augmented batch
never uses them (:meth:`Distill.augmented_batch`). The teacher must then read the student's
prepared inputs (same modality, image size and normalisation, tokenizer: checked when the
method is built). With MixUp/CutMix the cross-entropy uses the soft targets
``lam * onehot(y_i) + (1 - lam) * onehot(y_{i-1})`` and DKD's target class is their
arg-max; the KD terms need no labels, so unlabelled batches get mixed inputs too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from transferkit.augment_policy import AugmentConfig
from transferkit.backbones.base import Backbone, Preprocess
from transferkit.backbones.taps import normalize_indices
from transferkit.distill.features import forward_with_hints, hint_dims
from transferkit.distill.teacher import FrozenTeacher, feature_key
from transferkit.errors import ConfigError, DataError
from transferkit.losses.distill import dkd_loss, kd_loss
from transferkit.losses.distill_features import HintRegressor, at_loss, fitnets_loss
from transferkit.losses.distill_relational import rkd_loss
from transferkit.methods.base import Method, MethodParams, register_method
from transferkit.methods.supervised import make_augmenter, task_loss

LossKind = Literal["kd", "dkd", "fitnets", "at", "rkd"]
HINT_KINDS = ("fitnets", "at")


class DistillParams(MethodParams):
    losses: dict[LossKind, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"kd": 1.0},
        description="distillation terms and their weights: kd, dkd, fitnets, at (paper: 500), rkd",
    )
    temperature: float = Field(4.0, gt=0, description="softmax temperature T of kd / dkd")
    alpha: float = Field(1.0, ge=0, description="DKD weight of TCKD (target-class KD)")
    beta: float = Field(8.0, ge=0, description="DKD weight of NCKD (CIFAR 8, ImageNet 0.5)")
    hint_layers: list[tuple[int, int]] = Field(
        default_factory=lambda: [(-1, -1)],
        description="[student_group, teacher_group] pairs of layer-group indices (fitnets, at)",
    )
    hint_pool: bool = Field(
        False, description="pooled [B, D] hints (any pair of architectures) instead of maps"
    )
    at_p: float = Field(2.0, gt=0, description="attention transfer exponent p")
    rkd_distance_weight: float = Field(25.0, ge=0, description="RKD distance-term weight")
    rkd_angle_weight: float = Field(50.0, ge=0, description="RKD angle-term weight")
    ce_weight: float = Field(
        1.0, ge=0, description="weight of hard-label cross-entropy (0: unlabelled, teacher only)"
    )
    backbone_lr_mult: float = Field(1.0, gt=0, description="student backbone lr = lr * this")
    augment: AugmentConfig | None = Field(
        None, description="augmentation policy; teacher and student see the same augmented x"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DistillParams:
        if self.ce_weight == 0 and not any(w > 0 for w in self.losses.values()):
            raise ValueError("every loss weight is 0: set ce_weight or a distillation weight > 0")
        if any(k in self.losses for k in HINT_KINDS) and not self.hint_layers:
            raise ValueError("fitnets / at need at least one [student, teacher] hint_layers pair")
        if "at" in self.losses and self.hint_pool:
            raise ValueError("attention transfer needs spatial / token maps: set hint_pool: false")
        return self


@register_method
class Distill(Method):
    """Student backbone + head distilled from a frozen teacher (see the module docstring).

    Args:
        backbone: the student's backbone (any spec: timm, ``tk:``, ``hf:``, or
            :func:`~transferkit.distill.student.student_from_teacher`).
        head: the student's head ``[B, D_s] -> [B, C]``.
        task: must be ``"classification"``.
        params: :class:`DistillParams`.
        teacher_backbone, teacher_head: the trained teacher (frozen here, in place).
    """

    name: ClassVar[str] = "distill"
    family: ClassVar[str] = "distillation"
    paper: ClassVar[str] = (
        "Hinton et al. 2015, Distilling the Knowledge in a Neural Network "
        "https://arxiv.org/abs/1503.02531; FitNets https://arxiv.org/abs/1412.6550; "
        "AT https://arxiv.org/abs/1612.03928; RKD https://arxiv.org/abs/1904.05068; "
        "DKD https://arxiv.org/abs/2203.08679"
    )
    Params: ClassVar[type[MethodParams]] = DistillParams

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        task: str,
        params: DistillParams,
        *,
        teacher_backbone: Backbone,
        teacher_head: nn.Module,
    ) -> None:
        super().__init__()
        if task != "classification":
            raise ConfigError(
                f"distillation needs a classification task, got {task!r}",
                where="method: distill",
                fix="distil classifiers; for regression fine-tune the student instead",
            )
        self.backbone, self.head, self.task, self.hparams = backbone, head, task, params
        object.__setattr__(self, "_teacher", FrozenTeacher(teacher_backbone, teacher_head))
        self.augmenter = make_augmenter(params.augment, backbone, head, "classification")
        if self.augmenter is not None:
            check_shared_inputs(backbone.preprocess, teacher_backbone.preprocess)
        uses_hints = any(k in params.losses for k in HINT_KINDS)
        pairs = params.hint_layers if uses_hints else []
        self.student_layers_ = hint_index(backbone, [s for s, _ in pairs], "student")
        self.teacher_layers_ = self.teacher.normalize_layers([t for _, t in pairs])
        self.regressors = nn.ModuleList()
        if "fitnets" in params.losses:
            c_s = hint_dims(backbone, self.student_layers_)
            c_t = hint_dims(teacher_backbone, self.teacher_layers_)
            self.regressors.extend(HintRegressor(a, b) for a, b in zip(c_s, c_t, strict=True))

    @property
    def teacher(self) -> FrozenTeacher:
        """The frozen teacher (not a sub-module: excluded from parameters and state_dict)."""
        return self.__dict__["_teacher"]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Distill:
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)  # follow .to(device) / dtype casts
        return self

    def predict(self, x: Any) -> Tensor:
        """Student logits ``[B, C]``."""
        return self.head(self.backbone(x))

    # ----------------------------------------------------------------- training
    def teacher_targets(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Cached teacher outputs from the batch, or a live teacher pass."""
        p = self.hparams
        if "t_logits" in batch:
            keys = ["t_logits", *(feature_key(k) for k in self.teacher_layers_)]
            keys += ["t_embed"] if "rkd" in p.losses else []
            missing = [k for k in keys if k not in batch]
            if missing:
                raise DataError(
                    f"the batch carries cached teacher logits but not {missing}",
                    where="distill batch",
                    fix="compute the teacher cache with the same hint_layers and hint_pool",
                )
            return {k: batch[k] for k in keys}
        x_t = batch["x_teacher"] if "x_teacher" in batch else batch["x"]
        return self.teacher.outputs(x_t, self.teacher_layers_, pool=p.hint_pool)

    def augmented_batch(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """``batch`` after ``augment`` (in training mode; else ``batch`` itself).

        ``"x"`` is augmented once; ``"x_teacher"`` and the cached ``"t_*"`` outputs are
        dropped, so :meth:`teacher_targets` runs the teacher on the augmented ``x``. With
        MixUp/CutMix ``"y"`` becomes soft targets ``[B, C]`` (a batch without labels mixes its
        inputs alone) and ``"y_mask"`` keeps a row only if it and its mixing partner (row
        ``i - 1``, torchvision's ``roll(1)``) are both labelled.
        """
        aug = self.augmenter
        if aug is None or not self.training:
            return batch
        out = {k: v for k, v in batch.items() if not k.startswith("t_") and k != "x_teacher"}
        y = batch.get("y")
        if y is None and aug.mixes:  # no labels: mix the inputs, drop the dummy targets
            x = batch["x"]  # mixing policies are for image / vector tensors
            out["x"], _ = aug(x, x.new_zeros(x.shape[0], dtype=torch.long))
            return out
        out["x"], y_aug = aug(batch["x"], None if y is None else y.long())
        if y is not None:
            out["y"] = y_aug
        if "y_mask" in batch and aug.mixes:
            mask = batch["y_mask"].bool()
            out["y_mask"] = mask & mask.roll(1, 0)
        return out

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss", "ce"?, one entry per distillation term, "agreement"}``."""
        p = self.hparams
        batch = self.augmented_batch(batch)
        x = batch["x"]
        embed, maps = forward_with_hints(self.backbone, x, self.student_layers_, p.hint_pool)
        logits = self.head(embed)
        t = self.teacher_targets(batch)
        t_logits = t["t_logits"].to(logits.dtype)
        y, labelled = self._labels(batch, t_logits)
        terms: dict[str, Tensor] = {}
        for kind in p.losses:
            terms[kind] = self._term(kind, logits, t_logits, y, embed, maps, t, x)
        total = sum((p.losses[k] * v for k, v in terms.items()), logits.new_zeros(()))
        out: dict[str, Tensor] = {}
        if p.ce_weight > 0 and y is not None:
            if labelled is None:
                out["ce"] = task_loss(logits, y, "classification")
            elif bool(labelled.any()):
                out["ce"] = task_loss(logits[labelled], y[labelled], "classification")
            else:  # a batch of unlabelled examples only: distillation terms alone
                out["ce"] = logits.new_zeros(())
            total = total + p.ce_weight * out["ce"]
        agreement = (logits.detach().argmax(1) == t_logits.argmax(1)).float().mean()
        return {"loss": total, **out, **terms, "agreement": agreement}

    def _labels(
        self, batch: Mapping[str, Any], t_logits: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(labels [B] or soft targets [B, C], labelled mask [B] or None)``.

        With ``"y_mask"`` in the batch (labelled examples mixed with an unlabelled pool),
        unlabelled rows take the teacher's arg-max as their label (one-hot among soft
        targets; used by DKD's target class only: the cross-entropy reads labelled rows).
        """
        if "y_mask" in batch:
            mask, y, t_arg = batch["y_mask"].bool(), batch["y"], t_logits.argmax(1)
            if _is_soft(y):
                fill = F.one_hot(t_arg, y.shape[1]).to(y.dtype)
                return torch.where(mask[:, None], y, fill), mask
            return torch.where(mask, y.long(), t_arg), mask
        if self.hparams.ce_weight == 0:
            return None, None
        if batch.get("y") is None:
            raise DataError(
                "ce_weight > 0 needs labels, but the batch has no 'y'",
                where="distill batch",
                fix="give labelled data, or set ce_weight: 0 to distil on unlabelled data",
            )
        y = batch["y"]
        return (y if _is_soft(y) else y.long()), None

    def _term(
        self,
        kind: str,
        logits: Tensor,
        t_logits: Tensor,
        y: Tensor | None,
        embed: Tensor,
        maps: list[Tensor],
        t: Mapping[str, Tensor],
        x: Any,
    ) -> Tensor:
        p = self.hparams
        if kind == "kd":
            return kd_loss(logits, t_logits, p.temperature)
        if kind == "dkd":
            target = y.argmax(1) if y is not None and _is_soft(y) else y
            return dkd_loss(logits, t_logits, target, p.alpha, p.beta, p.temperature)
        if kind == "rkd":
            return rkd_loss(embed, t["t_embed"], p.rkd_distance_weight, p.rkd_angle_weight)
        t_maps = [t[feature_key(k)].to(embed.dtype) for k in self.teacher_layers_]
        if kind == "fitnets":
            parts = [
                fitnets_loss(r(s, like=u), u)
                for r, s, u in zip(self.regressors, maps, t_maps, strict=True)
            ]
        else:
            mask = x.get("attention_mask") if isinstance(x, Mapping) else None
            parts = [
                at_loss(s, u, p.at_p, _token_mask(mask, s, u))
                for s, u in zip(maps, t_maps, strict=True)
            ]
        return torch.stack(parts).sum()

    # ----------------------------------------------------------------- optimizer
    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """``head`` and ``regressors`` at ``base_lr``, ``backbone`` at ``base_lr *
        backbone_lr_mult``; the teacher in none."""
        groups = [
            {"params": _trainable(self.head), "lr": base_lr, "name": "head"},
            {
                "params": _trainable(self.backbone),
                "lr": base_lr * self.hparams.backbone_lr_mult,
                "name": "backbone",
            },
        ]
        if _trainable(self.regressors):
            groups.append(
                {"params": _trainable(self.regressors), "lr": base_lr, "name": "regressors"}
            )
        return [g for g in groups if g["params"]]


def _is_soft(y: Tensor) -> bool:
    return y.is_floating_point() and y.ndim == 2


def _image_key(pre: Preprocess) -> tuple[Any, Any, tuple[int, ...]]:
    """``(mean, std, input_size)`` as float / int tuples (``None`` / ``()`` when unknown)."""
    mean = None if pre.mean is None else tuple(float(v) for v in pre.mean)
    std = None if pre.std is None else tuple(float(v) for v in pre.std)
    return mean, std, tuple(int(v) for v in pre.input_size or ())


def _sizes_fit(student: tuple[int, ...], teacher: tuple[int, ...]) -> bool:
    """Same channels and ``H, W`` (a teacher dimension of 0 accepts any; unknown: fits)."""
    if not student or not teacher:
        return True
    dims = zip(student[1:], teacher[1:], strict=False)
    return (
        len(student) == len(teacher)
        and student[0] == teacher[0]
        and all(t in (0, s) for s, t in dims)
    )


def _vocab(tokenizer: Any) -> Any:
    get = getattr(tokenizer, "get_vocab", None)
    return get() if callable(get) else id(tokenizer)


def input_mismatch(student: Preprocess, teacher: Preprocess) -> str:
    """Why the teacher cannot read the student's prepared inputs ("" when it can): another
    modality; images with another normalisation, channel count or size; text with another
    tokenizer vocabulary."""
    if student.modality != teacher.modality:
        return f"the teacher reads {teacher.modality}, the student {student.modality}"
    if student.modality == "image":
        (sm, ss, s_size), (tm, ts, t_size) = _image_key(student), _image_key(teacher)
        if (sm, ss) != (tm, ts) or not _sizes_fit(s_size, t_size):
            return f"teacher {t_size} mean {tm} std {ts}; student {s_size} mean {sm} std {ss}"
    if student.modality == "text" and _vocab(student.tokenizer) != _vocab(teacher.tokenizer):
        return "teacher and student tokenise with different vocabularies"
    return ""


def check_shared_inputs(student: Preprocess, teacher: Preprocess) -> None:
    """Raise ConfigError when augmentation cannot feed the student's inputs to the teacher."""
    diff = input_mismatch(student, teacher)
    if diff:
        raise ConfigError(
            "augment feeds the student's augmented inputs to the teacher too, but their "
            f"preprocessing differs ({diff})",
            where="method.params.augment",
            fix="give teacher and student the same input preprocessing, or drop augment",
        )


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [q for q in module.parameters() if q.requires_grad]


def _token_mask(mask: Any, s: Tensor, t: Tensor) -> Tensor | None:
    """The attention mask ``[B, L]`` when both maps are token maps of that length."""
    if not isinstance(mask, Tensor) or s.ndim != 3 or t.ndim != 3:
        return None
    return mask if mask.shape == s.shape[:2] == t.shape[:2] else None


def hint_index(backbone: Backbone, indices: list[int], who: str) -> list[int]:
    """Normalise layer-group indices of the ``who`` backbone (errors name the range)."""
    n = len(backbone.layer_groups())
    return normalize_indices(indices, n, f"method.params.hint_layers ({who})")
