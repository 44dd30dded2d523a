"""Discriminative learning rates: multipliers, param groups, and the lr used at every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.conftest import TinyVectorBackbone
from tests.finetune.helpers import fit, make_finetune, train_config
from transferkit.engine import Callback
from transferkit.engine.schedules import schedule_factor
from transferkit.errors import ConfigError
from transferkit.finetune.groups import (
    assign_parameters,
    discriminative_groups,
    freeze_to,
    group_multipliers,
)


def test_layer_decay_multipliers_hand_computed() -> None:
    assert group_multipliers(3, layer_decay=0.5) == [0.125, 0.25, 0.5]
    assert group_multipliers(2, layer_decay=0.8) == pytest.approx([0.64, 0.8])
    assert group_multipliers(2) == [1.0, 1.0]
    assert group_multipliers(2, mults=[0.1, 3]) == [0.1, 3.0]


def test_finetune_group_lrs_hand_computed() -> None:
    # n = 2 groups, decay 0.5, backbone_lr_mult 0.4: block1 0.4*0.25, block2 0.4*0.5, head 1
    m = make_finetune(layer_decay=0.5, backbone_lr_mult=0.4)
    groups = {g["name"]: g["lr"] for g in m.param_groups(0.2)}
    assert groups == pytest.approx(
        {"backbone.block1": 0.2 * 0.1, "backbone.block2": 0.2 * 0.2, "head": 0.2}
    )
    m = make_finetune(group_lr_mults=[0.3, 2.0], backbone_lr_mult=0.5)
    groups = {g["name"]: g["lr"] for g in m.param_groups(1.0)}
    assert groups == pytest.approx({"backbone.block1": 0.15, "backbone.block2": 1.0, "head": 1.0})


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"freeze": 1},
        {"freeze": "all_but_head"},
        {"layer_decay": 0.7},
        {"layer_decay": 0.7, "freeze": 1},
        {"gradual_unfreeze_every": 1},
        {"gradual_unfreeze_every": 2, "freeze": 1, "group_lr_mults": [1.0, 2.0]},
        {"lwf": {}, "layer_decay": 0.9},
    ],
)
def test_param_groups_cover_each_trainable_parameter_once(params: dict[str, Any]) -> None:
    m = make_finetune(source_head="lwf" in params, **params)
    groups = m.param_groups(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable <= set(ids)
    if "gradual_unfreeze_every" in params:
        # frozen groups above the floor are in too (no optimizer rebuild when unfrozen)
        floor = params.get("freeze", 0)
        above = {id(p) for g in m.backbone.layer_groups()[floor:] for p in _params(m, g)}
        assert above <= set(ids) and not any(
            id(p) in set(ids) for g in m.backbone.layer_groups()[:floor] for p in _params(m, g)
        )
    else:
        assert set(ids) == trainable


def _params(m: Any, group: Any) -> list[nn.Parameter]:
    named = dict(m.backbone.named_parameters())
    return [named[n] for n in group.param_names]


def test_group_lr_mults_of_wrong_length_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="3 learning-rate multipliers given for 2 layer groups"):
        make_finetune(group_lr_mults=[1.0, 1.0, 1.0])


def test_layer_decay_and_mults_together_are_rejected() -> None:
    with pytest.raises(ValueError, match="layer_decay or group_lr_mults"):
        make_finetune(layer_decay=0.5, group_lr_mults=[1.0, 1.0])


def test_renamed_and_injected_parameters_join_their_layer_group() -> None:
    """A parameter missing from the layer groups' lists (an adapter, a renamed base weight)
    joins the group sharing its module path; an unplaceable one goes to ``other``."""
    torch.manual_seed(0)
    bb = TinyVectorBackbone()
    groups = bb.layer_groups()  # computed now and kept, like a backbone that caches them
    bb.block2[0].lora_a = nn.Parameter(torch.zeros(2, 8))
    bb.extra = nn.Parameter(torch.zeros(3))
    bb.layer_groups = lambda: groups  # type: ignore[method-assign]
    per_group, other = assign_parameters(bb)
    assert [n for n, _ in per_group[1]] == ["block2.0.weight", "block2.0.bias", "block2.0.lora_a"]
    assert [n for n, _ in other] == ["extra"]
    pgs = discriminative_groups(bb, nn.Linear(8, 2), 1.0, [0.5, 1.0], 0.1)
    assert [g["name"] for g in pgs] == [
        "backbone.block1",
        "backbone.block2",
        "backbone.other",
        "head",
    ]
    assert sum(len(g["params"]) for g in pgs) == len(list(bb.parameters())) + 2
    freeze_to(bb, 2)
    assert not bb.block2[0].lora_a.requires_grad and bb.extra.requires_grad


class LrRecorder(Callback):
    """Records (schedule step, {group name: lr}) right before each optimizer step."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def on_before_optimizer_step(self, trainer: Any) -> None:
        lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
        self.rows.append((trainer.scheduler.last_epoch, lrs))


@pytest.mark.parametrize(
    ("schedule", "params", "mults"),
    [
        (
            "cosine",
            {"layer_decay": 0.5, "backbone_lr_mult": 0.4},
            {"backbone.block1": 0.1, "backbone.block2": 0.2, "head": 1.0},
        ),
        (
            "slanted_triangular",
            {"group_lr_mults": [0.3, 2.0], "backbone_lr_mult": 0.5, "gradual_unfreeze_every": 1},
            {"backbone.block1": 0.15, "backbone.block2": 1.0, "head": 1.0},
        ),
    ],
)
def test_group_lr_is_multiplier_times_schedule_at_every_step(
    tmp_path: Path, schedule: str, params: dict[str, Any], mults: dict[str, float]
) -> None:
    rec = LrRecorder()
    m = make_finetune(**params)
    fit(m, tmp_path, callbacks=(rec,), schedule=schedule, epochs=2, save_checkpoints=False)
    cfg = train_config(schedule=schedule, epochs=2)
    factor = schedule_factor(cfg, 12)
    assert [s for s, _ in rec.rows] == list(range(12))  # 2 epochs x 6 steps
    assert len({factor(s) for s, _ in rec.rows}) > 5  # the schedule really varies
    for step, lrs in rec.rows:
        assert set(lrs) == set(mults)
        for name, lr in lrs.items():
            assert lr == pytest.approx(cfg.lr * mults[name] * factor(step), rel=1e-12), (
                step,
                name,
            )
