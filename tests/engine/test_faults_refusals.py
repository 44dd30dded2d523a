"""A resume that cannot be exact is refused with what / where / fix, and writes nothing.

Each case damages or changes one thing after a run was interrupted (truncated or flipped
files, another architecture, method, hyper-parameter, learning rate or data) and checks
that ``fit(resume=True)`` raises :class:`CheckpointError` naming the difference, and that
the run directory is byte-identical afterwards (every file hashed before and after).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel

from tests.engine.tiny import TinyMLP, VectorDataset, collate, make_blobs
from transferkit.engine import Callback, CheckpointStore, TrainConfig, Trainer
from transferkit.errors import CheckpointError

DATA = make_blobs(24, seed=1)


class Crash(Exception):
    pass


class CrashAt(Callback):
    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if trainer.global_step == 4:
            raise Crash


class Hparams(BaseModel):
    temperature: float = 1.0


class TemperedMLP(TinyMLP):
    """TinyMLP with pydantic hyper-parameters (as every registered method has)."""

    def __init__(self, temperature: float = 1.0, hidden: int = 16) -> None:
        super().__init__(hidden=hidden)
        self.hparams = Hparams(temperature=temperature)


class OtherMLP(TinyMLP):
    """Same parameters as TinyMLP, another algorithm."""


def fit(run_dir: Path, method: TinyMLP | None = None, data: Any = DATA, **kw: Any) -> Trainer:
    cbs = [] if kw.pop("resume", False) else [CrashAt()]
    cfg = TrainConfig(
        **{
            "mixed_precision": "no",
            "lr": 0.05,
            "batch_size": 4,
            "epochs": 2,
            "checkpoint_every_steps": 2,
            "seed": 3,
            **kw,
        }
    )
    torch.manual_seed(0)
    method = method if method is not None else TemperedMLP()
    return Trainer(method, data, collate, cfg, run_dir, callbacks=cbs, quiet=True)


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    with pytest.raises(Crash):
        fit(tmp_path).fit()
    return tmp_path


def latest(run_dir: Path) -> Path:
    found = CheckpointStore(run_dir / "checkpoints").latest()
    assert found is not None
    return found


def truncate(name: str) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        f = latest(run_dir) / name
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    return damage


def flip(name: str) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        f = latest(run_dir) / name
        data = bytearray(f.read_bytes())
        data[len(data) * 2 // 3] ^= 0x01
        f.write_bytes(bytes(data))

    return damage


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (truncate("model.safetensors"), "weights file does not match its recorded sha256"),
        (flip("model.safetensors"), "weights file does not match its recorded sha256"),
        (truncate("trainer_state.pt"), "trainer state is missing or does not match"),
        (flip("trainer_state.pt"), "trainer state is missing or does not match"),
        (flip("manifest.json"), "manifest is missing or unreadable|does not match"),
    ],
)
def test_damaged_checkpoint_is_refused_and_nothing_changes(
    crashed: Path, damage: Callable[[Path], None], match: str
) -> None:
    damage(crashed)
    before = tree(crashed)
    with pytest.raises(CheckpointError, match=match) as info:
        fit(crashed, resume=True).fit(resume=True)
    assert str(latest(crashed)) in (info.value.where or "")
    assert "start the run again without resume" in (info.value.fix or "")
    assert tree(crashed) == before


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(lr=0.01), r"lr=0\.05 \(now 0\.01\)"),
        (dict(epochs=3), r"epochs=2 \(now 3\)"),
        (dict(method=OtherMLP()), r"method tests\.engine\.test_faults_refusals\.TemperedMLP "),
        (dict(method=TemperedMLP(2.0)), r"method parameter temperature=1\.0 \(now 2\.0\)"),
        (dict(data=make_blobs(24, seed=2)), "training data's content"),
        (dict(data=make_blobs(28, seed=1)), r"num_items=24 \(now 28\)"),
        (
            dict(method=TemperedMLP(hidden=24)),
            r"another architecture \(shape differs: body\.0\.weight \[16, 8\] in the "
            r"checkpoint, \[24, 8\] now",
        ),
    ],
)
def test_changed_run_is_refused_naming_the_difference(
    crashed: Path, change: dict[str, Any], match: str
) -> None:
    before = tree(crashed)
    with pytest.raises(CheckpointError, match=match) as info:
        fit(crashed, resume=True, **change).fit(resume=True)
    assert "without resume" in (info.value.fix or "")
    assert tree(crashed) == before


def test_unchanged_resume_still_works_after_refusals(crashed: Path) -> None:
    with pytest.raises(CheckpointError):
        fit(crashed, resume=True, lr=0.01).fit(resume=True)
    result = fit(crashed, resume=True).fit(resume=True)
    assert result.stopped_reason == "completed" and result.global_step == 12


def test_fingerprint_sees_one_changed_value(crashed: Path) -> None:
    x = DATA.x.clone()
    x[17, 5] += 1e-6
    with pytest.raises(CheckpointError, match="training data's content"):
        fit(crashed, resume=True, data=VectorDataset(x, DATA.y)).fit(resume=True)
