"""One session of 2-process launches shared by the DDP tests (they are costly to start).

``ddp_runs`` builds, once per test session:

* ``one/<case>``: every config run in this process (1 process, the reference);
* ``two/<case>``: the same configs under ``torchrun --nproc_per_node 2`` (one launch), then
  two runs that must fail on both processes (an existing run directory; a global batch
  that 2 processes cannot split), then ``two/interrupted``: the ``resume`` config killed
  (``os._exit``) right after its step-4 checkpoint;
* ``one/interrupted``: the ``resume`` config interrupted in this process after its step-4
  checkpoint, then resumed by ``accelerate launch`` with 2 processes (``acc``);
* the resume of ``two/interrupted`` in this process (1 process), or the error it raised.

The launches run in the background while the 1-process references train.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ddp import harness
from tests.ddp.configs import EXACT, write_configs

DIE_AT = 4  # optimizer step after whose checkpoint the interrupted runs stop
LAUNCH_TIMEOUT_S = 900


class Interrupted(Exception):
    """Raised in this process to stop a training right after a step checkpoint."""


@contextmanager
def interrupt_after_step(where: str, step: int) -> Iterator[None]:
    """Make a training whose directory contains ``where`` stop after step ``step``'s
    checkpoint (the in-process twin of the driver's ``TK_DIE_IN``)."""
    from transferkit.engine.trainer import Trainer

    original = Trainer._save

    def save_then_stop(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        tag = args[0] if args else kwargs.get("tag")
        if tag == "step" and where in str(self.run_dir) and self.global_step >= step:
            raise Interrupted(self.global_step)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_save", save_then_stop)
        yield


@dataclass
class DdpRuns:
    root: Path
    configs: dict[str, Path]
    torchrun: harness.Launch
    torchrun_rc: int
    accelerate: harness.Launch
    accelerate_rc: int
    resumed_with_one: BaseException | None  # the error of resuming two/interrupted
    interrupted: dict[str, list[str]]  # files of each interrupted run before its resume

    def one(self, case: str) -> Path:
        return self.root / "one" / case

    def two(self, case: str) -> Path:
        return self.root / "two" / case


def _torchrun_groups(runs: Path, configs: dict[str, Path], families: list[str]) -> list[list[str]]:
    groups = [["run", str(configs[c]), "--out", str(runs / c), "-q"] for c in families]
    groups.append(["!", "run", str(configs["finetune"]), "--out", str(runs / "finetune"), "-q"])
    groups.append(["!", "run", str(configs["odd_batch"]), "--out", str(runs / "odd"), "-q"])
    groups.append(["run", str(configs["resume"]), "--out", str(runs / "interrupted"), "-q"])
    return groups


@pytest.fixture(scope="session")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> DdpRuns:
    from transferkit.experiment import resume, run

    root = tmp_path_factory.mktemp("ddp")
    configs = write_configs(root)
    families = [c for c in configs if c not in ("resume", "odd_batch")]
    assert set(EXACT) < set(families)
    one, two = root / "one", root / "two"
    with interrupt_after_step(str(one / "interrupted"), DIE_AT), pytest.raises(Interrupted):
        run(configs["resume"], out=one / "interrupted", quiet=True)
    interrupted = {"one": harness.relative_files(one / "interrupted")}
    tr = harness.torchrun(
        root / "marks-torchrun",
        _torchrun_groups(two, configs, families),
        two,
        TK_DIE_IN=str(two / "interrupted"),
        TK_DIE_AT=str(DIE_AT),
    )
    acc = harness.accelerate_launch(
        root / "marks-accelerate", [["resume", str(one / "interrupted"), "-q"]], one / "interrupted"
    )
    try:
        for case in families:
            run(configs[case], out=one / case, quiet=True)
    finally:
        tr_rc, acc_rc = tr.wait(LAUNCH_TIMEOUT_S), acc.wait(LAUNCH_TIMEOUT_S)
    error: BaseException | None = None
    interrupted["two"] = harness.relative_files(two / "interrupted")
    if (tr.marks / "died").is_file():
        try:
            resume(two / "interrupted", quiet=True)
        except Exception as exc:  # judged by the resume test
            error = exc
    return DdpRuns(root, configs, tr, tr_rc, acc, acc_rc, error, interrupted)
