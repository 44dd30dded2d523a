"""One training inside an experiment (a "stage"): the transfer method, or a baseline.

Each stage trains on one seed's splits and returns a record with the test outputs, the
test labels and the test metrics; the runner saves it so ``resume`` skips finished stages.
Gradient-trained stages checkpoint under ``DIR/checkpoints/<stage>/`` and resume exactly.

Under a multi-process launch every process runs every stage (training is collective).
Test predictions are split across processes and gathered (:func:`predict_distributed`);
files (feature caches, heads, plots) are written by the main process only, and one-off
diagnostics (representation drift) run on the main process and are shared.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from transferkit.backbones import Backbone, create_backbone
from transferkit.data.loaders import ExampleDataset, collate_with
from transferkit.data.types import Splits
from transferkit.diagnostics.metrics import compute_metrics, higher_is_better, primary_metric
from transferkit.engine import TrainConfig, Trainer, accel, evaluate_predictions
from transferkit.engine.extract import extract_features
from transferkit.experiment.baselines import classical_baseline
from transferkit.experiment.config import ExperimentConfig
from transferkit.experiment.rundir import stage_dirname
from transferkit.experiment.source import (
    SourceRun,
    forgetting_record,
    load_source_run,
    source_accuracy,
)
from transferkit.experiment.subsets import unlabelled_features
from transferkit.methods import METHODS, Method
from transferkit.methods.finetune import FinetuneParams
from transferkit.methods.heads import make_head


@dataclass
class StageContext:
    """Everything a stage needs besides its own settings."""

    cfg: ExperimentConfig
    splits: Splits
    seed: int
    run_dir: Path
    resume: bool
    quiet: bool
    source: Splits | None = None  # the labelled source domain (domain adaptation only)
    tasks: tuple[list[Any], dict[str, Splits]] | None = None  # (TaskInfo list, splits) MTL


def num_outputs(splits: Splits) -> int:
    return splits.train.num_classes if splits.train.task == "classification" else 1


def make_record(outputs: np.ndarray, splits: Splits, t0: float, **extra: Any) -> dict[str, Any]:
    """A stage record: test outputs, labels, metrics, seconds and ``extra`` details."""
    y = splits.test.y
    return {
        "outputs": np.asarray(outputs, dtype=np.float32),
        "y": y,
        "metrics": compute_metrics(outputs, y, splits.test.task),
        "seconds": time.perf_counter() - t0,
        "extra": extra,
    }


_COMPATIBLE = {"text": "text", "image": "image", "tabular": "vector"}


def check_modality(backbone: Backbone, splits: Splits) -> None:
    """Refuse a backbone that cannot read the data (text model given images, ...)."""
    from transferkit.errors import ConfigError

    data_mod = splits.train.modality
    if _COMPATIBLE.get(data_mod) != backbone.modality:
        examples = {
            "text": "packaged:minilm-l6 or hf:<encoder>",
            "image": "packaged:efficientnet-lite0, timm:<name> or tk:smallcnn",
            "tabular": "tk:mlp (backbone_options: {in_features: F})",
        }
        raise ConfigError(
            f"the backbone {backbone.spec!r} reads {backbone.modality} inputs but the "
            f"dataset {splits.train.name!r} is {data_mod}",
            where="model.backbone",
            fix=f"use a backbone for {data_mod} data, e.g. {examples.get(data_mod, '')}",
        )


def build_method(
    cfg: ExperimentConfig,
    splits: Splits,
    *,
    pretrained: bool,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    source: SourceRun | None = None,
    extra: dict[str, Any] | None = None,
) -> Method:
    """Backbone + head + method from the config (``name``/``params`` override the config's).

    With ``model.backbone: source`` the backbone is the source run's fine-tuned one (or its
    architecture, randomly initialised, when ``pretrained`` is False); a method that takes a
    ``source_head`` (LwF) gets the source run's head.
    """
    m = cfg.model
    if m.backbone == "source":
        assert source is not None
        sm = source.config.model
        backbone = (
            source.backbone()
            if pretrained
            else create_backbone(sm.backbone, pretrained=False, **sm.backbone_options)
        )
    else:
        backbone = create_backbone(
            m.backbone, pretrained=pretrained and m.pretrained, **m.backbone_options
        )
    check_modality(backbone, splits)
    head = make_head(
        backbone.num_features, num_outputs(splits), m.head, m.head_hidden, m.head_dropout
    )
    cls = METHODS.get(name or cfg.method.name)
    p = cls.Params.model_validate(cfg.method.params if params is None else params)
    kwargs: dict[str, Any] = dict(extra or {})
    if source is not None and getattr(p, "lwf", None) is not None:
        kwargs["source_head"] = source.head(backbone.num_features)
    return cls(backbone, head, splits.train.task, p, **kwargs)


def backbone_lr_mult(cfg: ExperimentConfig, default: float = 0.1) -> float:
    """The configured method's ``backbone_lr_mult`` (its schema default when unset)."""
    field = METHODS.get(cfg.method.name).Params.model_fields.get("backbone_lr_mult")
    fallback = field.default if field is not None else default
    return float(cfg.method.params.get("backbone_lr_mult", fallback))


