"""Gradual unfreezing: the schedule, frozen weights bit-equal, BN modes, exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.finetune.helpers import clone_state, fit, make_finetune
from transferkit.engine import Callback, CheckpointStore
from transferkit.errors import CheckpointError, ConfigError
from transferkit.finetune.unfreeze import unfrozen_count


def test_unfrozen_count_schedule() -> None:
    # n = 4 groups, every 2 epochs, floor 1: 0,0,1,1,2,2,3,3,3 ...
    got = [unfrozen_count(e, 2, 4, 1) for e in range(10)]
    assert got == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]
    assert [unfrozen_count(e, 1, 2) for e in range(4)] == [0, 1, 2, 2]


class EpochProbe(Callback):
    """Per epoch: requires_grad of each layer group and BN mode (seen at every step, so
    the state is the same all epoch long), and the backbone's state at the epoch's end."""

    def __init__(self) -> None:
        self.flags: dict[int, set[tuple[Any, ...]]] = {}
        self.states: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer: Any) -> None:
        bb = trainer.method.backbone
        named = dict(bb.named_parameters())
        grads = tuple(all(named[n].requires_grad for n in g.param_names) for g in bb.layer_groups())
        assert grads == tuple(
            any(named[n].requires_grad for n in g.param_names) for g in bb.layer_groups()
        )
        self.flags.setdefault(trainer.epoch, set()).add((*grads, bb.block1[1].training))

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.states.append(clone_state(trainer.method.backbone))


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


@pytest.mark.parametrize("freeze", ["none", 1])
def test_groups_unfreeze_top_down_and_frozen_ones_stay_bit_equal(
    tmp_path: Path, freeze: str | int
) -> None:
    m = make_finetune(gradual_unfreeze_every=1, freeze=freeze, layer_decay=0.5)
    start = clone_state(m.backbone)
    probe = EpochProbe()
    fit(m, tmp_path, callbacks=(probe,), epochs=3, save_checkpoints=False)
    # (block1 trains, block2 trains, block1's BatchNorm in train mode) per epoch
    if freeze == "none":
        assert probe.flags == {
            0: {(False, False, False)},
            1: {(False, True, False)},
            2: {(True, True, True)},
        }
    else:  # the floor: block1 never unfreezes
        assert probe.flags == {e: {(False, e >= 1, False)} for e in range(3)}
    s0, s1, s2 = probe.states
    assert not _changed(start, s0, "")  # epoch 1: head only (BN running stats too)
    assert not _changed(start, s1, "block1.") and _changed(start, s1, "block2.")
    assert _changed(start, s2, "block1.") == (freeze == "none")
    assert _changed(start, s2, "block1.1.running_mean") == (freeze == "none")
    assert m.unfreezing is not None and m.unfreezing.events == (
        [[1, 1], [2, 2]] if freeze == "none" else [[1, 1]]
    )


def test_bn_follows_the_method_mode_when_eval_is_off(tmp_path: Path) -> None:
    m = make_finetune(gradual_unfreeze_every=1, bn_eval_when_frozen=False)
    probe = EpochProbe()
    fit(m, tmp_path, callbacks=(probe,), epochs=1, save_checkpoints=False)
    assert probe.flags == {0: {(False, False, True)}}


def test_nothing_left_to_unfreeze_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nothing to unfreeze"):
        make_finetune(gradual_unfreeze_every=1, freeze="all_but_head")


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if trainer.global_step == self.step:
            raise Crash


# 6 optimizer steps per epoch; unfreezing events at epochs 2 and 3 (every=1); crash mid-
# epoch 2 (step 8) and at the end of epoch 2, right before the second event (step 12).
@pytest.mark.parametrize("crash_step", [8, 12])
def test_resume_is_bit_exact_with_the_same_unfrozen_set(tmp_path: Path, crash_step: int) -> None:
    params = dict(gradual_unfreeze_every=1, layer_decay=0.6, l2sp={"alpha": 0.1})
    kw = dict(epochs=3, checkpoint_every_steps=4)
    straight = make_finetune(**params)
    fit(straight, tmp_path / "a", **kw)
    with pytest.raises(Crash):
        fit(make_finetune(**params), tmp_path / "b", callbacks=(CrashAt(crash_step),), **kw)
    latest = CheckpointStore(tmp_path / "b" / "checkpoints").latest()
    assert latest is not None and latest.name.startswith(f"ckpt-{crash_step:08d}")
    resumed = make_finetune(seed=99, **params)  # another init: the checkpoint must win
    fit(resumed, tmp_path / "b", resume=True, **kw)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert straight.unfreezing is not None and resumed.unfreezing is not None
    assert straight.unfreezing.state_dict() == resumed.unfreezing.state_dict()
    flags = [p.requires_grad for p in straight.parameters()]
    assert flags == [p.requires_grad for p in resumed.parameters()]


def test_state_restores_the_unfrozen_set_and_rejects_another_schedule() -> None:
    a = make_finetune(gradual_unfreeze_every=2)
    assert a.unfreezing is not None
    a.unfreezing.apply(1)
    state = a.unfreezing.state_dict()
    b = make_finetune(gradual_unfreeze_every=2)
    assert b.unfreezing is not None and not b.backbone.block2[0].weight.requires_grad
    b.unfreezing.load_state_dict(state)
    assert b.unfreezing.trainable_groups() == [False, True]
    assert b.backbone.block2[0].weight.requires_grad
    assert not b.backbone.block1[0].weight.requires_grad
    c = make_finetune(gradual_unfreeze_every=3)
    assert c.unfreezing is not None
    with pytest.raises(CheckpointError, match="gradual unfreezing"):
        c.unfreezing.load_state_dict(state)
