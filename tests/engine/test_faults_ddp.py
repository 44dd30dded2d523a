"""Two processes agree on a non-finite loss: both roll back (or stop) together.

The poisoned example reaches one process only, so only that process sees a NaN loss;
without agreement it would roll back alone and the other would wait forever in the next
collective. Run as a test, this file launches itself under ``torchrun`` (2 CPU processes,
gloo); each rank writes its weights and rollback records, which must be identical.

    torchrun --standalone --nproc_per_node 2 tests/engine/test_faults_ddp.py OUT
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.engine.test_faults_rollback import dataset, mlp
from tests.engine.tiny import collate
from transferkit.engine import TrainConfig, Trainer


def worker(out: Path) -> None:
    torch.set_num_threads(1)
    cfg = TrainConfig(
        mixed_precision="no",
        cpu=True,
        lr=0.05,
        batch_size=4,  # the global batch: 2 examples per process, 8 steps per epoch
        epochs=2,
        seed=7,
        checkpoint_every_steps=3,  # the poisoned steps (4, 7) are no checkpoint steps
        log_every_steps=1,  # the poisoned process sees its NaN loss one step before the other
        on_nonfinite="rollback",
    )
    method = mlp(dropout=0.3)
    trainer = Trainer(method, dataset(nan=True), collate, cfg, out / "run", quiet=True)
    result = trainer.fit()
    rank = trainer.accelerator.process_index
    torch.save(
        {"state": method.state_dict(), "rollbacks": result.rollbacks, "steps": result.global_step},
        out / f"rank{rank}.pt",
    )


@pytest.mark.slow
def test_two_processes_roll_back_together(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = f"{root / 'src'}{os.pathsep}{root}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert len(a["rollbacks"]) == 2  # the poisoned example comes back once per epoch
    assert a["rollbacks"] == b["rollbacks"] and a["steps"] == b["steps"]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert all(torch.isfinite(v).all() for v in a["state"].values())


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
