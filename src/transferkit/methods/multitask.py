"""Multi-task learning: one backbone, one head per task, a task weighting or gradient method.

A batch is ``{"x": inputs, "y_<task>": labels, "m_<task>": bool mask [B]}`` (labels and
masks optional per task, see :mod:`transferkit.mtl.tasks`). Per step, with ``L_t`` the
task losses and ``c_t`` their static ``loss_weight``:

* a loss weighting (``equal``, ``uncertainty``, ``dwa``, ``gradnorm``) returns the
  objective, e.g. ``sum_t lambda_t c_t L_t``, and the trainer back-propagates it;
* a gradient method (``pcgrad``, ``mgda``, ``cagrad``, ``nash``) combines the per-task
  gradients on the shared parameters: the method then exposes ``manual_backward`` and the
  trainer calls it instead of ``accelerator.backward`` (:mod:`transferkit.mtl.surgery`).
  Outside the trainer call ``method.backward(outputs)`` after ``training_step``.

``training_step`` returns ``loss``, ``loss_<task>`` (the raw ``L_t`` of each task present
in the batch; absent tasks are left out so logged means cover the steps they were present)
and ``weight_<task>``; with a gradient method the weights, and the cosine similarity
``gradcos_<a>_<b>`` of each pair of task gradients, come from ``manual_backward`` (after
the surgery). Architectures: ``hard`` (shared backbone), ``mmoe`` (Ma et al. 2018) and
``adapters`` (one peft adapter per task); see :mod:`transferkit.mtl.architectures`.

Distributed runs: gradient methods synchronise gradients themselves (exactly, see
:mod:`transferkit.mtl.surgery`). Loss weightings use DDP as usual; when batches can lack a
task (masks), its head gets no gradient on that process, so set the trainer's
``find_unused_parameters``. GradNorm and DWA see each process's own losses (DWA adds its
epoch sums over processes; GradNorm's weight gradients are averaged by DDP, and its
``L(0)`` is process 0's, as DDP broadcasts buffers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import Tensor, nn

from transferkit.backbones.base import Backbone, Prepared
from transferkit.engine.callbacks import Callback
from transferkit.errors import ConfigError, TrainingError
from transferkit.methods.base import Method, MethodParams, register_method
from transferkit.methods.heads import make_head
from transferkit.mtl.architectures import HardSharing, MMoE, TaskArchitecture
from transferkit.mtl.gradient_methods import GradientMethod
from transferkit.mtl.surgery import GradientSurgery, PendingStep
from transferkit.mtl.tasks import (
    TaskSpec,
    check_tasks,
    gather_labels,
    head_outputs,
    present_tasks,
    task_loss,
    task_metric,
)
from transferkit.mtl.weighting import WEIGHTINGS, Weighting, build_weighting


class WeightingSpec(BaseModel):
    """A registered weighting's name and parameters (``{name: pcgrad, params: {...}}``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("equal", description="equal|uncertainty|dwa|gradnorm|pcgrad|mgda|cagrad|nash")
    params: dict[str, Any] = Field(default_factory=dict, description="the weighting's params")


class MMoESpec(BaseModel):
    """MMoE sizes (used with ``architecture: mmoe``)."""

    model_config = ConfigDict(extra="forbid")
    experts: int = Field(4, ge=1, description="number of experts E")
    expert_dim: int | None = Field(None, ge=1, description="expert output size (default D)")
    expert_hidden: int | None = Field(None, ge=1, description="expert hidden size (default H)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside the experts")


