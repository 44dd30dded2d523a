"""Reading run directories: missing and damaged files become notes, logs become curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.report.fakes import make_run
from transferkit.errors import CheckpointError
from transferkit.report.load import DEFAULT_RUN, build_curves, load_run


def test_full_run_loads_everything(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "full"))
    assert run.notes == []
    assert run.metrics is not None and run.metrics["method"] == "finetune"
    assert run.config_text is not None and "sentiment/tweets" in run.config_text
    assert set(run.curves) == {"target-seed0", "target-seed1", "random_init-seed0"}
    c = run.curves["target-seed0"]
    assert len(c.train_loss) == 80 and [x for x, _ in c.val["val_accuracy"]] == [1, 2, 3, 4]


def test_corrupt_log_lines_are_skipped_with_a_note(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "corrupt_log"))
    assert len(run.notes) == 1
    assert "2 line(s) of log.jsonl" in run.notes[0] and "line 6," in run.notes[0]
    assert len(run.curves["target-seed0"].train_loss) == 80  # every good line kept


def test_missing_files_are_listed(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, "minimal"))
    assert run.notes == ["config.yaml is missing.", "log.jsonl is missing."]
    assert run.curves == {}


@pytest.mark.parametrize(
    ("content", "expected"),
    [('{"method": "x", ', "not valid JSON (line 1"), ("[1, 2]", "a JSON list, not an object")],
)
def test_unreadable_metrics_become_a_note(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "metrics.json").write_text(content)
    run = load_run(tmp_path)
    assert run.metrics is None
    assert any(expected in n for n in run.notes)


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_run(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a transferkit run directory") as exc:
        load_run(tmp_path)
    assert exc.value.fix and exc.value.where == str(tmp_path)


def test_build_curves_groups_by_run_and_kind() -> None:
    records = [
        {"step": 1, "loss": 0.9},
        {"step": 2, "loss": 0.8, "run": "a"},
        {"loss": 0.7, "run": "a"},  # no step: its position (2) is used
        {"epoch": 1, "step": 2, "val_accuracy": 0.6, "train_loss": 0.85, "run": "a"},
        {"step": 3, "val_r2": 0.1, "run": "b"},  # no epoch: the step is the x value
        {"step": 4, "loss": float("nan")},  # non-finite values are not plotted
        {"step": 5, "loss": "high"},
        {"step": 6, "val_accuracy": True},  # booleans are not numbers
    ]
    curves = build_curves(records)
    assert set(curves) == {DEFAULT_RUN, "a", "b"}
    assert curves[DEFAULT_RUN].train_loss == [(1.0, 0.9)]
    assert curves["a"].train_loss == [(2.0, 0.8), (2.0, 0.7)]
    assert curves["a"].val == {"val_accuracy": [(1.0, 0.6)]}
    assert curves["b"].val == {"val_r2": [(3.0, 0.1)]} and curves["b"].train_loss == []


def test_log_with_no_plottable_records_is_noted(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_text(json.dumps({"event": "start"}) + "\n")
    run = load_run(tmp_path)
    assert any("no loss or validation records" in n for n in run.notes)
