"""Exact resume: in-process crash + rebuild, corrupted checkpoints, settings mismatch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.engine.tiny import collate, make_blobs, make_method
from transferkit.engine import Callback, CheckpointStore, TrainConfig, Trainer
from transferkit.errors import CheckpointError

DATA = make_blobs(40, seed=1)
VAL = make_blobs(30, seed=2)


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        mixed_precision="no",
        lr=0.05,
        batch_size=4,
        grad_accum_steps=2,
        epochs=3,
        schedule="cosine",
        warmup_ratio=0.2,
        clip_grad_norm=1.0,
        checkpoint_every_steps=3,
        log_every_steps=2,
        early_stopping=True,
        monitor="val_wnorm",
        mode="min",
        patience=10,
        seed=7,
    )
    return TrainConfig(**{**base, **kw})


def val_fn(method: Any) -> dict[str, float]:
    """A deterministic function of the weights (its minimum is early in training)."""
    return {
        "wnorm": float(method.head.weight.norm()),
        "accuracy": float((method.predict(VAL.x).argmax(1) == VAL.y).float().mean()),
    }


class Crash(Exception):
    pass


class StepCounter(Callback):
    """A stateful schedule-like callback: its state must survive the resume."""

    def __init__(self) -> None:
        self.count = 0
        self.epoch_starts: list[tuple[int, int]] = []

    def on_epoch_start(self, trainer: Any) -> None:
        self.epoch_starts.append((trainer.epoch, trainer.step_in_epoch))

    def on_step_end(self, trainer: Any) -> None:
        assert trainer.optimizer is not None and trainer.method.training
        self.count += 1
        assert self.count == trainer.global_step

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]


class CrashAfterCheckpoint(Callback):
    """Simulates a kill right after the checkpoint of optimizer step ``step`` is committed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if trainer.global_step == self.step:
            raise Crash


def log_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def train(
    run_dir: Path,
    resume: bool = False,
    init_seed: int = 0,
    callbacks: tuple[Callback, ...] = (),
    **kw: Any,
) -> tuple[Any, Any]:
    method = make_method(seed=init_seed, dropout=0.3, body_mult=0.5)
    trainer = Trainer(
        method, DATA, collate, config(**kw), run_dir, val_fn=val_fn, callbacks=callbacks, quiet=True
    )
    return method, trainer.fit(resume=resume)


# 40 items / batch 4 = 10 micro-batches = 5 optimizer steps per epoch, 15 in all.
# crash at step 3: mid-epoch 1; at 5: an epoch-end checkpoint; at 12: mid-epoch 3, after the
# best epoch (early stopping has to bring its best weights back from disk).
@pytest.mark.parametrize("crash_step", [3, 5, 12])
def test_resume_in_process_is_bit_exact(tmp_path: Path, crash_step: int) -> None:
    straight, res_a = train(tmp_path / "a")
    with pytest.raises(Crash):
        train(tmp_path / "b", callbacks=(StepCounter(), CrashAfterCheckpoint(crash_step)))
    latest = CheckpointStore(tmp_path / "b" / "checkpoints").latest()
    assert latest is not None and latest.name.startswith(f"ckpt-{crash_step:08d}")
    # rebuild everything, from a different initialisation: the checkpoint must win
    counter = StepCounter()
    resumed, res_b = train(tmp_path / "b", resume=True, init_seed=123, callbacks=(counter,))
    assert counter.count == 15  # restored at crash_step, then counted on
    first_epoch, first_step = counter.epoch_starts[0]
    assert (first_epoch * 10 + first_step) == crash_step * 2  # resumed where it stopped
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert res_a.best_epoch == res_b.best_epoch and res_a.global_step == res_b.global_step == 15
    if crash_step == 12:
        assert res_b.best_epoch is not None and res_b.best_epoch < 3
    assert log_rows(tmp_path / "a") == log_rows(tmp_path / "b")
    assert [r["train_loss"] for r in res_a.history] == [r["train_loss"] for r in res_b.history]


def test_resuming_a_finished_run_returns_its_result(tmp_path: Path) -> None:
    done, res = train(tmp_path)
    again, res2 = train(tmp_path, resume=True, init_seed=99)
    assert res2 == res
    assert all(
        torch.equal(a, b)
        for a, b in zip(done.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    fresh, _ = train(tmp_path / "a")
    resumed, res = train(tmp_path / "b", resume=True)
    assert res.global_step == 15
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), resumed.state_dict().values(), strict=True)
    )


def crashed_run(run_dir: Path, step: int = 6) -> Path:
    with pytest.raises(Crash):
        train(run_dir, callbacks=(CrashAfterCheckpoint(step),))
    latest = CheckpointStore(run_dir / "checkpoints").latest()
    assert latest is not None
    return latest


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    ckpt = crashed_run(tmp_path)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="sha256") as info:
        train(tmp_path, resume=True)
    assert "model.safetensors" in str(info.value)


def test_modified_trainer_state_is_refused(tmp_path: Path) -> None:
    ckpt = crashed_run(tmp_path)
    state = ckpt / "trainer_state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="trainer state"):
        train(tmp_path, resume=True)


def test_dangling_latest_pointer_is_refused(tmp_path: Path) -> None:
    crashed_run(tmp_path)
    (tmp_path / "checkpoints" / "latest").write_text("ckpt-00000099-step\n")
    with pytest.raises(CheckpointError, match="does not exist"):
        train(tmp_path, resume=True)


def test_half_written_checkpoint_is_ignored(tmp_path: Path) -> None:
    crashed_run(tmp_path)
    junk = tmp_path / "checkpoints" / ".tmp-ckpt-00000009-step-deadbeef"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"\x00" * 10)
    straight, _ = train(tmp_path / "ref")
    resumed, _ = train(tmp_path, resume=True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True)
    )
    assert not junk.exists()


def test_changed_settings_are_refused(tmp_path: Path) -> None:
    crashed_run(tmp_path)
    with pytest.raises(CheckpointError, match=r"batch_size=4 \(now 8\)"):
        train(tmp_path, resume=True, batch_size=8)
    # logging / checkpoint frequency may change without breaking exactness
    _, res = train(tmp_path, resume=True, log_every_steps=5)
    assert res.global_step == 15


def test_trainer_state_loads_without_pickle(tmp_path: Path) -> None:
    ckpt = crashed_run(tmp_path)
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    assert {
        "optimizer",
        "scheduler",
        "rng",
        "callbacks",
        "history",
        "epoch",
        "step_in_epoch",
        "global_step",
        "weights_sha256",
    } <= set(state)
    assert state["global_step"] == 6 and state["epoch"] == 1 and state["step_in_epoch"] == 2
    assert state["callbacks"]["JsonlLogger"]["lines"] == 4  # steps 2, 4, epoch 1, step 6
