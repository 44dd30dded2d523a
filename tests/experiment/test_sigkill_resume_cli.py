"""`transferkit run` killed with SIGKILL mid-epoch, then `transferkit resume DIR`: the final
weights are bit-identical to an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

CFG = {
    "name": "kill",
    "data": {"target": "digits", "max_examples": 500, "max_eval_examples": 60},
    "model": {"backbone": "tk:smallcnn", "backbone_options": {"width": 16, "depth": 3}},
    "method": {"name": "finetune", "params": {"backbone_lr_mult": 1.0}},
    "train": {
        "epochs": 2,
        "batch_size": 16,
        "lr": 0.01,
        "mixed_precision": "no",
        "checkpoint_every_steps": 4,
        "early_stopping": {"enabled": False},
    },
    "baselines": {"enabled": False},
    "seeds": [0],
    "report": False,
}
CLI = [sys.executable, "-m", "transferkit.cli"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "target-seed0" / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    env = dict(os.environ)
    ref = tmp_path / "ref"
    subprocess.run([*CLI, "run", str(cfg), "--out", str(ref), "-q"], check=True, env=env)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, "run", str(cfg), "--out", str(killed), "-q"], env=env)
    latest = killed / "checkpoints" / "target-seed0" / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and "step" in latest.read_text():
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()

    subprocess.run([*CLI, "resume", str(killed), "-q"], check=True, env=env)
    a, b = _weights(ref), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
