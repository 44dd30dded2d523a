"""Trainer behaviour: learning, accumulation, clipping, early stopping, logs, bad losses."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from tests.engine.tiny import TinyMLP, collate, make_blobs, make_method
from transferkit.engine import (
    Callback,
    CheckpointStore,
    ProgressBar,
    TrainConfig,
    Trainer,
)
from transferkit.errors import ConfigError, TrainingError


def cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "mixed_precision": "no",
        "save_checkpoints": False,
        "lr": 0.05,
        "batch_size": 8,
        "epochs": 2,
        "schedule": "constant",
    }
    return TrainConfig(**{**base, **kw})


def test_loss_decreases_and_model_learns(tmp_path: Path) -> None:
    method = make_method(dropout=0.1)
    data = make_blobs(96)
    res = Trainer(
        method,
        data,
        collate,
        cfg(epochs=6, schedule="cosine", warmup_ratio=0.1),
        tmp_path,
        quiet=True,
    ).fit()
    losses = [r["train_loss"] for r in res.history]
    assert len(losses) == 6 and res.stopped_reason == "completed"
    assert losses[-1] < 0.5 * losses[0]
    assert res.global_step == 6 * 12
    method.eval()
    acc = (method.predict(data.x).argmax(1) == data.y).float().mean()
    assert acc > 0.9


def test_grad_accumulation_equals_large_batch(tmp_path: Path) -> None:
    data = make_blobs(64)
    common = {"optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "epochs": 2}
    big = make_method(seed=3)
    Trainer(big, data, collate, cfg(batch_size=16, **common), tmp_path / "a", quiet=True).fit()
    small = make_method(seed=3)
    Trainer(
        small,
        data,
        collate,
        cfg(batch_size=8, grad_accum_steps=2, **common),
        tmp_path / "b",
        quiet=True,
    ).fit()
    moved = False
    for (k, a), b in zip(big.state_dict().items(), small.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
        moved |= not torch.equal(a, make_method(seed=3).state_dict()[k])
    assert moved


class GradNormRecorder(Callback):
    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer: Any) -> None:
        grads = [p.grad for p in trainer.method.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))


def test_clipping_bounds_the_gradient_norm(tmp_path: Path) -> None:
    free, clipped = GradNormRecorder(), GradNormRecorder()
    Trainer(
        make_method(), make_blobs(48), collate, cfg(), tmp_path / "a", callbacks=[free], quiet=True
    ).fit()
    Trainer(
        make_method(),
        make_blobs(48),
        collate,
        cfg(clip_grad_norm=0.05, log_every_steps=1),
        tmp_path / "b",
        callbacks=[clipped],
        quiet=True,
    ).fit()
    assert min(free.norms) > 0.05  # so the bound below is not vacuous
    assert max(clipped.norms) <= 0.05 * (1 + 1e-5)
    logged = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] > 0.05 for r in logged if r["type"] == "train")  # pre-clip norm


class ScriptedVal:
    """val_fn returning a fixed sequence of accuracies, one per call."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = values, 0

    def __call__(self, method: Any) -> dict[str, float]:
        assert not method.training and torch.is_inference_mode_enabled()
        self.calls += 1
        return {"accuracy": self.values[self.calls - 1]}


class Snapshots(Callback):
    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.weights[record["epoch"]] = {
            k: v.clone() for k, v in trainer.method.state_dict().items()
        }


@pytest.mark.parametrize("save", [False, True])
def test_early_stopping_stops_after_patience_and_restores_best(tmp_path: Path, save: bool) -> None:
    val = ScriptedVal([0.5, 0.7, 0.6, 0.65, 0.72, 0.9, 0.95, 0.99])
    snaps = Snapshots()
    method = make_method()
    config = cfg(
        epochs=8,
        early_stopping=True,
        monitor="val_accuracy",
        mode="max",
        patience=3,
        min_delta=0.05,
        save_checkpoints=save,
    )
    res = Trainer(
        method, make_blobs(32), collate, config, tmp_path, val_fn=val, callbacks=[snaps], quiet=True
    ).fit()
    # 0.72 is not > 0.7 + min_delta: epochs 3, 4, 5 bring no improvement -> stop after 5
    assert res.stopped_reason == "early_stopping"
    assert (res.best_epoch, res.best_metric, res.epochs_completed) == (2, 0.7, 5)
    assert val.calls == 5 and [r["val_accuracy"] for r in res.history][-1] == 0.72
    final = method.state_dict()
    assert all(torch.equal(final[k], v) for k, v in snaps.weights[2].items())
    assert not all(torch.equal(final[k], v) for k, v in snaps.weights[5].items())
    best_files = sorted(p.name for p in (tmp_path / "checkpoints").glob("best-*"))
    assert best_files == (["best-0002.safetensors"] if save else [])


