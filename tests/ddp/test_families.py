"""Every method family under 2 CPU processes (torchrun, gloo) vs the same config in 1 process.

The global batch is the same in both runs (``train.batch_size`` is split across
processes), so a 2-process run must reach the 1-process run's test outputs, metrics and
final weights up to float rounding (``harness.TOL``), and must write every file once,
from the main process only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ddp import harness
from tests.ddp.configs import EXACT
from tests.ddp.conftest import DdpRuns

pytestmark = pytest.mark.slow


def _launch_ok(runs: DdpRuns) -> None:
    marks = runs.torchrun.marks
    assert (marks / "died").is_file(), runs.torchrun.tail()
    assert runs.torchrun_rc != 0  # the last run was killed on purpose


@pytest.mark.parametrize("case", EXACT)
def test_two_processes_reach_the_one_process_result(ddp_runs: DdpRuns, case: str) -> None:
    _launch_ok(ddp_runs)
    diff = harness.max_differences(ddp_runs.one(case), ddp_runs.two(case))
    assert diff["outputs"] <= harness.TOL, diff
    assert diff["weights"] <= harness.TOL, diff
    assert diff["metrics"] <= harness.METRIC_TOL, diff
    a = json.loads((ddp_runs.one(case) / "metrics.json").read_text())
    b = json.loads((ddp_runs.two(case) / "metrics.json").read_text())
    assert a["target"].keys() == b["target"].keys()
    for k, v in a["target"].items():
        assert b["target"][k] == pytest.approx(v, abs=harness.METRIC_TOL), k
    assert (a["transfer_gain"] or {}).get("verdict") == (b["transfer_gain"] or {}).get("verdict")


def test_tasks_from_two_datasets_train_but_only_approximate_one_process(
    ddp_runs: DdpRuns,
) -> None:
    """A shard may lack a task: each process averages its task loss over its own labelled
    examples, so the run is close to, not equal to, the 1-process run (documented)."""
    _launch_ok(ddp_runs)
    a = json.loads((ddp_runs.one("mtl_groups") / "metrics.json").read_text())
    b = json.loads((ddp_runs.two("mtl_groups") / "metrics.json").read_text())
    assert abs(a["target"]["mean_task_score"] - b["target"]["mean_task_score"]) < 0.1


def test_the_teacher_and_the_adapted_model_are_the_same_as_in_one_process(
    ddp_runs: DdpRuns,
) -> None:
    """Extra modules: the distillation teacher's weights and the DANN discriminator
    (part of the kept target weights) match the 1-process run."""
    _launch_ok(ddp_runs)
    teacher_1 = harness.final_weights(ddp_runs.one("distill"))["teacher-seed0"]
    teacher_2 = harness.final_weights(ddp_runs.two("distill"))["teacher-seed0"]
    for k, v in teacher_1.items():
        assert float((v - teacher_2[k]).abs().max()) <= harness.TOL, k
    dann = harness.final_weights(ddp_runs.two("dann"))["target-seed0"]
    disc = [k for k in dann if "disc" in k]
    assert disc, sorted(dann)
    ref = harness.final_weights(ddp_runs.one("dann"))["target-seed0"]
    for k in disc:
        assert float((dann[k] - ref[k]).abs().max()) <= harness.TOL, k


def test_rank_one_writes_nothing_and_rank_zero_writes_each_result_once(
    ddp_runs: DdpRuns,
) -> None:
    _launch_ok(ddp_runs)
    assert ddp_runs.torchrun.writes(1) == []
    events = ddp_runs.torchrun.writes(0)
    for case in [*EXACT, "mtl_groups"]:
        run_dir = ddp_runs.two(case)
        replaced = [p for e, p in events if e == "os.rename" and Path(p).parent == run_dir]
        assert replaced.count(str(run_dir / "metrics.json")) == 1, case
        assert replaced.count(str(run_dir / "config.yaml")) == 1, case
        assert replaced.count(str(run_dir / "report.html")) == (case == "finetune"), case
    ckpt = ddp_runs.two("interrupted") / "checkpoints" / "target-seed0" / "checkpoints"
    assert any(str(ckpt) in p and "ckpt-" in p for e, p in events if e == "os.rename")


@pytest.mark.parametrize("case", [*EXACT, "mtl_groups"])
def test_run_directories_hold_the_same_files(ddp_runs: DdpRuns, case: str) -> None:
    """No duplicate, clobbered or left-over temporary file: the 2-process run directory
    holds exactly the files of the 1-process one."""
    _launch_ok(ddp_runs)
    files = harness.relative_files(ddp_runs.two(case), unhash=True)
    assert files == harness.relative_files(ddp_runs.one(case), unhash=True)
    assert not [f for f in files if ".tmp" in f]
    assert files.count("metrics.json") == 1


def test_user_errors_stop_every_process(ddp_runs: DdpRuns) -> None:
    """An existing run directory (refused by the main process) and a global batch of 7
    (refused by every trainer) end both processes with status 2 instead of a hang."""
    _launch_ok(ddp_runs)
    marks = ddp_runs.torchrun.marks
    n = len(EXACT) + 1  # the family runs come first
    assert (marks / f"done-{n}").read_text().strip() == "2"
    assert (marks / f"done-{n + 1}").read_text().strip() == "2"
    log = ddp_runs.torchrun.tail(200_000)
    assert log.count("already exists and is not empty") == 2
    assert log.count("batch_size 7 cannot be split evenly across 2 processes") == 2
    assert not (ddp_runs.two("odd") / "metrics.json").exists()
    # the refused run did not touch the existing directory it was pointed at
    assert harness.relative_files(ddp_runs.two("finetune")) == harness.relative_files(
        ddp_runs.one("finetune")
    )
