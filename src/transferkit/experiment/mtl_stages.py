"""The stages of a multi-task run: one shared model, and every task trained alone.

* ``target`` — the ``multitask`` method (shared backbone + one head per task, the
  configured architecture and loss weighting) trained on :class:`MultiTaskDataset`
  batches; early stopping watches ``val_mean_task_score`` (the mean over tasks of each
  task's primary validation metric: accuracy, or R² for regression). Every task is then
  evaluated on its own test split.
* ``single_<task>`` — the same backbone fine-tuned on that task alone, same budget: the
  per-task comparator (negative transfer between tasks shows up as a task whose shared
  model is worse than its single-task model).

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
from transferkit.diagnostics.metrics import compute_metrics, primary_metric
from transferkit.engine import Trainer, evaluate_predictions
from transferkit.experiment import stages
from transferkit.experiment.multitask_data import MultiTaskDataset, TaskInfo
from transferkit.methods import METHODS
from transferkit.methods.finetune import FinetuneParams


class _TaskView(torch.nn.Module):
    """One task of a multi-task model as a single-output predictor."""

    def __init__(self, method: Any, task: str) -> None:
        super().__init__()
        self.method, self.task = method, task

    def predict(self, x: Any) -> torch.Tensor:
        out = self.method.predict_task(x, self.task)
        return out.squeeze(-1) if out.ndim == 2 and out.shape[-1] == 1 else out


def _task_outputs(method: Any, task: TaskInfo, ds: Any, bs: int) -> np.ndarray:
    view = _TaskView(method, task.name)
    out, _ = evaluate_predictions(
        view, ExampleDataset(ds), collate_with(method.backbone.prepare), bs
    )
    return np.asarray(out, dtype=np.float32)


def _test_outputs(method: Any, task: TaskInfo, ds: Any, bs: int) -> np.ndarray:
    """Test outputs of one task, split across the processes of a launch and gathered."""
    view = _TaskView(method, task.name)
    return stages.predict_distributed(view, ds, method.backbone.prepare, bs)


def _needs_unused_parameters(method: Any, infos: list[TaskInfo]) -> bool:
    """A loss weighting over several task groups: some heads may miss a batch shard."""
    return len({t.group for t in infos}) > 1 and method.weighting.kind == "loss"


def _score(metrics: dict[str, float], kind: str) -> float:
    return float(metrics[primary_metric(kind)])


def build_multitask(ctx: stages.StageContext, pretrained: bool = True) -> Any:
    """Backbone from ``model`` + the ``multitask`` method with the run's tasks."""
    cfg = ctx.cfg
    assert ctx.tasks is not None
    infos, splits = ctx.tasks
    m = cfg.model
    bb = create_backbone(m.backbone, pretrained=pretrained and m.pretrained, **m.backbone_options)
    for t in infos:
        stages.check_modality(bb, splits[t.name])
    specs = [
        {"name": t.name, "kind": t.kind, "num_outputs": t.num_outputs, "loss_weight": t.weight}
        for t in infos
    ]
    cls = METHODS.get(cfg.method.name)
    params = cls.Params.model_validate({**cfg.method.params, "tasks": specs})
    return cls(bb, params)


def run_multitask_stage(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
    """Train the shared model, evaluate every task on its own test split."""
    torch.manual_seed(ctx.seed)
    t0 = time.perf_counter()
    cfg = ctx.cfg
    assert ctx.tasks is not None
    infos, splits = ctx.tasks
    method = build_multitask(ctx)
    bs = cfg.train.eval_batch_size

    def val_fn(m: Any) -> dict[str, float]:
        out, scores = {}, []
        for t in infos:
            met = compute_metrics(
                _task_outputs(m, t, splits[t.name].val, bs), splits[t.name].val.y, t.kind
            )
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
        per_task[t.name] = {
            "outputs": outputs,
            "y": test.y,
            "metrics": compute_metrics(outputs, test.y, t.kind),
        }
    mean = float(
        np.mean(
            [_score(r["metrics"], t.kind) for t, r in zip(infos, per_task.values(), strict=True)]
        )
    )
    return {
        "outputs": [],
        "y": [],
        "metrics": {"mean_task_score": mean},
        "seconds": time.perf_counter() - t0,
        "extra": {
            "tasks": per_task,
            "steps": result.global_step,
            "stopped": str(result.stopped_reason),
            "best_epoch": result.best_epoch,
        },
    }


def single_task_stage(task: str) -> Any:
    """A stage function training ``task`` alone (same backbone, finetune, same budget)."""

    def run(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
        assert ctx.tasks is not None
        torch.manual_seed(ctx.seed)
        _, splits = ctx.tasks
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
