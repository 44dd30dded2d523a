"""``on_nonfinite``: stop keeps the last good checkpoint; rollback returns to it and goes on.

The faults are injected deterministically: a NaN input (a poisoned example), a term with
an infinite gradient but a finite loss, and a loss that is NaN once. A rolled-back run is
compared bit for bit with a clean run that skips the same batches (or lowers the learning
rate at the same step) from the start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.engine.tiny import TinyMLP, VectorDataset, collate, make_blobs
from transferkit.engine import (
    Callback,
    CheckpointStore,
    EpochPermutationSampler,
    TrainConfig,
    Trainer,
)
from transferkit.engine.state import scale_lr
from transferkit.errors import ConfigError, TrainingError

N, BS, SEED = 32, 4, 7  # 8 micro-batches (= optimizer steps) per epoch
POISON = 13  # the example that carries the fault
MARK = 1234.0  # finite marker of the example with an infinite gradient


def dataset(nan: bool = False, mark: bool = False) -> VectorDataset:
    ds = make_blobs(N, seed=1)
    x = ds.x.clone()
    if nan:
        x[POISON, 0] = float("nan")
    if mark:
        x[POISON, -1] = MARK
    return VectorDataset(x, ds.y)


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        mixed_precision="no",
        lr=0.05,
        batch_size=BS,
        epochs=2,
        schedule="cosine",
        warmup_ratio=0.1,
        checkpoint_every_steps=3,
        log_every_steps=1,
        seed=SEED,
        on_nonfinite="rollback",
    )
    return TrainConfig(**{**base, **kw})


def poisoned_position(epoch: int) -> int:
    """Index of the batch holding ``POISON`` in ``epoch`` (by hand, from the sampler)."""
    perm = EpochPermutationSampler(N, SEED).permutation(epoch)
    return int((perm == POISON).nonzero()) // BS


class GradBomb(TinyMLP):
    """Finite loss, but a NaN gradient (0 * d sqrt(u)/du at u = 0) on marked batches."""

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = super().training_step(batch)
        if bool((batch["x"][:, -1] == MARK).any()):
            w = self.head.weight.sum()
            out["loss"] = out["loss"] + 0.0 * torch.sqrt(w - w.detach())
        return out


class NanOnce(TinyMLP):
    """A transient fault: the ``at``-th call of training_step returns a NaN loss."""

    def __init__(self, at: int) -> None:
        super().__init__(dropout=0.3)
        self.at, self.calls = at, 0

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        self.calls += 1
        out = super().training_step(batch)
        if self.calls == self.at:
            out["loss"] = out["loss"] * float("nan")
        return out


class PresetSkip(Callback):
    """The reference: skip these (epoch, batch) positions from the start."""

    def __init__(self, skip: set[tuple[int, int]]) -> None:
        self.skip = skip

    def on_train_start(self, trainer: Any) -> None:
        trainer.faults.skip = set(self.skip)


class HalveLrAt(Callback):
    """The reference of a lowered learning rate: halve it after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Any) -> None:
        if trainer.global_step == self.step:
            scale_lr(trainer, 0.5)
            trainer.faults.lr_scale = 0.5


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if trainer.global_step == self.step and trainer.faults.rollbacks:
            raise Crash


def fit(
    run_dir: Path,
    method: TinyMLP,
    data: VectorDataset,
    cbs: tuple[Callback, ...] = (),
    resume: bool = False,
    **kw: Any,
) -> Any:
    trainer = Trainer(method, data, collate, config(**kw), run_dir, callbacks=cbs, quiet=True)
    return trainer.fit(resume=resume)


def mlp(cls: type[TinyMLP] = TinyMLP, **kw: Any) -> TinyMLP:
    torch.manual_seed(3)
    return cls(**kw)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def log_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("log_every", [1, 100])  # found at once, or at the next checkpoint
def test_rollback_skips_the_poisoned_batch_and_equals_a_clean_skipping_run(
    tmp_path: Path, log_every: int
) -> None:
    p0, p1 = poisoned_position(0), poisoned_position(1)
    bad = mlp(dropout=0.3)
    res = fit(tmp_path / "bad", bad, dataset(nan=True), log_every_steps=log_every)
    # one rollback per epoch: the poisoned example comes back in another batch
    assert [(r["step"], r["skipped_batches"]) for r in res.rollbacks] == [
        (p0 + 1, [[0, p0]]),
        (8 + p1, [[1, p1]]),  # epoch 1 starts after 7 steps (one skipped in epoch 0)
    ]
    assert all(r["what"] == "loss" and r["restored_step"] < r["step"] for r in res.rollbacks)
    assert res.global_step == 14 and res.stopped_reason == "completed"

    ref = mlp(dropout=0.3)
    fit(
        tmp_path / "ref",
        ref,
        dataset(),
        (PresetSkip({(0, p0), (1, p1)}),),
        log_every_steps=log_every,
    )
    assert same_weights(bad, ref)
    assert log_rows(tmp_path / "bad") == log_rows(tmp_path / "ref")
    assert all(r["loss"] is not None for r in log_rows(tmp_path / "bad") if "loss" in r)


