"""The stages of a multi-task run: one shared model, and every task trained alone.

* ``target`` — the ``multitask`` method (shared backbone + one head per task, the
  configured architecture and loss weighting) trained on :class:`MultiTaskDataset`
  batches; early stopping watches ``val_mean_task_score`` (the mean over tasks of each
  task's primary validation metric: accuracy, micro-F1 for multi-label, or R² for
  regression). Every task is then evaluated on its own test split.
* ``single_<task>`` — the same backbone fine-tuned on that task alone, same budget: the
  per-task comparator (negative transfer between tasks shows up as a task whose shared
  model is worse than its single-task model). A multi-label task has no single-task
  method of its own: its comparator is the ``multitask`` method holding that one task
  (hard sharing, a linear head, equal weighting: plain BCE-with-logits fine-tuning),
  scored with micro-F1 like the shared model.

Multi-process launches: test outputs are split across processes and gathered
(:func:`stages.predict_distributed`). With a loss weighting and tasks from several
datasets a batch shard can lack a task, whose head then gets no gradient on that process:
DDP's ``find_unused_parameters`` is switched on for such runs (whatever the process count,
so that a run can resume under another one). Gradient methods synchronise by hand.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from transferkit.backbones import create_backbone
from transferkit.data.loaders import ExampleDataset, collate_with
from transferkit.engine import Trainer, evaluate_predictions
from transferkit.experiment import stages
from transferkit.experiment.mtl_metrics import task_metrics, task_primary_metric
from transferkit.experiment.multitask_data import MultiTaskDataset, TaskInfo
from transferkit.methods import METHODS
from transferkit.methods.finetune import FinetuneParams


class _TaskView(torch.nn.Module):
    """One task of a multi-task model as a single-output predictor."""

    def __init__(self, method: Any, task: str, kind: str = "classification") -> None:
        super().__init__()
        self.method, self.task, self.kind = method, task, kind

    def predict(self, x: Any) -> torch.Tensor:
        out = self.method.predict_task(x, self.task)
        squeeze = self.kind != "multilabel" and out.ndim == 2 and out.shape[-1] == 1
        return out.squeeze(-1) if squeeze else out


def _task_outputs(method: Any, task: TaskInfo, ds: Any, bs: int) -> np.ndarray:
    view = _TaskView(method, task.name, task.kind)
    out, _ = evaluate_predictions(
        view, ExampleDataset(ds), collate_with(method.backbone.prepare), bs
    )
    return np.asarray(out, dtype=np.float32)


def _test_outputs(method: Any, task: TaskInfo, ds: Any, bs: int) -> np.ndarray:
    """Test outputs of one task, split across the processes of a launch and gathered."""
    view = _TaskView(method, task.name, task.kind)
    return stages.predict_distributed(view, ds, method.backbone.prepare, bs)


def _needs_unused_parameters(method: Any, infos: list[TaskInfo]) -> bool:
    """A loss weighting over several task groups: some heads may miss a batch shard."""
    return len({t.group for t in infos}) > 1 and method.weighting.kind == "loss"


def _score(metrics: dict[str, float], kind: str) -> float:
    return float(metrics[task_primary_metric(kind)])


def build_multitask(
    ctx: stages.StageContext,
    pretrained: bool = True,
    only: TaskInfo | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Backbone from ``model`` + the ``multitask`` method with the run's tasks.

    ``only`` keeps one task (a single-task comparator); ``overrides`` replace entries
    of ``method.params``.
    """
    cfg = ctx.cfg
    assert ctx.tasks is not None
    infos, splits = ctx.tasks
    infos = [only] if only is not None else infos
    m = cfg.model
    bb = create_backbone(m.backbone, pretrained=pretrained and m.pretrained, **m.backbone_options)
    for t in infos:
        stages.check_modality(bb, splits[t.name])
    specs = [
        {"name": t.name, "kind": t.kind, "num_outputs": t.num_outputs, "loss_weight": t.weight}
        for t in infos
    ]
    cls = METHODS.get(cfg.method.name)
    params = cls.Params.model_validate({**cfg.method.params, **(overrides or {}), "tasks": specs})
    return cls(bb, params)


