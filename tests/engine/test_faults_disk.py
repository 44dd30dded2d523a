"""A full disk while writing a checkpoint: a clear error, the previous checkpoint intact.

The low-level writers (safetensors' ``save_file``, ``torch.save``, the ``latest`` pointer)
are patched to write part of their bytes and then fail with ``ENOSPC``; where this process
may mount a tiny tmpfs (root on Linux) a real full disk is used as well.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.engine.tiny import collate, make_blobs, make_method
from transferkit.engine import Callback, CheckpointStore, TrainConfig, Trainer
from transferkit.engine import checkpoint as ckpt_module
from transferkit.errors import CheckpointError

DATA = make_blobs(24, seed=1)  # 6 optimizer steps per epoch


def trainer(
    run_dir: Path, cbs: tuple[Callback, ...] = (), val_fn: Any = None, **kw: Any
) -> Trainer:
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
    method = make_method(seed=1)
    return Trainer(method, DATA, collate, cfg, run_dir, val_fn=val_fn, callbacks=cbs, quiet=True)


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FailOnCall:
    """Wraps a writer: its call number ``n`` raises ``error``, after writing half of its
    file (``partial``; the file is positional argument ``at``) or nothing at all."""

    def __init__(self, real: Any, n: int, error: OSError, partial: bool = True, at: int = 1):
        self.real, self.n, self.error, self.partial, self.at = real, n, error, partial, at
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls != self.n:
            return self.real(*args, **kwargs)
        if self.partial:
            self.real(*args, **kwargs)
            path = Path(args[self.at])
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise self.error


def checkpoint_names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def assert_previous_intact(run_dir: Path, step: int) -> None:
    store = CheckpointStore(run_dir / "checkpoints")
    latest = store.latest()
    assert latest is not None and latest.name == f"ckpt-{step:08d}-step"
    _, state = store.load(latest)  # checksums verified
    assert state["global_step"] == step
    assert checkpoint_names(run_dir) == [latest.name, "latest"]  # no temp dir, no partial one


@pytest.mark.parametrize("writer", ["save_file", "torch_save", "latest"])
def test_disk_full_mid_checkpoint_is_a_clear_error_and_keeps_the_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    if writer == "save_file":
        monkeypatch.setattr(
            ckpt_module, "save_file", FailOnCall(ckpt_module.save_file, 2, enospc())
        )
    elif writer == "torch_save":
        monkeypatch.setattr(torch, "save", FailOnCall(torch.save, 2, enospc()))
    else:  # the temporary file of the new `latest` pointer cannot be written
        fail = FailOnCall(ckpt_module.atomic_write_text, 2, enospc(), partial=False)
        monkeypatch.setattr(ckpt_module, "atomic_write_text", fail)
    with pytest.raises(CheckpointError) as info:
        trainer(tmp_path).fit()
    err = info.value
    assert "could not write checkpoint ckpt-00000004-step: no space left on the device" in err.what
    assert "previous checkpoint ckpt-00000002-step is intact" in err.what
    assert err.where == str(tmp_path / "checkpoints")
    assert err.fix is not None and "free disk space" in err.fix and "resume" in err.fix
    assert_previous_intact(tmp_path, 2)

    monkeypatch.undo()  # space freed: resume finishes exactly like an uninterrupted run
    resumed = trainer(tmp_path)
    resumed.fit(resume=True)
    straight = trainer(tmp_path / "ref")
    straight.fit()
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_read_only_directory_names_another_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(ckpt_module, "save_file", FailOnCall(ckpt_module.save_file, 1, denied))
    with pytest.raises(CheckpointError, match="Read-only file system; no earlier checkpoint") as e:
        trainer(tmp_path).fit()
    assert e.value.fix is not None and "writable" in e.value.fix
    assert checkpoint_names(tmp_path) == []


def test_disk_full_while_keeping_the_best_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transferkit.engine import callbacks

    fail = FailOnCall(callbacks.save_weights, 1, enospc(), at=0)
    monkeypatch.setattr(callbacks, "save_weights", fail)
    val_fn = lambda m: {"w": float(m.head.weight.norm())}  # noqa: E731
    t = trainer(tmp_path, val_fn=val_fn, early_stopping=True, monitor="val_w", mode="min")
    with pytest.raises(CheckpointError, match="could not write the best weights best-0001"):
        t.fit()
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".best")]


class FillDisk(Callback):
    """After the first checkpoint, fill the file system but for ``leave`` bytes."""

    def __init__(self, leave: int) -> None:
        self.leave, self.done = leave, False

    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if self.done:
            return
        self.done = True
        st = os.statvfs(trainer.run_dir)
        free = st.f_bavail * st.f_frsize - self.leave
        with open(trainer.run_dir / "filler", "wb") as fh:
            fh.write(b"\x00" * max(free, 0))


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"),
    reason="mounting a tmpfs needs root on Linux",
)
def test_a_real_full_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        with pytest.raises(CheckpointError, match="no space left on the device") as info:
            trainer(mnt / "run", (FillDisk(leave=2048),), log_every_steps=100).fit()
        assert "previous checkpoint ckpt-00000002-step is intact" in info.value.what
        (mnt / "run" / "filler").unlink()
        assert_previous_intact(mnt / "run", 2)
        assert trainer(mnt / "run").fit(resume=True).global_step == 12
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