def test_early_stopping_without_monitored_metric_is_a_config_error(tmp_path: Path) -> None:
    config = cfg(early_stopping=True, monitor="val_f1")
    trainer = Trainer(
        make_method(),
        make_blobs(16),
        collate,
        config,
        tmp_path,
        val_fn=lambda m: {"val_accuracy": 1.0},
        quiet=True,
    )
    with pytest.raises(ConfigError, match=r"val_f1.*val_accuracy"):
        trainer.fit()
    with pytest.raises(ConfigError, match="val_fn"):
        Trainer(make_method(), make_blobs(16), collate, config, tmp_path)


def test_jsonl_log_lines(tmp_path: Path) -> None:
    method = make_method(body_mult=0.5)
    Trainer(
        method,
        make_blobs(48),
        collate,
        cfg(log_every_steps=4),
        tmp_path,
        val_fn=lambda m: {"val_accuracy": 0.25},
        quiet=True,
    ).fit()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    # 48 / 8 = 6 steps per epoch, 12 in all: step records at 4, 8, 12 and two epoch records
    assert [(r["type"], r["step"], r["epoch"]) for r in rows] == [
        ("train", 4, 1),
        ("epoch", 6, 1),
        ("train", 8, 2),
        ("train", 12, 2),
        ("epoch", 12, 2),
    ]
    for r in rows:
        assert r["lr"] == pytest.approx(0.05)
    train = [r for r in rows if r["type"] == "train"]
    assert all({"loss", "acc", "lr_body", "lr_head"} <= set(r) for r in train)
    assert all(r["lr_body"] == pytest.approx(0.025) for r in train)
    epochs = [r for r in rows if r["type"] == "epoch"]
    assert all({"train_loss", "train_acc", "val_accuracy", "seconds"} <= set(r) for r in epochs)
    assert all(r["val_accuracy"] == 0.25 for r in epochs)


class PoisonedMLP(TinyMLP):
    """Its loss becomes NaN from the ``poison_at``-th training step on."""

    def __init__(self, poison_at: int) -> None:
        super().__init__()
        self.poison_at, self.calls = poison_at, 0

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        self.calls += 1
        out = super().training_step(batch)
        if self.calls >= self.poison_at:
            out["loss"] = out["loss"] * float("nan")
        return out


@pytest.mark.parametrize("log_every", [3, 100])
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, log_every: int
) -> None:
    torch.manual_seed(0)
    method = PoisonedMLP(poison_at=5)
    config = cfg(
        epochs=3, checkpoint_every_steps=2, log_every_steps=log_every, save_checkpoints=True
    )
    with pytest.raises(TrainingError) as info:
        Trainer(method, make_blobs(64), collate, config, tmp_path, quiet=True).fit()
    msg = str(info.value)
    assert "non-finite" in msg and "at step 5" in msg
    assert "learning rate" in msg and "clip" in msg and "ckpt-00000004-step" in msg
    store = CheckpointStore(tmp_path / "checkpoints")
    latest = store.latest()
    assert latest is not None and latest.name == "ckpt-00000004-step"
    weights, state = store.load(latest)
    assert state["global_step"] == 4
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_bad_training_step_output_is_a_training_error(tmp_path: Path) -> None:
    method = make_method()
    method.training_step = lambda batch: {"acc": torch.tensor(1.0)}  # type: ignore[method-assign]
    with pytest.raises(TrainingError, match="'loss'"):
        Trainer(method, make_blobs(16), collate, cfg(), tmp_path, quiet=True).fit()


def test_max_steps_caps_training(tmp_path: Path) -> None:
    res = Trainer(
        make_method(),
        make_blobs(48),
        collate,
        cfg(epochs=5, max_steps=8),
        tmp_path,
        val_fn=lambda m: {"acc": 0.5},
        quiet=True,
    ).fit()
    assert (res.global_step, res.stopped_reason, res.epochs_completed) == (8, "max_steps", 2)
    assert res.final_metrics == {"val_acc": 0.5}


