"""Launch the CLI under 2 CPU processes and compare run directories.

Launches go through :mod:`tests.ddp.driver` (the real ``transferkit.cli.main`` plus a write
audit); ``torchrun`` and ``accelerate launch`` both start it. Comparisons read what a run
directory holds: each stage's test outputs and metrics (``stages/*.json``) and the kept
final weights (``checkpoints/<stage>/model.safetensors``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

DRIVER = Path(__file__).with_name("driver.py")
ROOT = DRIVER.parents[2]
#: Largest |difference| accepted between a 1-process and a 2-process run (test outputs
#: and final weights). Measured: at most 3.0e-7 (float32 rounding: gloo sums the two
#: half-batch gradients, one process sums the whole batch in another order).
TOL = 1e-5
#: metrics (accuracy, F1, R²...) of the two runs agree to within this
METRIC_TOL = 1e-6


def _env(audit_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TK_", "ACCELERATE_"))}
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""),
        TK_AUDIT_ROOT=str(audit_root),
        **extra,
    )
    return env


def _driver_args(marks: Path, groups: list[list[str]]) -> list[str]:
    args = [str(DRIVER), str(marks)]
    for g in groups:
        args += ["--", *g]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Launch:
    """A running (then finished) 2-process launch of the driver."""

    proc: subprocess.Popen[str]
    marks: Path
    log: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def writes(self, rank: int) -> list[list[str]]:
        """The write events the audit saw on ``rank`` (see ``driver.py``)."""
        return json.loads((self.marks / f"writes-rank{rank}.json").read_text())


def _start(cmd: list[str], marks: Path, env: dict[str, str]) -> Launch:
    marks.mkdir(parents=True, exist_ok=True)
    log = marks / "output.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    return Launch(proc, marks, log)  # type: ignore[arg-type]


def torchrun(marks: Path, groups: list[list[str]], audit_root: Path, **env: str) -> Launch:
    """``torchrun --standalone --nproc_per_node 2 driver.py ...`` (gloo on the CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return _start(cmd + _driver_args(marks, groups), marks, _env(audit_root, **env))


def accelerate_launch(marks: Path, groups: list[list[str]], audit_root: Path) -> Launch:
    """``accelerate launch --multi_gpu --num_processes 2 driver.py ...``.

    ``--multi_gpu`` selects Accelerate's torch-elastic launcher; on a machine without GPUs
    transferkit then joins the processes over gloo (``engine.accel.process_state``).
    (``--cpu --num_processes N`` would start one process unless mpirun is configured.)
    """
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
    ]  # fmt: skip
    return _start(cmd + _driver_args(marks, groups), marks, _env(audit_root))


# ----------------------------------------------------------------- run directories
def stage_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((run_dir / "stages").glob("*.json"))}


def stage_outputs(rec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Test outputs of a stage record (per task for a multi-task record)."""
    if rec["outputs"]:
        return {"": np.asarray(rec["outputs"], dtype=np.float64)}
    tasks = rec["extra"]["tasks"]
    return {t: np.asarray(r["outputs"], dtype=np.float64) for t, r in tasks.items()}


def final_weights(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``{stage folder: state dict}`` of the weights a finished run keeps."""
    return {
        p.parent.name: load_file(str(p))
        for p in sorted((run_dir / "checkpoints").glob("*/model.safetensors"))
    }


def max_differences(a: Path, b: Path) -> dict[str, float]:
    """Largest |a - b| over test outputs, metrics and final weights of two run dirs."""
    ra, rb = stage_records(a), stage_records(b)
    assert ra.keys() == rb.keys(), (sorted(ra), sorted(rb))
    out = metric = weight = 0.0
    for name, rec in ra.items():
        oa, ob = stage_outputs(rec), stage_outputs(rb[name])
        assert oa.keys() == ob.keys()
        out = max(out, *(float(np.max(np.abs(oa[k] - ob[k]))) for k in oa))
        metric = max(metric, *(abs(v - rb[name]["metrics"][k]) for k, v in rec["metrics"].items()))
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys(), (sorted(wa), sorted(wb))
    for stage, sd in wa.items():
        assert sd.keys() == wb[stage].keys()
        weight = max(weight, *(float((v - wb[stage][k]).abs().max()) for k, v in sd.items()))
    return {"outputs": out, "metrics": metric, "weights": weight}


def relative_files(run_dir: Path, *, unhash: bool = False) -> list[str]:
    """Every file under ``run_dir`` (relative paths), hidden temporaries included.

    ``unhash``: content hashes in cache file names (``cache/teacher-<hex>``) become
    ``<hash>``; they name the weights, which differ in the last float bits between runs.
    """
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    return sorted(re.sub(r"-[0-9a-f]{16,}\.", "-<hash>.", f) for f in files) if unhash else files
