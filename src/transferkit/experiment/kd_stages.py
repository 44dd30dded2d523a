"""The stages of a distillation run: teacher, distilled student, student on labels only.

* ``teacher`` — ``teacher.backbone`` fine-tuned on the target labels (same splits, same
  training settings, lr ``teacher.lr``), or the model of a finished run (``teacher.run``),
  evaluated on the target test split. Its weights are kept: the student stage reloads
  them, so a resumed run distils from exactly the same teacher.
* ``target`` — the student (``model.backbone``) trained by ``distill``; with
  ``teacher.cache_outputs`` the teacher runs once over the training split and its logits
  (and hint features) travel with the examples (Hinton et al. 2015's soft targets).
* ``student_labels_only`` — the same student fine-tuned on the labels alone: the
  comparator of the verdict (did distillation beat plain training of the small model?).

The deployment record (parameters, size, CPU latency at batch 1, throughput at batch 64)
of the teacher and the distilled student comes from the first seed; under a multi-process
launch it is measured on the main process alone (the others wait, so they do not compete
for the CPU) and shared. Only the main process writes the teacher-output cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from transferkit.backbones import Backbone, create_backbone
from transferkit.deploy.predict import BackboneHead
from transferkit.engine import accel
from transferkit.experiment import stages
from transferkit.experiment.label_free import features_and_logits
from transferkit.experiment.rundir import stage_dirname
from transferkit.experiment.source import load_source_run
from transferkit.methods import Method
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head


def _teacher_method(ctx: stages.StageContext, pretrained: bool) -> Finetune:
    t = ctx.cfg.teacher
    assert t is not None and t.backbone is not None
    bb = create_backbone(t.backbone, pretrained=pretrained, **t.backbone_options)
    stages.check_modality(bb, ctx.splits)
    head = make_head(bb.num_features, stages.num_outputs(ctx.splits), t.head)
    return Finetune(
        bb, head, ctx.splits.train.task, FinetuneParams(backbone_lr_mult=t.backbone_lr_mult)
    )


def teacher_modules(ctx: stages.StageContext) -> tuple[Backbone, nn.Module]:
    """The trained teacher of this seed: from ``teacher.run`` or this run's teacher stage."""
    t = ctx.cfg.teacher
    assert t is not None
    if t.run is not None:
        src = load_source_run(t.run)
        bb = src.backbone()
        return bb, src.head(bb.num_features)
    method = _teacher_method(ctx, pretrained=False)
    path = (
        ctx.run_dir / "checkpoints" / stage_dirname(f"teacher/seed{ctx.seed}") / "model.safetensors"
    )
    method.load_state_dict(load_file(str(path)), strict=True)
    return method.backbone, method.head


def run_teacher_stage(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
    """Fine-tune the teacher on the target (or evaluate the given teacher run)."""
    import time

    torch.manual_seed(ctx.seed)
    t = ctx.cfg.teacher
    assert t is not None
    if t.run is None:
        rec = stages.run_gradient_stage(ctx, stage, _teacher_method(ctx, True), lr=t.lr)
        rec["extra"]["description"] = f"teacher {t.backbone}, fine-tuned on the target labels"
        return rec
    t0 = time.perf_counter()
    bb, head = teacher_modules(ctx)
    _, logits = features_and_logits(
        BackboneHead(bb, head),
        ctx.splits.test.x,
        bb.prepare,  # type: ignore[arg-type]
        ctx.cfg.train.eval_batch_size,
    )
    return stages.make_record(logits, ctx.splits, t0, description=f"teacher run {t.run}")


def run_distill_stage(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
    """Distil the student from this seed's teacher (cached teacher outputs by default)."""
    from transferkit.distill.cache import teacher_outputs
    from transferkit.distill.data import TeacherCachedDataset

    torch.manual_seed(ctx.seed)
    cfg = ctx.cfg
    assert cfg.teacher is not None
    t_bb, t_head = teacher_modules(ctx)
    method = stages.build_method(
        cfg, ctx.splits, pretrained=True, extra={"teacher_backbone": t_bb, "teacher_head": t_head}
    )
    train = None
    pool = _labelled_plus_pool(ctx) if cfg.teacher.use_unlabelled else None
    # with augmentation on, the teacher runs live on each augmented batch: no cache
    live = getattr(method, "augmenter", None) is not None
    if pool is not None or (cfg.teacher.cache_outputs and not live):
        ds = pool[0] if pool is not None else ctx.splits.train
        outs = (
            {}
            if live
            else teacher_outputs(
                method.teacher,  # type: ignore[arg-type]
                ds.x,
                layers=method.teacher_layers_,  # type: ignore[arg-type]
                pool=method.hparams.hint_pool,  # type: ignore[attr-defined]
                batch_size=cfg.train.eval_batch_size,
                cache_dir=stages.main_cache_dir(ctx.run_dir),
            )
        )
        extra = {"y_mask": pool[1]} if pool is not None else {}
        train = TeacherCachedDataset(ds, {**outs, **extra})
    rec = stages.run_gradient_stage(ctx, stage, method, train_dataset=train)
    if ctx.seed == cfg.seeds[0] and cfg.deployment:
        teacher = BackboneHead(t_bb, t_head)
        rec["extra"]["deployment"] = accel.on_main(deployment_record, method, teacher, ctx)
    return rec


def _labelled_plus_pool(ctx: stages.StageContext) -> tuple[Any, Any] | None:
    """The labelled split followed by the unlabelled pool (label 0 there) and the mask.

    None without a pool (no label budget): then every training example is labelled.
    """
    import numpy as np

    from transferkit.experiment.domains import concat_raw

    train, pool = ctx.splits.train, ctx.splits.unlabelled
    if pool is None or len(pool) == 0 or train.y is None:
        return None
    x = concat_raw(train.x, pool.x)
    y = np.concatenate([train.y, np.zeros(len(pool), dtype=train.y.dtype)])
    mask = np.concatenate([np.ones(len(train), bool), np.zeros(len(pool), bool)])
    return dataclasses.replace(train, x=x, y=y), mask


def run_student_labels_stage(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
    """The same student architecture fine-tuned on the labels alone (the comparator)."""
    torch.manual_seed(ctx.seed)
    mult = stages.backbone_lr_mult(ctx.cfg, 1.0)
    method = stages.build_method(
        ctx.cfg,
        ctx.splits,
        pretrained=True,
        name="finetune",
        params=FinetuneParams(backbone_lr_mult=mult).model_dump(),
    )
    return stages.run_gradient_stage(ctx, stage, method)


def deployment_record(
    student: Method, teacher: BackboneHead, ctx: stages.StageContext
) -> dict[str, Any]:
    """Size / latency / throughput of teacher and student on real test inputs, and ratios.

    Each model gets the first test example prepared by its own backbone; the measurement
    repeats it to batch 1 and batch 64 (medians of timed passes, 1 CPU thread).
    """
    from transferkit.deploy.measure import compare_deployment, measure_deployment

    x = ctx.splits.test.x[:1]
    t = measure_deployment(teacher, teacher.backbone.prepare(x))  # type: ignore[operator]
    s = measure_deployment(student, student.backbone.prepare(x))  # type: ignore[operator]
    return {"teacher": t, "student": s, **compare_deployment(s, t)}
