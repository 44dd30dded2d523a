"""The score / advise command functions: called directly and through a local typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.advisor.conftest import Toy
from transferkit.advisor import cli as advisor_cli
from transferkit.advisor.cli import advise_command, parse_seeds, score_command
from transferkit.errors import ConfigError


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(advisor_cli.console, "width", 200)  # no folding of table cells
    a = typer.Typer()
    a.command("score")(score_command)
    a.command("advise")(advise_command)
    return a


def test_score_command_through_typer(app: typer.Typer, toy: Toy, tmp_path: Path) -> None:
    out = tmp_path / "score"
    models = f"{toy.good},random:tk:mlp"
    res = CliRunner().invoke(
        app,
        [
            "score",
            "--models",
            models,
            "--data",
            str(toy.target),
            "--out",
            str(out),
            "--layers",
            "--max-examples",
            "150",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "transferability on" in res.output and "(control)" in res.output
    assert "leep skipped" in res.output  # one aggregated note, not one per model
    assert res.output.count("leep skipped") == 1
    doc = json.loads((out / "scores.json").read_text())
    assert [r["model"] for r in doc["rows"]] == [toy.good, "random:tk:mlp"]
    assert doc["layers"] is True and doc["max_examples"] == 150
    assert (out / "scores.png").is_file()


def test_modality_mismatch_is_a_config_error(app: typer.Typer, toy: Toy, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["score", "--models", "tk:smallcnn", "--data", str(toy.target), "--out", str(tmp_path)]
    )
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)  # main() -> exit 2
    with pytest.raises(ConfigError, match="no models"):
        score_command(models=" , ", data=str(toy.target), out=tmp_path)


def test_advise_command_direct_call_and_run(
    app: typer.Typer, toy: Toy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adv"
    advise_command(
        model=toy.good,
        target=str(toy.small_target),
        out=out,
        epochs=1,
        seeds="0,1",
        controls=2,
        quiet=True,
    )
    text = capsys.readouterr().out
    assert "recommended:" in text and "runner-up:" in text and "LogME" in text
    assert (out / "advice.json").is_file() and not (out / "advice_check.json").exists()
    res = CliRunner().invoke(
        app,
        [
            "advise",
            "--model",
            toy.good,
            "--target",
            str(toy.small_target),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--seeds",
            "0,1",
            "--controls",
            "2",
            "--run",
            "-q",
            "--set",
            "baselines.classical=false",
            "--set",
            "report=false",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "check on accuracy" in res.output and "advice" in res.output
    check = json.loads((out / "advice_check.json").read_text())
    assert check["overrides"] == ["baselines.classical=false", "report=false"]
    assert ("RIGHT" in res.output) == check["advice_right"]
    advise_command(model=toy.good, target=str(toy.small_target), out=out, controls=1, quiet=True)
    assert not (out / "advice_check.json").exists()  # a new advice drops the stale check


def test_parse_seeds() -> None:
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "a,b", "1,1"):
        with pytest.raises(ConfigError, match="seeds"):
            parse_seeds(bad)


def test_main_entry_point_exits_2_on_modality_mismatch(
    toy: Toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through transferkit.cli.main (commands added here unless the app already has them)."""
    from transferkit import cli

    names = {c.name for c in cli.app.registered_commands}
    extra = [
        typer.models.CommandInfo(name=n, callback=f)
        for n, f in (("score", score_command), ("advise", advise_command))
        if n not in names
    ]
    monkeypatch.setattr(cli.app, "registered_commands", [*cli.app.registered_commands, *extra])
    args = [
        "score",
        "--models",
        "packaged:minilm-l6",
        "--data",
        str(toy.target),
        "-o",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert "'packaged:minilm-l6' reads text inputs" in err and "tabular" in err