def train_config(cfg: ExperimentConfig, seed: int, task: str, lr: float | None) -> TrainConfig:
    """The engine's TrainConfig from the experiment's ``train`` section."""
    t = cfg.train
    es = t.early_stopping
    monitor = es.monitor if es.monitor != "auto" else f"val_{primary_metric(task)}"
    mode = (
        es.mode
        if es.mode != "auto"
        else ("max" if higher_is_better(monitor.removeprefix("val_")) else "min")
    )
    fields = t.model_dump(exclude={"early_stopping", "eval_batch_size"})
    fields.update(seed=seed, lr=lr or t.lr)
    return TrainConfig(
        **fields,
        early_stopping=es.enabled,
        monitor=monitor,
        mode=mode,
        patience=es.patience,
        min_delta=es.min_delta,
        restore_best=es.restore_best,
    )


def predict(method: Method, ds: Any, prepare: Any, batch_size: int) -> np.ndarray:
    """``method.predict`` over every example of ``ds`` in order (this process alone)."""
    outputs, _ = evaluate_predictions(method, ExampleDataset(ds), collate_with(prepare), batch_size)
    return np.asarray(outputs, dtype=np.float32)


def predict_distributed(model: Any, ds: Any, prepare: Any, batch_size: int) -> np.ndarray:
    """Like :func:`predict`, split across the processes of a launch and gathered.

    Process ``r`` predicts its contiguous share of the examples (``accel.shard_bounds``);
    the shares are concatenated in rank order, so every process gets all ``N`` outputs in
    dataset order. Predictions are per example under eval mode, so the result equals the
    one-process result up to float rounding of differently sized batches. Every process
    must call it (it is collective). ``model`` is anything with ``predict(x)``.
    """
    if not accel.launched():
        return predict(model, ds, prepare, batch_size)
    items = ExampleDataset(ds)
    start, stop = accel.shard_bounds(len(items))
    outputs, _ = evaluate_predictions(
        model, Subset(items, range(start, stop)), collate_with(prepare), batch_size
    )
    return accel.gather_arrays(np.asarray(outputs, dtype=np.float32))


def main_cache_dir(run_dir: Path) -> Path | None:
    """``DIR/cache`` on the main process, None elsewhere: only the main process writes
    feature caches (the others compute the same features without caching them)."""
    return run_dir / "cache" if accel.is_main_process() else None


