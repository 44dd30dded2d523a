"""Resume across process counts: a run interrupted after its step-4 checkpoint under 2
processes is finished by 1 process, and vice versa (``accelerate launch``).

Both must end where the uninterrupted runs end (the target stage of the ``finetune``
case, which trains the same model on the same batches) within ``harness.TOL``. Global
batches make this possible: the step count, the schedule and the data order of a run do
not depend on its process count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ddp import harness
from tests.ddp.conftest import DIE_AT, DdpRuns

pytestmark = pytest.mark.slow


def _assert_same_target(resumed: Path, runs: DdpRuns) -> None:
    rec = harness.stage_records(resumed)["target__seed0"]
    weights = harness.final_weights(resumed)["target-seed0"]
    for ref_dir in (runs.one("finetune"), runs.two("finetune")):
        ref = harness.stage_records(ref_dir)["target__seed0"]
        got, want = harness.stage_outputs(rec)[""], harness.stage_outputs(ref)[""]
        assert float(abs(got - want).max()) <= harness.TOL, ref_dir
        assert rec["metrics"] == pytest.approx(ref["metrics"], abs=harness.METRIC_TOL)
        ref_w = harness.final_weights(ref_dir)["target-seed0"]
        for k, v in weights.items():
            assert float((v - ref_w[k]).abs().max()) <= harness.TOL, (ref_dir, k)


def test_two_process_checkpoint_resumed_by_one_process(ddp_runs: DdpRuns) -> None:
    marks = ddp_runs.torchrun.marks
    assert (marks / "died").read_text().strip() == str(DIE_AT), ddp_runs.torchrun.tail()
    run_dir = ddp_runs.two("interrupted")
    err = ddp_runs.resumed_with_one
    assert err is None, repr(err)
    assert json.loads((run_dir / "metrics.json").read_text())["target"]
    _assert_same_target(run_dir, ddp_runs)


def test_one_process_checkpoint_resumed_by_two_processes_with_accelerate_launch(
    ddp_runs: DdpRuns,
) -> None:
    acc = ddp_runs.accelerate
    assert ddp_runs.accelerate_rc == 0, acc.tail()
    assert (acc.marks / "done-0").read_text().strip() == "0"
    assert acc.writes(1) == []  # rank 1 wrote nothing into the run directory
    run_dir = ddp_runs.one("interrupted")
    assert (run_dir / "metrics.json").is_file()
    _assert_same_target(run_dir, ddp_runs)


@pytest.mark.parametrize("where", ["one", "two"])
def test_the_interruptions_left_a_step_checkpoint_and_no_results(
    ddp_runs: DdpRuns, where: str
) -> None:
    """What each resume started from: the step-4 checkpoint (weights, trainer state,
    manifest), the stage's own log, and no stage record, metrics or report."""
    files = ddp_runs.interrupted[where]
    ckpt = f"checkpoints/target-seed0/checkpoints/ckpt-{DIE_AT:08d}-step"
    expected = {f"{ckpt}/model.safetensors", f"{ckpt}/trainer_state.pt", f"{ckpt}/manifest.json"}
    assert expected <= set(files), files
    assert "checkpoints/target-seed0/checkpoints/latest" in files
    assert not [f for f in files if f.startswith("stages/") or f == "metrics.json"]
    assert not [f for f in files if "/ckpt-" in f and ckpt not in f]  # one checkpoint kept