def _fit_tasks(
    ctx: stages.StageContext, stage: str, method: Any, infos: list[TaskInfo]
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Train ``method`` on the tasks ``infos`` (early stopping on the mean task score);
    return the fit result and every task's test ``{"outputs", "y", "metrics"}``."""
    cfg = ctx.cfg
    assert ctx.tasks is not None
    splits = ctx.tasks[1]
    bs = cfg.train.eval_batch_size

    def val_fn(m: Any) -> dict[str, float]:
        out, scores = {}, []
        for t in infos:
            val = splits[t.name].val
            met = task_metrics(_task_outputs(m, t, val, bs), val.y, t.kind)
            out.update({f"val_{t.name}_{k}": v for k, v in met.items()})
            scores.append(_score(met, t.kind))
        out["val_mean_task_score"] = float(np.mean(scores))
        return out

    tc = dataclasses.replace(
        stages.train_config(cfg, ctx.seed, "classification", None),
        monitor="val_mean_task_score",
        mode="max",
        find_unused_parameters=_needs_unused_parameters(method, infos),
    )
    data = MultiTaskDataset(
        infos,
        splits,
        sampling=cfg.data.task_sampling,
        temperature=cfg.data.sampling_temperature,
        seed=ctx.seed,
    )
    trainer = Trainer(
        method,
        data,
        collate_with(method.backbone.prepare),
        tc,
        ctx.run_dir / "checkpoints" / stage,
        val_fn=val_fn,
        quiet=ctx.quiet,
    )
    result = trainer.fit(resume=ctx.resume)
    per_task = {}
    for t in infos:
        test = splits[t.name].test
        outputs = _test_outputs(method, t, test, bs)
        metrics = task_metrics(outputs, test.y, t.kind)
        per_task[t.name] = {"outputs": outputs, "y": test.y, "metrics": metrics}
    return result, per_task


def _fit_extra(result: Any) -> dict[str, Any]:
    return {
        "steps": result.global_step,
        "stopped": str(result.stopped_reason),
        "best_epoch": result.best_epoch,
    }


def run_multitask_stage(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
    """Train the shared model, evaluate every task on its own test split."""
    torch.manual_seed(ctx.seed)
    t0 = time.perf_counter()
    assert ctx.tasks is not None
    infos = ctx.tasks[0]
    result, per_task = _fit_tasks(ctx, stage, build_multitask(ctx), infos)
    mean = float(np.mean([_score(per_task[t.name]["metrics"], t.kind) for t in infos]))
    return {
        "outputs": [],
        "y": [],
        "metrics": {"mean_task_score": mean},
        "seconds": time.perf_counter() - t0,
        "extra": {"tasks": per_task, **_fit_extra(result)},
    }


#: ``method.params`` of a multi-label task's single-task comparator (see module docstring).
SINGLE_MULTILABEL_PARAMS: dict[str, Any] = {
    "architecture": "hard",
    "weighting": "equal",
    "head": "linear",
}


def _single_multilabel(ctx: stages.StageContext, stage: str, info: TaskInfo) -> dict[str, Any]:
    """Fine-tune the backbone on multi-label ``info`` alone (BCE), score with micro-F1."""
    t0 = time.perf_counter()
    mult = stages.backbone_lr_mult(ctx.cfg, 0.1)
    overrides = {**SINGLE_MULTILABEL_PARAMS, "backbone_lr_mult": mult}
    method = build_multitask(ctx, only=info, overrides=overrides)
    result, per_task = _fit_tasks(ctx, stage, method, [info])
    rec = per_task[info.name]
    return {
        "outputs": np.asarray(rec["outputs"], dtype=np.float32),
        "y": rec["y"],
        "metrics": rec["metrics"],
        "seconds": time.perf_counter() - t0,
        "extra": _fit_extra(result),
    }


def single_task_stage(task: str) -> Any:
    """A stage function training ``task`` alone (same backbone, finetune, same budget)."""

    def run(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
        assert ctx.tasks is not None
        torch.manual_seed(ctx.seed)
        infos, splits = ctx.tasks
        info = next(t for t in infos if t.name == task)
        if info.kind == "multilabel":
            return _single_multilabel(ctx, stage, info)
        sub = dataclasses.replace(ctx, splits=splits[task])
        mult = stages.backbone_lr_mult(ctx.cfg, 0.1)
        method = stages.build_method(
            ctx.cfg,
            splits[task],
            pretrained=True,
            name="finetune",
            params=FinetuneParams(backbone_lr_mult=mult).model_dump(),
        )
        return stages.run_gradient_stage(sub, stage, method)

    return run
