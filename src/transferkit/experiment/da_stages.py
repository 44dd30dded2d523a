"""The stages of a domain-adaptation run: adapted model, source-only, target-only.

* ``adapted`` — the configured DA method trained on labelled source batches paired with
  unlabelled target batches (:class:`~transferkit.data.loaders.PairedDataset`). The
  checkpoint is chosen by the label-free criterion ``adaptation.selector`` (default DEV);
  the oracle (best target-test value over epochs) is recorded next to it. Closed-form
  methods (shallow CORAL, subspace alignment) are fitted on frozen source features with
  the unlabelled target features. On the first seed the domain gap (proxy A-distance,
  MMD) and a 2-D projection are measured on the backbone before and after adaptation.
* ``source_only`` — the same backbone and head fine-tuned on the source alone (selected
  on source validation accuracy) and tested on the target: the verdict's comparator.
* ``target_only`` — fine-tuned on the labelled target training split (what a user with
  target labels could do): an upper reference, not the comparator.

Multi-process launches: the domain-gap measurement and its plot run on the main process
only (result shared); feature caches are written by the main process only; test
predictions are split across processes (:func:`stages.predict_distributed`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.data.loaders import PairedDataset, collate_with
from transferkit.data.types import Splits
from transferkit.diagnostics.domain_gap import domain_gap_report, embedding_2d, plot_domains
from transferkit.engine import Trainer, accel
from transferkit.experiment import stages
from transferkit.experiment.domains import adaptation_pool
from transferkit.experiment.label_free import (
    SELECTOR_KEYS,
    LabelFreeValidator,
    features_and_logits,
    oracle_summary,
    selection_key,
)
from transferkit.experiment.subsets import random_subset
from transferkit.methods import Method
from transferkit.methods.finetune import FinetuneParams

GAP_DIR = "domain_gap"


def domain_gap_stage(method: Method, ctx: stages.StageContext, when: str) -> dict[str, Any]:
    """Gap between source and target *test* features of ``method.backbone``, plus a plot.

    Writes ``DIR/domain_gap/<when>.png`` (PCA of both domains, colour = domain, marker =
    class) and returns the proxy A-distance / MMD record with the plot's relative path.
    """
    assert ctx.source is not None
    a = ctx.cfg.adaptation
    src = random_subset(ctx.source.test, a.gap_examples, ctx.seed)
    tgt = random_subset(ctx.splits.test, a.gap_examples, ctx.seed + 1)
    prep, bs = method.backbone.prepare, ctx.cfg.train.eval_batch_size
    f_s, _ = features_and_logits(method, src.x, prep, bs)
    f_t, _ = features_and_logits(method, tgt.x, prep, bs)
    rec: dict[str, Any] = dict(domain_gap_report(f_s, f_t, seed=ctx.seed))
    emb = embedding_2d(f_s, f_t, "pca", seed=ctx.seed, max_points=500)
    is_src = emb.domain == 0
    labels = np.empty(len(emb.domain), dtype=np.int64)
    labels[is_src] = np.asarray(src.y)[emb.index[is_src]]
    labels[~is_src] = np.asarray(tgt.y)[emb.index[~is_src]]
    rel = f"{GAP_DIR}/{when}.png"
    plot_domains(
        emb.coords,
        emb.domain,
        labels,
        ctx.run_dir / rel,
        class_names=ctx.splits.train.classes,
        title=f"source vs target features, {when} adaptation (PCA)",
    )
    rec["plot"] = rel
    return rec


def _paired_trainer(ctx: stages.StageContext, stage: str, method: Method) -> Trainer:
    assert ctx.source is not None
    cfg, prepare = ctx.cfg, method.backbone.prepare
    key, mode = selection_key(cfg.adaptation.selector, cfg.adaptation.collapse_guard)
    tc = stages.train_config(cfg, ctx.seed, "classification", None)
    tc = dataclasses.replace(tc, monitor=key, mode=mode)
    validator = LabelFreeValidator(
        ctx.source,
        ctx.splits,
        prepare,
        batch_size=cfg.train.eval_batch_size,
        n=cfg.adaptation.selection_examples,
        seed=ctx.seed,
        selector=cfg.adaptation.selector,
        collapse_guard=cfg.adaptation.collapse_guard,
    )
    paired = PairedDataset(ctx.source.train, adaptation_pool(ctx.splits), seed=ctx.seed)
    return Trainer(
        method,
        paired,
        collate_with(prepare),
        tc,
        ctx.run_dir / "checkpoints" / stage,
        val_fn=validator,
        quiet=ctx.quiet,
    )


def run_adapted_stage(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
    """Train (or fit) the DA method, select its checkpoint without target labels."""
    torch.manual_seed(ctx.seed)
    cfg = ctx.cfg
    method = stages.build_method(cfg, ctx.splits, pretrained=True)
    first = ctx.seed == cfg.seeds[0] and cfg.adaptation.domain_gap
    gap = {"before": accel.on_main(domain_gap_stage, method, ctx, "before")} if first else {}
    if method.closed_form:
        rec = run_closed_form_da(ctx, stage, method)
    else:
        t0 = time.perf_counter()
        trainer = _paired_trainer(ctx, stage, method)
        result = trainer.fit(resume=ctx.resume)
        outputs = stages.predict_distributed(
            method, ctx.splits.test, method.backbone.prepare, cfg.train.eval_batch_size
        )
        key, mode = SELECTOR_KEYS[cfg.adaptation.selector]
        extra = {
            "steps": result.global_step,
            "stopped": str(result.stopped_reason),
            "best_epoch": result.best_epoch,
            "selector": cfg.adaptation.selector,
            "oracle": oracle_summary(
                result.history,
                "accuracy",
                key,
                mode,
                result.best_epoch,
                collapse_guard=cfg.adaptation.collapse_guard,
            ),
        }
        rec = stages.make_record(outputs, ctx.splits, t0, **extra)
    if first:
        gap["after"] = accel.on_main(domain_gap_stage, method, ctx, "after")
        rec["extra"]["domain_gap"] = gap
    return rec


def run_closed_form_da(ctx: stages.StageContext, stage: str, method: Method) -> dict[str, Any]:
    """Shallow DA on frozen features: fit on source (+ unlabelled target), test on target."""
    assert ctx.source is not None
    t0 = time.perf_counter()
    bs, cache = ctx.cfg.train.eval_batch_size, stages.main_cache_dir(ctx.run_dir)
    pool = adaptation_pool(ctx.splits)
    f_tr, f_va, f_pool, f_te = (
        method.extract(d.x, batch_size=bs, cache_dir=cache)
        for d in (ctx.source.train, ctx.source.val, pool, ctx.splits.test)
    )
    method.fit_features(f_tr, ctx.source.train.y, f_va, ctx.source.val.y, f_target=f_pool)
    with torch.no_grad():
        logits = method.head(torch.tensor(np.array(f_te))).numpy()
    return stages.make_record(
        logits,
        ctx.splits,
        t0,
        head=method.hparams.head,
        selected={method.selected_param_: method.selected_strength_},
    )


def _finetune_params(ctx: stages.StageContext) -> dict[str, Any]:
    mult = stages.backbone_lr_mult(ctx.cfg, 0.1)
    return FinetuneParams(backbone_lr_mult=mult).model_dump()


def run_source_only_stage(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
    """Fine-tune on the labelled source, select on source val, test on the target."""
    assert ctx.source is not None
    torch.manual_seed(ctx.seed)
    splits = Splits(train=ctx.source.train, val=ctx.source.val, test=ctx.splits.test)
    sub = dataclasses.replace(ctx, splits=splits)
    method = stages.build_method(
        ctx.cfg, splits, pretrained=True, name="finetune", params=_finetune_params(ctx)
    )
    return stages.run_gradient_stage(sub, stage, method)


def run_target_only_stage(ctx: stages.StageContext, stage: str) -> dict[str, Any]:
    """Fine-tune on the labelled target training split (a reference that uses labels)."""
    torch.manual_seed(ctx.seed)
    method = stages.build_method(
        ctx.cfg, ctx.splits, pretrained=True, name="finetune", params=_finetune_params(ctx)
    )
    return stages.run_gradient_stage(ctx, stage, method)


def gap_plot_paths(run_dir: Path) -> list[Path]:
    """The domain-gap plots a run wrote (for the report)."""
    return sorted((run_dir / GAP_DIR).glob("*.png"))