class MultiTaskParams(MethodParams):
    tasks: list[TaskSpec] = Field(description="[{name, kind, num_outputs, loss_weight}, ...]")
    architecture: Literal["hard", "mmoe", "adapters"] = Field(
        "hard", description="hard sharing, MMoE, or one peft adapter per task"
    )
    weighting: WeightingSpec = Field(
        default_factory=WeightingSpec, description="{name, params} or just a name"
    )
    backbone_lr_mult: float = Field(0.1, gt=0, description="backbone (and adapter) lr = lr * this")
    mmoe: MMoESpec = Field(default_factory=MMoESpec, description="MMoE sizes")
    adapters: dict[str, Any] = Field(
        default_factory=dict, description="adapter settings {kind, r, alpha, dropout, ...}"
    )
    head: Literal["linear", "mlp"] = Field("linear", description="task head type")
    head_hidden: int = Field(256, ge=1, description="hidden size of mlp heads")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the heads")

    @field_validator("weighting", mode="before")
    @classmethod
    def _name_only(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> MultiTaskParams:
        check_tasks(self.tasks)
        build_weighting(self.weighting.name, self.weighting.params, self.tasks)
        return self


def _peft_config(spec: Mapping[str, Any]) -> Any:
    from transferkit.finetune.peft import PeftConfig

    try:
        return PeftConfig.model_validate(dict(spec))
    except ValidationError as err:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(
            f"invalid adapter settings: {msgs}",
            where="method.params.adapters",
            fix="use {kind: lora|ia3|loha, r, alpha, dropout, target_modules}",
        ) from None


def build_architecture(p: MultiTaskParams, backbone: Backbone) -> TaskArchitecture:
    """The architecture ``p.architecture`` over ``backbone`` for ``p.tasks``."""
    names = [t.name for t in p.tasks]
    if p.architecture == "mmoe":
        m = p.mmoe
        return MMoE(backbone, names, m.experts, m.expert_dim, m.expert_hidden, m.dropout)
    if p.architecture == "adapters":
        from transferkit.mtl.adapters import TaskAdapters

        return TaskAdapters(backbone, names, _peft_config(p.adapters))
    return HardSharing(backbone, names)


class WeightingCallback(Callback):
    """Calls the weighting's ``step_end`` / ``epoch_end`` (epoch sums added over processes)."""

    def __init__(self, weighting: Weighting) -> None:
        self.weighting = weighting

    @property
    def state_key(self) -> str:
        return "MultiTaskWeighting"

    def on_step_end(self, trainer: Any) -> None:
        self.weighting.step_end()

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        acc = trainer.accelerator
        reduce = None
        if acc is not None and acc.num_processes > 1:
            reduce = lambda t: acc.reduce(t.to(acc.device), reduction="sum")  # noqa: E731
        self.weighting.epoch_end(reduce)


@register_method
class MultiTask(Method):
    """Multi-task learning on any backbone (module docstring).

    Args:
        backbone: the shared backbone (adapters are injected into it in place).
        params: :class:`MultiTaskParams` (or a dict validated into one).
    """

    name: ClassVar[str] = "multitask"
    family: ClassVar[str] = "multi-task"
    paper: ClassVar[str] = (
        "Caruana 1997, Multitask Learning, https://doi.org/10.1023/A:1007379606734; "
        "Ruder 2017, https://arxiv.org/abs/1706.05098"
    )
    Params: ClassVar[type[MethodParams]] = MultiTaskParams

    def __init__(self, backbone: Backbone, params: MultiTaskParams | Mapping[str, Any]) -> None:
        super().__init__()
        p = (
            params
            if isinstance(params, MultiTaskParams)
            else MultiTaskParams.model_validate(dict(params))
        )
        self.hparams = p
        self.tasks = check_tasks(p.tasks)
        self.specs = {t.name: t for t in self.tasks}
        self.arch = build_architecture(p, backbone)
        self.heads = nn.ModuleDict(
            {
                t.name: make_head(
                    self.arch.out_features, t.num_outputs, p.head, p.head_hidden, p.head_dropout
                )
                for t in self.tasks
            }
        )
        self.weighting = build_weighting(p.weighting.name, p.weighting.params, self.tasks)
        self._last_shared = self.arch.last_shared_parameters()
        self.surgery: GradientSurgery | None = None
        self._pending: PendingStep | None = None
        self._check_setup()
        w = self.weighting
        self._representation_space = isinstance(w, GradientMethod) and w.space == "representation"
        if isinstance(w, GradientMethod):
            self.surgery = GradientSurgery(
                w,
                self.arch.shared_parameters(),
                {t.name: self.task_parameters(t.name) for t in self.tasks},
            )

    @property
    def backbone(self) -> Backbone:
        return self.arch.backbone

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Trainable parameters of task ``task`` only (its architecture part and head)."""
        head = [q for q in self.heads[task].parameters() if q.requires_grad]
        return [*self.arch.task_parameters(task), *head]

    def _check_setup(self) -> None:
        where = "method.params.weighting"
        w = self.weighting
        if isinstance(w, GradientMethod):
            if not self.arch.shared_parameters():
                raise ConfigError(
                    f"{w.name} combines gradients on shared parameters, but the "
                    f"{self.hparams.architecture} architecture has none trainable",
                    where=where,
                    fix="use a loss weighting (equal, uncertainty, dwa), or train shared "
                    "layers (e.g. adapters: {train_norms: true})",
                )
            if w.space == "representation" and not self.arch.shares_representation:
                raise ConfigError(
                    f"{w.name} in representation space needs a shared representation, which "
                    f"the {self.hparams.architecture} architecture does not have",
                    where=f"{where}.params.space",
                    fix='set space: "params"',
                )
        if w.needs_last_shared and not self._last_shared:
            raise ConfigError(
                f"{w.name} needs a trainable last shared layer",
                where=where,
                fix="train the backbone's last layer group, or use another weighting",
            )
        _check_partition(self)

    # ----------------------------------------------------------------- training
    def training_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss", "loss_<task>", "weight_<task>"}`` (module docstring)."""
        labels = gather_labels(batch, self.tasks)
        present = present_tasks(labels, self.tasks)
        if not present:  # nothing labelled: a step that changes nothing
            self._pending = PendingStep({})
            device = next(self.heads.parameters()).device
            return {"loss": torch.zeros((), device=device, requires_grad=True)}
        rep = leaf = None
        if self._representation_space:
            rep = self.arch.encode(batch["x"])
            leaf = tuple(r.detach().requires_grad_(True) for r in rep)
            feats = {t: self.arch.decode(leaf, t) for t in present}
        else:
            feats = self.arch.task_features(batch["x"], present)
        raw = {
            t: task_loss(self._outputs(t, feats[t]), labels[t], self.specs[t].kind) for t in present
        }
        losses = {t: raw[t] * self.specs[t].loss_weight for t in present}
        out: dict[str, Tensor] = {f"loss_{t}": v.detach() for t, v in raw.items()}
        if self.surgery is not None:
            self._pending = PendingStep(losses, rep, leaf)
            return {"loss": torch.stack(list(losses.values())).sum(), **out}
        res = self.weighting.combine(losses, self._last_shared)
        return {"loss": res.loss, **out, **{f"weight_{t}": w for t, w in res.weights.items()}}

    @property
    def manual_backward(self) -> Callable[..., dict[str, float]] | None:
        """The trainer's hook: ``manual_backward(outputs, accelerator)`` with a gradient
        method (it writes ``.grad`` and returns ``weight_*`` / ``gradcos_*`` scalars);
        ``None`` with a loss weighting (the usual ``backward`` of ``outputs["loss"]``)."""
        return self._surgery_backward if self.surgery is not None else None

    def _surgery_backward(
        self, outputs: Mapping[str, Any], accelerator: Any | None = None
    ) -> dict[str, float]:
        pending, self._pending = self._pending, None
        if pending is None or self.surgery is None:
            raise TrainingError(
                "manual_backward was called without a training_step before it",
                where=f"{type(self).__name__}.manual_backward",
                fix="call training_step(batch) once before each backward",
            )
        return self.surgery.backward(pending, accelerator)

    def backward(
        self, outputs: Mapping[str, Any], accelerator: Any | None = None
    ) -> dict[str, float]:
        """Back-propagate ``training_step``'s outputs the right way for the weighting
        (outside the trainer); returns the extra scalars of a gradient method."""
        manual = self.manual_backward
        if manual is not None:
            return manual(outputs, accelerator)
        loss = outputs["loss"]
        accelerator.backward(loss) if accelerator is not None else loss.backward()
        return {}

    def training_callbacks(self) -> list[Callback]:
        return [WeightingCallback(self.weighting)]

    # ----------------------------------------------------------------- inference
    def _outputs(self, task: str, features: Tensor) -> Tensor:
        return head_outputs(self.heads[task](features), self.specs[task])

    def predict(self, x: Prepared) -> dict[str, Tensor]:  # type: ignore[override]
        """``{task: outputs}``: logits ``[B, C]`` / ``[B, K]``, regression ``[B]`` or ``[B, K]``."""
        feats = self.arch.task_features(x, list(self.specs))
        return {t: self._outputs(t, f) for t, f in feats.items()}

    def predict_task(self, x: Prepared, task: str) -> Tensor:
        """Outputs of one task (only its own adapter pass for ``adapters``)."""
        if task not in self.specs:
            raise ConfigError(
                f"unknown task {task!r}",
                where="predict_task(task)",
                fix=f"known tasks: {', '.join(self.specs)}",
            )
        return self._outputs(task, self.arch.task_features(x, [task])[task])

    @torch.no_grad()
    def evaluate(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """``{<task>_<metric>: value}`` on a labelled batch (see ``mtl.tasks.METRICS``)."""
        from transferkit.mtl.tasks import METRICS

        labels = gather_labels(batch, self.tasks)
        preds = self.predict(batch["x"])
        out = {}
        for t, lab in labels.items():
            spec = self.specs[t]
            m = None if lab.mask is None else lab.mask.cpu().numpy()
            val = task_metric(spec, preds[t].float().cpu().numpy(), lab.y.cpu().numpy(), m)
            out[f"{t}_{METRICS[spec.kind]}"] = val
        return out

    # ----------------------------------------------------------------- optimizer
    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """``backbone`` (lr * backbone_lr_mult, adapters included), ``mtl`` (experts,
        gates), ``heads`` (lr) and ``weighting`` (lr * its lr_mult, no weight decay)."""
        body = {id(q) for q in self.backbone.parameters()}
        arch = [q for q in self.arch.parameters() if q.requires_grad]
        groups = [
            {
                "params": [q for q in arch if id(q) in body],
                "lr": base_lr * self.hparams.backbone_lr_mult,
                "name": "backbone",
            },
            {"params": [q for q in arch if id(q) not in body], "lr": base_lr, "name": "mtl"},
            {
                "params": [q for q in self.heads.parameters() if q.requires_grad],
                "lr": base_lr,
                "name": "heads",
            },
            {
                "params": [q for q in self.weighting.parameters() if q.requires_grad],
                "lr": base_lr * self.weighting.lr_mult(),
                "name": "weighting",
                "weight_decay": 0.0,
            },
        ]
        return [g for g in groups if g["params"]]


def _check_partition(method: MultiTask) -> None:
    """Every trainable parameter is shared, task-specific (one task) or the weighting's."""
    owner: dict[int, str] = {}
    parts = [
        ("shared", method.arch.shared_parameters()),
        ("weighting", list(method.weighting.parameters())),
    ]
    parts += [(f"task {t}", method.task_parameters(t)) for t in method.specs]
    for label, params in parts:
        for q in params:
            if id(q) in owner:
                raise TrainingError(
                    f"a parameter belongs to both {owner[id(q)]} and {label}",
                    where=type(method.arch).__name__,
                    fix="report this: the architecture's parameter split is wrong",
                )
            owner[id(q)] = label
    loose = [n for n, q in method.named_parameters() if q.requires_grad and id(q) not in owner]
    if loose:
        raise TrainingError(
            f"trainable parameters {loose[:3]} are neither shared nor task-specific",
            where=type(method.arch).__name__,
            fix="report this: the architecture's parameter split is wrong",
        )


__all__ = ["WEIGHTINGS", "MultiTask", "MultiTaskParams", "WeightingCallback", "WeightingSpec"]
