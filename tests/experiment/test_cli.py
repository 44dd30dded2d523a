"""CLI: clear errors with exit status 2 and no traceback; listing commands print tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from transferkit.cli import main


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out + cap.err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("data: {target: digits}\nmodel: {backbone: tk:smallcnn}\ntrain: {lr: -1}\n", "train.lr"),
        ("data: {target: digits}\nmodel: {backbone: tk:smallcnn}\ntrian: {}\n", "trian"),
        ("data: [\n", "not valid YAML"),
        ("", "empty"),
    ],
)
def test_bad_config_exit_2_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragment: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content)
    code, out = _cli(["run", str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and fragment in out and "Traceback" not in out


def test_missing_config_and_bad_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(["run", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "does not exist" in out
    code, out = _cli(["resume", str(tmp_path)], capsys)
    assert code == 2 and "not a transferkit run directory" in out
    code, out = _cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "metrics.json" in out


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _cli(["frobnicate"], capsys)
    assert code == 2


def test_methods_lists_registered(capsys: pytest.CaptureFixture[str]) -> None:
    main(["methods"])
    out = capsys.readouterr().out
    assert "linear_probe" in out and "finetune" in out


def test_debug_shows_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: [\n")
    proc = subprocess.run(
        [sys.executable, "-m", "transferkit.cli", "--debug", "run", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_probe_command_writes_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    main(
        [
            "probe",
            "--model",
            "tk:smallcnn",
            "--data",
            "digits",
            "--max-examples",
            "300",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert "recommended transfer layer" in out
    res = json.loads((tmp_path / "probe.json").read_text())
    assert len(res["val_metric"]) == len(res["groups"]) >= 2
    assert (tmp_path / "probe.png").stat().st_size > 1000


def test_text_data_with_image_backbone_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {target: digits}\nmodel: {backbone: packaged:minilm-l6}\nseeds: [0]\n")
    code, out = _cli(["run", str(cfg), "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 2 and "reads text inputs" in out and "backbone for image data" in out


def test_verdict_is_printed_by_the_main_process_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun every process runs the CLI; only rank 0 prints the verdict."""
    from transferkit import cli
    from transferkit.engine import accel

    metrics = {
        "method": "finetune",
        "dataset": {"name": "toy"},
        "primary_metric": "accuracy",
        "target": {"accuracy": 0.9},
        "transfer_gain": None,
    }
    cli.print_verdict(metrics, tmp_path)
    assert "finetune on toy: accuracy 0.9000" in capsys.readouterr().out
    monkeypatch.setattr(accel, "is_main_process", lambda: False)
    cli.print_verdict(metrics, tmp_path)
    assert capsys.readouterr().out == ""