@pytest.mark.parametrize("log_every", [1, 100])
def test_a_nan_gradient_with_finite_loss_is_blamed_on_its_own_step(
    tmp_path: Path, log_every: int
) -> None:
    p0, p1 = poisoned_position(0), poisoned_position(1)
    bad = mlp(GradBomb)
    res = fit(
        tmp_path / "bad", bad, dataset(mark=True), clip_grad_norm=1.0, log_every_steps=log_every
    )
    # the loss first fails one step later (NaN weights); the NaN gradient norm names the step
    first = res.rollbacks[0]
    assert first["blamed_step"] == p0 + 1 and first["skipped_batches"] == [[0, p0]]
    assert first["step"] >= p0 + 1
    ref = mlp(GradBomb)
    skip = PresetSkip({(0, p0), (1, p1)})
    fit(tmp_path / "ref", ref, dataset(mark=True), (skip,), clip_grad_norm=1.0)
    assert same_weights(bad, ref)


def test_rollback_can_lower_the_learning_rate_instead(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(
        schedule="constant", warmup_ratio=0.0, rollback_skip_batches=False, rollback_lr_factor=0.5
    )
    torch.manual_seed(3)
    bad = NanOnce(at=5)
    res = fit(tmp_path / "bad", bad, dataset(), **kw)
    assert len(res.rollbacks) == 1
    assert res.rollbacks[0]["restored_step"] == 3 and res.rollbacks[0]["lr_scale"] == 0.5
    assert res.rollbacks[0]["skipped_batches"] == []
    assert res.global_step == 16  # nothing skipped
    lrs = [(r["step"], r["lr"]) for r in log_rows(tmp_path / "bad") if r["type"] == "train"]
    assert lrs == [(s, 0.05 if s <= 3 else 0.025) for s in range(1, 17)]

    torch.manual_seed(3)
    ref = NanOnce(at=-1)
    fit(tmp_path / "ref", ref, dataset(), (HalveLrAt(3),), **kw)
    assert same_weights(bad, ref)


def test_a_run_resumed_after_a_rollback_is_bit_exact(tmp_path: Path) -> None:
    straight = mlp(dropout=0.3)
    fit(tmp_path / "a", straight, dataset(nan=True))
    with pytest.raises(Crash):  # killed after the first rollback, before the second
        fit(tmp_path / "b", mlp(dropout=0.3), dataset(nan=True), (CrashAt(9),))
    resumed = mlp(dropout=0.3)
    res = fit(tmp_path / "b", resumed, dataset(nan=True), resume=True)
    assert len(res.rollbacks) == 2
    assert same_weights(straight, resumed)
    assert log_rows(tmp_path / "a") == log_rows(tmp_path / "b")


def test_too_many_rollbacks_stop_with_the_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"after max_rollbacks=1 rollbacks") as info:
        fit(tmp_path, mlp(), dataset(nan=True), max_rollbacks=1)
    err = info.value
    assert "learning rate" in err.fix and "last good checkpoint ckpt-" in err.fix
    store = CheckpointStore(tmp_path / "checkpoints")
    latest = store.latest()
    assert latest is not None
    weights, state = store.load(latest)
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert state["epoch"] == 1 and len(state["faults"]["rollbacks"]) == 1
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".tmp")] == []


def test_stop_keeps_the_checkpoint_and_suggests_rollback(tmp_path: Path) -> None:
    step = poisoned_position(0) + 1
    with pytest.raises(TrainingError, match=f"non-finite \\(nan\\) at step {step}") as info:
        fit(tmp_path, mlp(), dataset(nan=True), on_nonfinite="stop")
    assert "on_nonfinite='rollback'" in info.value.fix
    store = CheckpointStore(tmp_path / "checkpoints")
    latest = store.latest()
    assert latest is not None and latest.name in info.value.fix
    assert store.load(latest)[1]["global_step"] == (step - 1) // 3 * 3


def test_rollback_from_the_start_checkpoint(tmp_path: Path) -> None:
    """A fault before any periodic checkpoint returns to the one written before step 1."""
    torch.manual_seed(3)
    bad = NanOnce(at=1)
    res = fit(tmp_path, bad, dataset(), checkpoint_every_steps=None)
    assert res.rollbacks[0]["restored_step"] == 0 and res.rollbacks[0]["skipped_batches"] == [
        [0, 0]
    ]
    assert res.global_step == 15


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(on_nonfinite="rollback", save_checkpoints=False), "save_checkpoints=True"),
        (dict(rollback_skip_batches=False, rollback_lr_factor=1.0), "same non-finite loss"),
        (dict(rollback_lr_factor=0.0), r"rollback_lr_factor=0\.0"),
        (dict(rollback_lr_factor=1.5), r"in \(0, 1\]"),
        (dict(max_rollbacks=0), "max_rollbacks"),
        (dict(on_nonfinite="skip"), "stop, rollback"),
    ],
)
def test_invalid_fault_settings_are_config_errors(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config(**kw)
