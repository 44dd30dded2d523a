"""A run killed with SIGKILL mid-epoch and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("resume_script.py")


def run(run_dir: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(run_dir), str(out), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path: Path) -> None:
    victim = run(tmp_path / "run", tmp_path / "run.safetensors", "--sleep", "0.05")
    latest = tmp_path / "run" / "checkpoints" / "latest"
    deadline = time.monotonic() + 90
    while not latest.exists():
        assert victim.poll() is None, victim.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    time.sleep(0.12)  # about two optimizer steps past the first checkpoint (step 3 of 8)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "run.safetensors").exists()

    name = latest.read_text().strip()
    state = torch.load(latest.parent / name / "trainer_state.pt", weights_only=True)
    assert state["step_in_epoch"] > 0 and not state["finished"]  # killed mid-epoch

    # resume, then (same interpreter) an uninterrupted reference run from scratch
    finish(
        run(
            tmp_path / "run",
            tmp_path / "run.safetensors",
            "--resume",
            "--reference",
            str(tmp_path / "ref"),
            str(tmp_path / "ref.safetensors"),
        )
    )
    a, b = load_file(tmp_path / "ref.safetensors"), load_file(tmp_path / "run.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    def rows(d: Path) -> list[dict[str, object]]:
        lines = (d / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]

    assert rows(tmp_path / "ref") == rows(tmp_path / "run")
