"""Gradient surgery under real data-parallel training: 2 CPU processes (gloo) via torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.mtl import ddp_script

SCRIPT = Path(ddp_script.__file__)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        str(tmp_path / "ddp"),
        "1",
        "8",
        "pcgrad",
        "mgda",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # params space: per-task gradients all-reduced before the surgery, so 2 processes x
    # batch 4 equal 1 process accumulating 2 x batch 4 (same windows of the same order)
    ddp_script.run(tmp_path / "acc", "pcgrad", accum=2, batch=4)
    # representation space: the summed Gram matrix gives the weights of the global batch
    ddp_script.run(tmp_path / "acc", "mgda", accum=1, batch=8)
    for name in ("pcgrad", "mgda"):
        a = torch.load(tmp_path / "ddp" / f"{name}.pt", weights_only=True)
        b = torch.load(tmp_path / "acc" / f"{name}.pt", weights_only=True)
        assert a["processes"] == 2 and b["processes"] == 1 and a["steps"] == b["steps"] == 8
        for k, v in a["state"].items():
            torch.testing.assert_close(v, b["state"][k], rtol=1e-5, atol=1e-5, msg=k)