def run_gradient_stage(
    ctx: StageContext,
    stage: str,
    method: Method,
    lr: float | None = None,
    train_dataset: Any = None,
) -> dict[str, Any]:
    """Train ``method`` with the Trainer (early stopping on val), predict the test split.

    ``train_dataset`` replaces the default items ``(x, y)`` of the training split (e.g.
    examples with cached teacher outputs).
    """
    t0 = time.perf_counter()
    cfg, splits = ctx.cfg, ctx.splits
    prepare = method.backbone.prepare
    bs = cfg.train.eval_batch_size
    task = splits.train.task

    def val_fn(m: Method) -> dict[str, float]:
        out = predict(m, splits.val, prepare, bs)
        return {f"val_{k}": v for k, v in compute_metrics(out, splits.val.y, task).items()}

    trainer = Trainer(
        method,
        train_dataset if train_dataset is not None else ExampleDataset(splits.train),
        collate_with(prepare),
        train_config(cfg, ctx.seed, task, lr),
        ctx.run_dir / "checkpoints" / stage,
        val_fn=val_fn,
        quiet=ctx.quiet,
    )
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    result = trainer.fit(resume=ctx.resume)
    outputs = predict_distributed(method, splits.test, prepare, bs)
    extra: dict[str, Any] = {
        "steps": result.global_step,
        "stopped": str(result.stopped_reason),
        "best_epoch": result.best_epoch,
        "trainable_params_at_start": trainable,
        "total_params": sum(p.numel() for p in method.parameters()),
    }
    if getattr(method, "peft_info_", None):
        extra["peft"] = dict(method.peft_info_)
    return make_record(outputs, splits, t0, **extra)


def finalize_stage_dir(run_dir: Path, stage: str, keep_weights: bool) -> None:
    """After a training's record is saved: keep only what a finished run needs.

    The trainer's resumable state (optimizer moments, RNG, best-epoch copies) is only
    needed while a training can still be interrupted; once its record is saved it is
    dropped. ``keep_weights`` keeps the final weights as ``<stage>/model.safetensors``.
    """
    import shutil

    from transferkit.engine import CheckpointStore

    work = run_dir / "checkpoints" / stage_dirname(stage)
    ckpts = work / "checkpoints"
    if not ckpts.is_dir():
        return
    latest = CheckpointStore(ckpts).latest()
    if keep_weights and latest is not None and (latest / "model.safetensors").is_file():
        os.replace(latest / "model.safetensors", work / "model.safetensors")
    shutil.rmtree(ckpts, ignore_errors=True)


def run_closed_form_stage(ctx: StageContext, stage: str, method: Method) -> dict[str, Any]:
    """Extract features once (cached across seeds), fit the head in closed form, predict."""
    t0 = time.perf_counter()
    splits = ctx.splits
    bs = ctx.cfg.train.eval_batch_size
    cache = main_cache_dir(ctx.run_dir)
    f_tr, f_va, f_te = (
        method.extract(d.x, batch_size=bs, cache_dir=cache)
        for d in (splits.train, splits.val, splits.test)
    )
    extra: dict[str, Any] = {}
    if getattr(method, "uses_unlabelled", False):  # transductive heads
        extra["unlabelled"], extra["unlabelled_from"] = unlabelled_features(
            ctx, method, f_va, f_te, cache
        )
    method.fit_features(f_tr, splits.train.y, f_va, splits.val.y, **extra)
    with torch.no_grad():
        logits = method.head(torch.tensor(np.array(f_te)))
    outputs = logits.squeeze(-1) if splits.train.task == "regression" else logits
    if accel.is_main_process():
        save_head(method, ctx.run_dir / "checkpoints" / stage, ctx.cfg.model.backbone)
    info = getattr(method, "head_info_", None)
    return make_record(
        outputs.numpy(),
        splits,
        t0,
        head=method.hparams.head,
        selected={method.selected_param_: method.selected_strength_},
        val_scores={str(k): v for k, v in method.val_scores_.items()},
        **({"head_info": info} if info else {}),
    )


