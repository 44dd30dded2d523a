"""The tasks of a multi-task model: kinds, labels and masks in a batch, losses and metrics.

A batch is ``{"x": inputs, "y_<task>": labels, "m_<task>": mask}``. The mask is a bool
``[B]`` saying which examples carry a label for that task (batches mixed from several
datasets); without it every example is labelled, and a batch without ``y_<task>`` has no
label for that task at all. Unlabelled rows may hold anything (``-1``, ``NaN``): they are
replaced by zeros before the loss, so they can never leak into it.

Per-example losses ``l_i`` by kind (``z_i`` the head's output for example ``i``):

* ``classification``: cross-entropy ``-log softmax(z_i)[y_i]``, ``z_i`` ``[C]``, ``y`` int ``[B]``;
* ``multilabel``: binary cross-entropy with logits averaged over the ``K`` labels,
  ``-1/K sum_k [y_ik log s(z_ik) + (1 - y_ik) log(1 - s(z_ik))]``, ``y`` ``[B, K]`` in [0, 1];
* ``regression``: squared error averaged over the ``K`` outputs, ``1/K sum_k (z_ik - y_ik)^2``,
  ``y`` ``[B]`` (``K = 1``; the head output is squeezed to ``[B]``) or ``[B, K]``.

The task loss is the mean over the labelled rows, ``L = sum_i m_i l_i / sum_i m_i``. A task
with no labelled row in a batch is *absent*: it gets no loss term and no gradient.
Metrics: accuracy (classification), micro-averaged F1 at logit 0 (multilabel), R^2
(regression); higher is better for all three.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.metrics import f1_score, r2_score
from torch import Tensor

from transferkit.errors import ConfigError, DataError

TaskKind = Literal["classification", "multilabel", "regression"]
METRICS: dict[str, str] = {
    "classification": "accuracy",
    "multilabel": "micro_f1",
    "regression": "r2",
}


class TaskSpec(BaseModel):
    """One task: its name (used in batch keys and logs), kind, output size and loss weight.

    ``loss_weight`` ``c_t`` multiplies the task loss before any weighting method sees it.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="task name (identifier)")
    kind: TaskKind = Field("classification", description="classification|multilabel|regression")
    num_outputs: int = Field(ge=1, description="classes, labels, or regression outputs")
    loss_weight: float = Field(1.0, ge=0, description="static multiplier c_t of the task loss")

    @model_validator(mode="after")
    def _enough_classes(self) -> TaskSpec:
        if self.kind == "classification" and self.num_outputs < 2:
            raise ValueError("a classification task needs num_outputs >= 2 classes")
        return self


def check_tasks(tasks: Sequence[TaskSpec], where: str = "method.params.tasks") -> list[TaskSpec]:
    """The tasks as a list, after checking there is at least one and names are unique."""
    tasks = list(tasks)
    if not tasks:
        raise ConfigError("no task is configured", where=where, fix="list at least one task")
    seen: set[str] = set()
    for i, t in enumerate(tasks):
        if t.name in seen:
            raise ConfigError(
                f"task name {t.name!r} is used twice",
                where=f"{where}[{i}].name",
                fix="give every task its own name",
            )
        seen.add(t.name)
    return tasks


@dataclass
class TaskLabels:
    """One task's labels in one batch: ``y`` (unlabelled rows zeroed) and ``mask`` [B]."""

    y: Tensor
    mask: Tensor | None


def batch_size_of(x: Any) -> int:
    """``B`` of prepared inputs: a tensor ``[B, ...]`` or a dict of tensors ``[B, L]``."""
    if isinstance(x, Tensor):
        return int(x.shape[0])
    if isinstance(x, Mapping) and x and all(isinstance(v, Tensor) for v in x.values()):
        return int(next(iter(x.values())).shape[0])
    raise DataError(
        f"the inputs are a {type(x).__name__}, not a tensor or a dict of tensors",
        where='batch["x"]',
        fix="prepare the inputs with the backbone's prepare()",
    )


def _mask(batch: Mapping[str, Any], name: str, b: int) -> Tensor | None:
    key = f"m_{name}"
    m = batch.get(key)
    if m is None:
        return None
    if not isinstance(m, Tensor) or m.shape != (b,):
        shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise DataError(
            f"the mask of task {name!r} has shape {shape}, not ({b},)",
            where=f'batch["{key}"]',
            fix="give one bool per example (True = labelled)",
        )
    return m if m.dtype == torch.bool else m != 0


def _labels(y: Any, task: TaskSpec, b: int) -> Tensor:
    key = f"y_{task.name}"
    k = task.num_outputs
    if not isinstance(y, Tensor):
        raise DataError(f"labels of task {task.name!r} are not a tensor", where=f'batch["{key}"]')
    if task.kind == "classification":
        ok, want = y.shape == (b,) and not y.is_floating_point(), f"int64 ({b},)"
    elif task.kind == "multilabel":
        ok, want = y.shape == (b, k), f"({b}, {k}) of 0/1"
    else:
        ok = y.shape == (b, k) or (k == 1 and y.shape in ((b,), (b, 1)))
        want = f"({b},)" if k == 1 else f"({b}, {k})"
    if not ok:
        raise DataError(
            f"labels of {task.kind} task {task.name!r} have shape {tuple(y.shape)} and dtype "
            f"{y.dtype}; expected {want}",
            where=f'batch["{key}"]',
            fix="check the collate function and the task's kind / num_outputs",
        )
    if task.kind == "regression" and k == 1:
        return y.reshape(b)
    return y


