"""The multi-task method under the Trainer: manual backward, logs, exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.mtl.helpers import MultiTaskData, collate, make_mtl
from transferkit.engine import Callback, CheckpointStore, TrainConfig, Trainer

DATA = MultiTaskData(16)


class Crash(Exception):
    pass


class CrashAfterCheckpoint(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if trainer.global_step == self.step:
            raise Crash


def train(
    run_dir: Path,
    weighting: str,
    resume: bool = False,
    seed: int = 0,
    callbacks: tuple[Callback, ...] = (),
    epochs: int = 4,
) -> Any:
    # 16 items / batch 4 = 4 micro-batches = 2 optimizer steps per epoch
    method = make_mtl(weighting, seed=seed)
    cfg = TrainConfig(
        mixed_precision="no",
        cpu=True,
        lr=0.05,
        batch_size=4,
        grad_accum_steps=2,
        epochs=epochs,
        seed=5,
        checkpoint_every_steps=3,
        log_every_steps=1,
        clip_grad_norm=5.0,
        checkpoint_min_interval_s=0.0,
    )
    Trainer(method, DATA, collate, cfg, run_dir, callbacks=callbacks, quiet=True).fit(resume)
    return method


def rows(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


@pytest.mark.parametrize(("weighting", "crash"), [("pcgrad", 3), ("dwa", 3)])
def test_resume_is_bit_identical(tmp_path: Path, weighting: str, crash: int) -> None:
    straight = train(tmp_path / "a", weighting)
    with pytest.raises(Crash):
        train(tmp_path / "b", weighting, callbacks=(CrashAfterCheckpoint(crash),))
    latest = CheckpointStore(tmp_path / "b" / "checkpoints").latest()
    assert latest is not None and latest.name.startswith(f"ckpt-{crash:08d}")
    resumed = train(tmp_path / "b", weighting, resume=True, seed=99)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    if weighting == "dwa":  # the weights moved off 1 from the third epoch on
        assert int(resumed.weighting.epochs_seen) == 4
        last = [r for r in rows(tmp_path / "a") if r["type"] == "epoch"][-1]
        assert last["train_weight_a"] != 1.0
        assert last["train_weight_a"] + last["train_weight_b"] == pytest.approx(2.0)


def test_gradient_method_logs_weights_and_gradient_cosines(tmp_path: Path) -> None:
    train(tmp_path, "cagrad", epochs=1)
    steps = [r for r in rows(tmp_path) if r["type"] == "train"]
    assert len(steps) == 2
    for r in steps:
        assert {"loss", "loss_a", "loss_b", "weight_a", "weight_b", "gradcos_a_b"} <= set(r)
        assert -1.0 <= r["gradcos_a_b"] <= 1.0 and "grad_norm" in r


def test_gradnorm_weights_stay_normalised_under_the_trainer(tmp_path: Path) -> None:
    m = train(tmp_path, "gradnorm", epochs=2)
    w = m.weighting.task_weights.detach()
    assert float(w.sum()) == pytest.approx(2.0, rel=1e-5) and not torch.equal(w, torch.ones(2))
    assert bool(m.weighting.has_initial.all())