def save_head(method: Method, stage_dir: Path, backbone: str) -> None:
    """``<stage_dir>/head.safetensors``: the closed-form head's weights (atomic write)."""
    from safetensors.torch import save_file

    from transferkit.utils.io import atomic_path

    with atomic_path(stage_dir / "head.safetensors") as tmp:
        save_file(
            {k: v.contiguous() for k, v in method.head.state_dict().items()},
            str(tmp),
            metadata={"backbone": backbone},
        )


def representation_drift_report(
    start: Backbone, tuned: Backbone, x: Any, batch_size: int, n: int = 500
) -> dict[str, Any]:
    """Linear CKA per layer group between the starting and the fine-tuned backbone.

    Computed on (at most ``n``) target test inputs; 1 = representation unchanged (up to
    rotation and scale), lower = more drift (Kornblith et al. 2019).
    """
    from transferkit.diagnostics.cka import representation_drift

    x = x[:n]
    groups = tuned.layer_groups()
    idx = list(range(len(groups)))
    before = extract_features(start, x, batch_size=batch_size, layers=idx)
    after = extract_features(tuned, x, batch_size=batch_size, layers=idx)
    return {
        "kind": "representation_drift",
        "measure": "linear CKA between starting and fine-tuned features (1 = unchanged)",
        "n_examples": len(x),
        "per_group": representation_drift(before, after, [g.name for g in groups]),
    }


def run_target_stage(ctx: StageContext, stage: str) -> dict[str, Any]:
    """The configured transfer method on the pretrained backbone.

    For the first seed of a gradient-trained method, the representation drift of every
    layer group (linear CKA, starting vs fine-tuned) is recorded as ``extra["drift"]``.
    """
    torch.manual_seed(ctx.seed)
    cfg = ctx.cfg
    source = load_source_run(cfg.model.source_run) if cfg.model.source_run else None
    method = build_method(cfg, ctx.splits, pretrained=True, source=source)
    if method.closed_form:
        return run_closed_form_stage(ctx, stage, method)
    first = ctx.seed == cfg.seeds[0]
    start = copy.deepcopy(method.backbone) if first else None
    bs = cfg.train.eval_batch_size
    src_head = before = None
    if source is not None and source.test.task == "classification":
        src_head = getattr(method, "source_head", None) or source.head(method.backbone.num_features)
        before = source_accuracy(method.backbone, src_head, source.test, bs)
    rec = run_gradient_stage(ctx, stage, method)
    forgetting: dict[str, Any] = {}
    if start is not None:
        drift = accel.on_main(
            representation_drift_report, start, method.backbone, ctx.splits.test.x, bs
        )
        forgetting["representation_drift"] = {"seed": ctx.seed, **drift}
    if src_head is not None and before is not None:
        after = source_accuracy(method.backbone, src_head, source.test, bs)
        forgetting["source_task"] = forgetting_record(before, after, source)
    if forgetting:
        rec["extra"]["forgetting"] = forgetting
    return rec


def run_random_init_stage(ctx: StageContext, stage: str) -> dict[str, Any]:
    """Same architecture from random initialisation, fully trained with the same budget."""
    torch.manual_seed(ctx.seed)
    params = FinetuneParams(freeze="none", backbone_lr_mult=1.0).model_dump()
    cfg = ctx.cfg
    source = load_source_run(cfg.model.source_run) if cfg.model.backbone == "source" else None
    method = build_method(
        cfg, ctx.splits, pretrained=False, name="finetune", params=params, source=source
    )
    return run_gradient_stage(ctx, stage, method, lr=ctx.cfg.baselines.random_init_lr)


def run_classical_stage(ctx: StageContext, stage: str) -> dict[str, Any]:
    """The modality's classical baseline (TF-IDF/pixels + logistic regression, boosting)."""
    t0 = time.perf_counter()
    s = ctx.splits
    res = classical_baseline(s.train, s.val, s.test)
    return make_record(
        res.test_outputs, s, t0, name=res.name, description=res.description, **res.selected
    )