class Stopper(Callback):
    def on_step_end(self, trainer: Any) -> None:
        if trainer.global_step == 3:
            trainer.request_stop("enough")


def test_callback_can_stop_and_sees_trainer(tmp_path: Path) -> None:
    res = Trainer(
        make_method(), make_blobs(48), collate, cfg(), tmp_path, callbacks=[Stopper()], quiet=True
    ).fit()
    assert (res.global_step, res.stopped_reason) == (3, "enough")


def test_progress_bar_renders_on_a_terminal(tmp_path: Path) -> None:
    out = io.StringIO()
    bar = ProgressBar(Console(file=out, force_terminal=True, width=120))
    Trainer(
        make_method(),
        make_blobs(32),
        collate,
        cfg(),
        tmp_path,
        callbacks=[bar],
        quiet=True,
        val_fn=lambda m: {"acc": 0.5},
    ).fit()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "8/8" in text and "epoch 2: train_loss" in text and "val_acc 0.5" in text


def test_progress_bar_is_silent_off_terminal(tmp_path: Path) -> None:
    out = io.StringIO()
    bar = ProgressBar(Console(file=out, force_terminal=False))
    Trainer(
        make_method(), make_blobs(16), collate, cfg(), tmp_path, callbacks=[bar], quiet=True
    ).fit()
    assert out.getvalue() == ""


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard is not installed"):
            Trainer(
                make_method(), make_blobs(16), collate, cfg(tensorboard=True), tmp_path, quiet=True
            ).fit()
        return
    Trainer(
        make_method(), make_blobs(16), collate, cfg(tensorboard=True), tmp_path, quiet=True
    ).fit()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_precision_can_change_between_trainers(tmp_path: Path) -> None:
    """Accelerate's process-wide state is re-initialised for a new precision (bf16 on CPU)."""
    methods = {}
    for mp in ("bf16", "no"):
        methods[mp] = make_method()
        trainer = Trainer(
            methods[mp], make_blobs(32), collate, cfg(mixed_precision=mp), tmp_path / mp, quiet=True
        )
        trainer.fit()
        assert trainer.accelerator.mixed_precision == mp
    low, full = methods["bf16"].state_dict(), methods["no"].state_dict()
    assert not all(torch.equal(low[k], full[k]) for k in full)  # autocast was active
    assert all(torch.allclose(low[k], full[k], atol=0.05) for k in full)


class BatchNormMLP(TinyMLP):
    def __init__(self) -> None:
        super().__init__()
        self.body.insert(1, torch.nn.BatchNorm1d(16))


def test_lone_last_batch_is_dropped_with_batchnorm(tmp_path: Path) -> None:
    res = Trainer(BatchNormMLP(), make_blobs(17), collate, cfg(), tmp_path, quiet=True).fit()
    assert res.global_step == 2 * 2  # 17 = 2 x 8 + 1: the batch of one is dropped


class WithCallbacks(TinyMLP):
    def __init__(self) -> None:
        super().__init__()
        self.seen = Snapshots()

    def training_callbacks(self) -> list[Callback]:
        return [self.seen]


def test_method_can_register_callbacks(tmp_path: Path) -> None:
    method = WithCallbacks()
    Trainer(method, make_blobs(16), collate, cfg(), tmp_path, quiet=True).fit()
    assert sorted(method.seen.weights) == [1, 2]


@pytest.mark.parametrize(("interval", "expected"), [(0.0, 4), (3600.0, 1)])
def test_checkpoint_min_interval_skips_young_epoch_checkpoints(
    tmp_path: Path, interval: float, expected: int
) -> None:
    saved: list[str] = []

    class Spy(Callback):
        def on_checkpoint(self, trainer: Trainer, path: Any) -> None:
            saved.append(Path(path).name)

    Trainer(
        make_method(),
        make_blobs(32),
        collate,
        cfg(epochs=3, save_checkpoints=True, checkpoint_min_interval_s=interval),
        tmp_path,
        callbacks=[Spy()],
        quiet=True,
    ).fit()
    assert len(saved) == expected  # 3 epoch-end checkpoints + final, or final only
    assert saved[-1].endswith("-final")
