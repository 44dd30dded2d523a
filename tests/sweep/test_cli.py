"""``transferkit sweep`` through a typer app: a shared SQLite study across invocations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tests.sweep.conftest import tiny_config
from transferkit.errors import ConfigError
from transferkit.sweep.cli import sweep_command

SPACE = {"train.lr": {"type": "float", "low": 0.003, "high": 0.1, "log": True}}


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("sweep")(sweep_command)
    app.command("noop")(lambda: None)  # two commands: typer keeps "sweep" as a subcommand
    return app


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(_app(), ["sweep", *args], catch_exceptions=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, domains: tuple[Path, Path]) -> Path:
    d = tmp_path_factory.mktemp("sweep-cli")
    (d / "exp.yaml").write_text(yaml.safe_dump(tiny_config(domains[1])))
    (d / "space.yaml").write_text(yaml.safe_dump(SPACE))
    return d


@pytest.fixture(scope="module")
def shared(files: Path) -> dict[str, Any]:
    """Three invocations against one SQLite file: 2 trials, then up to 3, then up to 3."""
    db = f"sqlite:///{files / 'study.db'}"
    common = ["--space", str(files / "space.yaml"), "--storage", db, "--quiet"]
    first = _invoke([str(files / "exp.yaml"), *common, "--trials", "2", "--out", str(files / "a")])
    stamps = {p: p.stat().st_mtime_ns for p in (files / "a").rglob("metrics.json")}
    second = _invoke([str(files / "exp.yaml"), *common, "--trials", "3", "--out", str(files / "b")])
    third = _invoke([str(files / "exp.yaml"), *common, "--trials", "3", "--out", str(files / "c")])
    return {"runs": (first, second, third), "stamps": stamps, "db": db}


def test_each_invocation_succeeds_and_prints_the_best_trial(shared: dict[str, Any]) -> None:
    for res in shared["runs"]:
        assert res.exit_code == 0, res.output + repr(res.exception)
    first, _, third = shared["runs"]
    assert "best: trial" in first.output and "--set train.lr=" in first.output
    assert "already holds 3 finished trials" in third.output


def test_invocations_accumulate_trials_in_one_study(files: Path, shared: dict[str, Any]) -> None:
    assert sorted(p.name for p in (files / "a").glob("trial-*")) == ["trial-0000", "trial-0001"]
    assert sorted(p.name for p in (files / "b").glob("trial-*")) == ["trial-0002"]
    assert not list((files / "c").glob("trial-*"))  # the study was already complete
    summary = json.loads((files / "b" / "sweep.json").read_text())
    assert summary["storage"] == shared["db"] and summary["study_name"] == "tiny-sweep"
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2]
    assert {t["state"] for t in summary["trials"]} == {"complete"}
    assert summary["counts"] == {"complete": 3} and summary["target_trials"] == 3
    assert [Path(t["run_dir"]).parent.name for t in summary["trials"]] == ["a", "a", "b"]


def test_finished_trials_are_never_redone(shared: dict[str, Any]) -> None:
    stamps = shared["stamps"]
    assert len(stamps) == 2
    assert all(p.stat().st_mtime_ns == ns for p, ns in stamps.items())


def test_summary_best_is_the_best_validation_value(files: Path) -> None:
    summary = json.loads((files / "c" / "sweep.json").read_text())
    values = {t["number"]: t["value"] for t in summary["trials"]}
    best = summary["best"]
    assert best["value"] == max(values.values()) and values[best["number"]] == best["value"]
    assert best["overrides"] == [f"train.lr={best['params']['train.lr']!r}"]
    trial = summary["trials"][best["number"]]
    assert trial["validation_curve"] and max(trial["validation_curve"].values()) == best["value"]
    assert summary["objective"]["key"] is None and summary["objective"]["direction"] == "maximize"
    assert summary["fixed_overrides"] == ["baselines.enabled=false"]
    run = Path(best["run_dir"])
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["lr"] == best["params"]["train.lr"]  # a normal run directory
    assert resolved["baselines"]["enabled"] is False
    assert json.loads((run / "metrics.json").read_text())["baselines"] == {}


def test_a_bad_space_key_fails_before_any_trial(files: Path) -> None:
    bad = files / "bad.yaml"
    bad.write_text("train.lrate: {type: float, low: 0.001, high: 0.1}\n")
    res = _invoke([str(files / "exp.yaml"), "--space", str(bad), "--out", str(files / "bad")])
    assert isinstance(res.exception, ConfigError)
    assert "train.lrate" in res.exception.what and res.exception.where == f"{bad}, key train.lrate"
    assert "did you mean 'train.lr'" in (res.exception.fix or "")
    assert not list((files / "bad").glob("trial-*"))


def test_a_different_space_cannot_reuse_the_study(files: Path, shared: dict[str, Any]) -> None:
    other = files / "other.yaml"
    other.write_text("train.lr: {type: float, low: 0.01, high: 0.1}\n")
    args = ["--space", str(other), "--storage", shared["db"], "--out", str(files / "d")]
    res = _invoke([str(files / "exp.yaml"), *args, "--trials", "4"])
    assert isinstance(res.exception, ConfigError)
    assert "another space" in res.exception.what and "--study-name" in (res.exception.fix or "")


def test_help_lists_the_options() -> None:
    res = CliRunner().invoke(_app(), ["sweep", "--help"])
    for option in ("--space", "--trials", "--storage", "--out", "--prune", "--set", "--baselines"):
        assert option in res.output
