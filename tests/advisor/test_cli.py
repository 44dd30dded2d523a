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


def test_backbone_options_reach_a_file_checkpoint_without_spec(
    app: typer.Typer, toy: Toy, tmp_path: Path
) -> None:
    """A bare safetensors state dict needs -O backbone_spec=... (and the architecture's
    options); they are used to build the model and the controls and written into configs."""
    from safetensors.torch import save_file

    from transferkit.backbones import create_backbone

    spec_less = tmp_path / "bare.safetensors"
    bb = create_backbone(toy.good)
    save_file({k: v.contiguous() for k, v in bb.state_dict().items()}, str(spec_less))
    args = ["advise", "-m", f"file:{spec_less}", "-t", str(toy.small_target), "-q"]
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "a")])
    assert res.exit_code != 0 and "backbone_spec" in str(res.exception or res.output)
    opts = ["-O", "backbone_spec=tk:mlp", "-O", "in_features=8", "-O", "hidden=[16, 16]"]
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "b"), "--controls", "2", *opts])
    assert res.exit_code == 0, res.output
    advice = json.loads((tmp_path / "b" / "advice.json").read_text())
    assert advice["transferability"]["pretrained"] > advice["transferability"]["random_init"]
    cfg = (tmp_path / "b" / "recommended.yaml").read_text()
    assert "backbone_spec: tk:mlp" in cfg and "hidden:" in cfg


@pytest.mark.parametrize("bad", ["input_size", "=3", "a.b=1"])
def test_backbone_option_must_be_flat_key_value(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        advisor_cli.backbone_options([bad])
    assert info.value.where == "--backbone-option" and "-O" in (info.value.fix or "")
    assert advisor_cli.backbone_options(["input_size=16", "hidden=[8, 4]"]) == {
        "input_size": 16,
        "hidden": [8, 4],
    }
    assert advisor_cli.backbone_options([]) is None