def gather_labels(batch: Mapping[str, Any], tasks: Sequence[TaskSpec]) -> dict[str, TaskLabels]:
    """Labels of every task whose ``y_<task>`` is in ``batch`` (shapes and keys checked).

    Unknown ``y_*`` / ``m_*`` keys raise :class:`DataError` (a typo would silently drop a
    task otherwise). Unlabelled rows are zeroed (see module docstring).
    """
    if "x" not in batch:
        raise DataError("the batch has no inputs", where='batch["x"]', fix='add key "x"')
    b = batch_size_of(batch["x"])
    names = {t.name for t in tasks}
    for key in batch:
        if key[:2] in ("y_", "m_") and key[2:] not in names:
            raise DataError(
                f"batch key {key!r} names no configured task",
                where=f'batch["{key}"]',
                fix=f"known tasks: {', '.join(sorted(names))}",
            )
    out: dict[str, TaskLabels] = {}
    for t in tasks:
        if f"y_{t.name}" not in batch:
            continue
        y, m = _labels(batch[f"y_{t.name}"], t, b), _mask(batch, t.name, b)
        if m is not None:
            fill = m if y.ndim == 1 else m.unsqueeze(-1)
            y = torch.where(fill, y, torch.zeros((), dtype=y.dtype, device=y.device))
        out[t.name] = TaskLabels(y, m)
    return out


def _bad_rows(y: Tensor, task: TaskSpec) -> Tensor:
    """bool ``[B]``: rows whose label is invalid for the task's kind."""
    if task.kind == "classification":
        return (y < 0) | (y >= task.num_outputs)
    yf = y.float().reshape(y.shape[0], -1)
    if task.kind == "multilabel":
        return ((yf < 0) | (yf > 1) | yf.isnan()).any(-1)
    return (~torch.isfinite(yf)).any(-1)


def present_tasks(labels: Mapping[str, TaskLabels], tasks: Sequence[TaskSpec]) -> list[str]:
    """Names of the tasks with at least one labelled row, in task order.

    Also raises :class:`DataError` for an invalid label on a labelled row (class id out of
    range, multilabel target outside [0, 1], non-finite regression target). Both checks
    share ONE device-to-host copy of ``2T`` flags per step.
    """
    specs = [t for t in tasks if t.name in labels]
    if not specs:
        return []
    flags = []
    for t in specs:
        lab = labels[t.name]
        m = lab.mask
        present = m.any() if m is not None else torch.ones((), dtype=torch.bool)
        bad = _bad_rows(lab.y, t)
        flags += [present.to(bad.device), (bad & m).any() if m is not None else bad.any()]
    host = torch.stack(flags).tolist()
    for i, t in enumerate(specs):
        if host[2 * i] and host[2 * i + 1]:
            raise DataError(
                f"task {t.name!r} has an invalid {t.kind} label in this batch",
                where=f'batch["y_{t.name}"]',
                fix=_label_fix(t),
            )
    return [t.name for i, t in enumerate(specs) if host[2 * i]]


def _label_fix(task: TaskSpec) -> str:
    if task.kind == "classification":
        return f"class ids must lie in 0..{task.num_outputs - 1} (mask unlabelled rows out)"
    if task.kind == "multilabel":
        return "multilabel targets must lie in [0, 1] (mask unlabelled rows out)"
    return "regression targets must be finite (mask unlabelled rows out with m_<task>)"


def head_outputs(raw: Tensor, task: TaskSpec) -> Tensor:
    """The head's ``[B, K]`` output as the task uses it (``[B]`` for 1-output regression)."""
    return raw.squeeze(-1) if task.kind == "regression" and task.num_outputs == 1 else raw


def per_example_loss(outputs: Tensor, y: Tensor, kind: TaskKind) -> Tensor:
    """Loss of each example ``[B]`` (see module docstring for the formulas)."""
    if kind == "classification":
        return F.cross_entropy(outputs, y.long(), reduction="none")
    if kind == "multilabel":
        bce = F.binary_cross_entropy_with_logits(outputs, y.to(outputs.dtype), reduction="none")
        return bce.mean(-1)
    se = (outputs - y.to(outputs.dtype)).square()
    return se if se.ndim == 1 else se.mean(-1)


def task_loss(outputs: Tensor, labels: TaskLabels, kind: TaskKind) -> Tensor:
    """Mean loss over the labelled rows, ``sum_i m_i l_i / sum_i m_i`` (a scalar)."""
    losses = per_example_loss(outputs, labels.y, kind)
    if labels.mask is None:
        return losses.mean()
    m = labels.mask
    kept = torch.where(m, losses, torch.zeros((), dtype=losses.dtype, device=losses.device))
    return kept.sum() / m.sum().clamp_min(1).to(losses.dtype)


def task_metric(task: TaskSpec, outputs: Any, y: Any, mask: Any = None) -> float:
    """The task's metric (``METRICS[kind]``) on the labelled rows; NaN when there are none."""
    out, lab = np.asarray(outputs, dtype=np.float64), np.asarray(y)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        out, lab = out[keep], lab[keep]
    if len(lab) == 0:
        return float("nan")
    if task.kind == "classification":
        return float((out.argmax(-1) == lab).mean())
    if task.kind == "multilabel":
        pred = (out > 0).astype(np.int64)
        return float(f1_score(lab.astype(np.int64), pred, average="micro", zero_division=0))
    return float(r2_score(lab.reshape(len(lab), -1), out.reshape(len(out), -1)))
