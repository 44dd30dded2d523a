"""Tiny fine-tuning setups shared by the tests of ``transferkit.finetune``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.conftest import TinyVectorBackbone
from tests.engine.tiny import collate, make_blobs
from transferkit.engine import Callback, TrainConfig, Trainer
from transferkit.engine.state import TrainResult
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head

IN, WIDTH, CLASSES = 8, 8, 3
DATA = make_blobs(48, in_features=IN, classes=CLASSES, seed=3)  # 6 batches of 8


def make_finetune(seed: int = 0, source_head: bool = False, **params: Any) -> Finetune:
    """Finetune on a :class:`TinyVectorBackbone` (groups ``block1`` with BN, ``block2``)."""
    torch.manual_seed(seed)
    backbone = TinyVectorBackbone(in_features=IN, width=WIDTH)
    head = make_head(WIDTH, CLASSES)
    src = make_head(WIDTH, 4) if source_head else None
    p = FinetuneParams.model_validate(params)
    return Finetune(backbone, head, "classification", p, source_head=src)


def train_config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        mixed_precision="no",
        lr=0.05,
        batch_size=8,
        epochs=3,
        schedule="cosine",
        warmup_steps=2,
        weight_decay=0.01,
        log_every_steps=1,
        seed=5,
    )
    return TrainConfig(**{**base, **kw})


def fit(
    method: Finetune,
    run_dir: Path,
    callbacks: tuple[Callback, ...] = (),
    resume: bool = False,
    **kw: Any,
) -> TrainResult:
    trainer = Trainer(
        method, DATA, collate, train_config(**kw), run_dir, callbacks=callbacks, quiet=True
    )
    return trainer.fit(resume=resume)


def batch(n: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, IN, generator=g), "y": torch.randint(0, CLASSES, (n,), generator=g)}


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
