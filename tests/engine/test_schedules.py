"""Schedules: factor values at known steps (by hand), torch's OneCycleLR, per-group lrs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tests.engine.tiny import collate, make_blobs, make_method
from transferkit.engine import Callback, ScheduleFactor, TrainConfig, Trainer


def test_constant_with_warmup_by_hand() -> None:
    f = ScheduleFactor("constant", total_steps=10, warmup_steps=3)
    assert [f(s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_cosine_with_warmup_by_hand() -> None:
    f = ScheduleFactor("cosine", total_steps=10, warmup_steps=2)
    assert f(0) == pytest.approx(1 / 3)
    assert f(1) == pytest.approx(2 / 3)
    assert f(2) == pytest.approx(1.0)
    # p = (s - W) / (T - W) = 1/8 and 4/8 and 7/8
    assert f(3) == pytest.approx(0.5 * (1 + math.cos(math.pi / 8)))
    assert f(6) == pytest.approx(0.5)
    assert f(9) == pytest.approx(0.5 * (1 + math.cos(7 * math.pi / 8)))
    assert 0 < f(9) < 0.05


def test_onecycle_by_hand() -> None:
    f = ScheduleFactor("onecycle", total_steps=10, warmup_steps=4)
    assert f(0) == pytest.approx(1 / 25)
    # rising phase over steps 0..3: pct 1/3 -> 1 + (0.04 - 1)/2 * (cos(pi/3) + 1) = 0.28
    assert f(1) == pytest.approx(0.28)
    assert f(3) == pytest.approx(1.0)
    # falling phase over steps 3..9: step 6 is half-way -> (1 + 4e-6) / 2
    assert f(6) == pytest.approx(0.5 + 2e-6)
    assert f(9) == pytest.approx(1 / 25 / 1e4)


def test_onecycle_matches_torch_onecycle() -> None:
    total, warm = 37, 11
    f = ScheduleFactor("onecycle", total_steps=total, warmup_steps=warm)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=1.0,
        total_steps=total,
        pct_start=warm / total,
        anneal_strategy="cos",
        cycle_momentum=False,
        div_factor=25.0,
        final_div_factor=1e4,
    )
    for s in range(total):
        assert f(s) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12), s
        opt.step()
        ref.step()


def test_slanted_triangular_by_hand() -> None:
    f = ScheduleFactor(
        "slanted_triangular", total_steps=100, warmup_steps=0, cut_frac=0.1, ratio=32
    )
    # cut = 10; p = s/10 going up, p = 1 - (s - 10)/(10 * 9) going down
    assert f(0) == pytest.approx(1 / 32)
    assert f(5) == pytest.approx(16.5 / 32)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(16.5 / 32)
    assert f(99) == pytest.approx((1 + 31 / 90) / 32)


class LrRecorder(Callback):
    """Records every param group's (name, decay, lr) right before each optimizer step."""

    def __init__(self) -> None:
        self.steps: list[list[tuple[str, bool, float]]] = []

    def on_before_optimizer_step(self, trainer: Any) -> None:
        self.steps.append(
            [(g["name"], g["decay"], g["lr"]) for g in trainer.optimizer.param_groups]
        )


@pytest.mark.parametrize(
    "schedule, extra",
    [
        ("cosine", {"warmup_ratio": 0.2}),
        ("onecycle", {"warmup_steps": 3}),
        ("slanted_triangular", {"cut_frac": 0.2, "stlr_ratio": 8.0}),
        ("constant", {"warmup_steps": 2}),
    ],
)
def test_group_lr_is_multiplier_times_schedule(
    tmp_path: Any, schedule: str, extra: dict[str, Any]
) -> None:
    cfg = TrainConfig(
        lr=0.02,
        epochs=2,
        batch_size=8,
        schedule=schedule,
        mixed_precision="no",
        save_checkpoints=False,
        **extra,
    )
    rec = LrRecorder()
    method = make_method(body_mult=0.1)
    Trainer(method, make_blobs(48), collate, cfg, tmp_path, callbacks=[rec], quiet=True).fit()
    total = 2 * 6
    assert len(rec.steps) == total
    f = ScheduleFactor(
        schedule, total, cfg.warmup_for(total), cut_frac=cfg.cut_frac, ratio=cfg.stlr_ratio
    )
    mult = {"body": 0.1, "head": 1.0}
    for s, groups in enumerate(rec.steps):
        # each method group is split into decay + no-decay sub-groups with the same lr
        assert sorted((n, d) for n, d, _ in groups) == [
            ("body", False),
            ("body", True),
            ("head", False),
            ("head", True),
        ]
        for name, _, lr in groups:
            assert lr == pytest.approx(mult[name] * 0.02 * f(s), rel=1e-12), (s, name)
