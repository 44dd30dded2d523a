"""A whole experiment on real data with a tiny CNN: run directory contract, verdict, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from transferkit.errors import CheckpointError
from transferkit.experiment import run
from transferkit.experiment.rundir import stage_path

CFG = {
    "name": "tiny",
    "data": {"target": "digits", "label_budget": 10, "max_eval_examples": 200},
    "model": {"backbone": "tk:smallcnn", "backbone_options": {"width": 8, "depth": 2}},
    "method": {"name": "finetune", "params": {"backbone_lr_mult": 1.0}},
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.01,
        "mixed_precision": "no",
        "log_every_steps": 2,
    },
    "seeds": [0, 1],
    "bootstrap_samples": 200,
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run(CFG, out=out, quiet=True)
    return out


def test_run_directory_contract(finished: Path) -> None:
    for name in ("config.yaml", "metrics.json", "log.jsonl", "report.html"):
        assert (finished / name).is_file(), name
    assert (finished / "checkpoints").is_dir()
    m = json.loads((finished / "metrics.json").read_text())
    assert m["method"] == "finetune" and m["primary_metric"] == "accuracy"
    assert set(m["baselines"]) == {"random_init", "pixel_logreg"}
    assert m["best_baseline"] in m["baselines"]
    tg = m["transfer_gain"]
    assert tg["verdict"] in {"positive", "negative", "inconclusive"}
    lo, hi = tg["ci95"]
    assert lo <= tg["delta"] <= hi
    assert m["seeds"] == [0, 1] and len(m["target_per_seed"]) == 2
    assert 0.0 <= m["target"]["accuracy"] <= 1.0
    assert len(m["details"]["confusion_matrix"]) == 10
    resolved = yaml.safe_load((finished / "config.yaml").read_text())
    assert resolved["train"]["optimizer"] == "adamw"  # defaults filled in
    lines = [json.loads(x) for x in (finished / "log.jsonl").read_text().splitlines()]
    assert any("loss" in x for x in lines) and all("run" in x for x in lines)


def test_existing_run_is_never_overwritten(finished: Path) -> None:
    before = (finished / "metrics.json").read_bytes()
    with pytest.raises(CheckpointError, match="--overwrite"):
        run(CFG, out=finished, quiet=True)
    assert (finished / "metrics.json").read_bytes() == before


def test_resume_reuses_finished_stages(finished: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    stage_path(copy, "classical/seed1").unlink()
    stage_path(copy, "target/seed1").unlink()
    from transferkit.experiment import resume

    res = resume(copy, quiet=True)
    old = json.loads((finished / "metrics.json").read_text())
    assert res.metrics["baselines"]["pixel_logreg"] == old["baselines"]["pixel_logreg"]
    assert res.metrics["target"]["accuracy"] == pytest.approx(old["target"]["accuracy"])


def test_forgetting_reports_representation_drift(finished: Path) -> None:
    m = json.loads((finished / "metrics.json").read_text())
    drift = m["forgetting"]["representation_drift"]
    assert drift["kind"] == "representation_drift" and drift["n_examples"] > 0
    values = list(drift["per_group"].values())
    assert len(values) >= 2 and all(0.0 <= v <= 1.0 + 1e-9 for v in values)
    assert min(values) < 0.999  # fine-tuning moved the representation


def test_lora_run_reports_parameter_counts(tmp_path: Path) -> None:
    doc = {
        **CFG,
        "method": {
            "name": "finetune",
            "params": {"backbone_lr_mult": 1.0, "peft": {"kind": "lora", "r": 2}},
        },
        "seeds": [0],
        "baselines": {"enabled": False},
        "report": False,
    }
    res = run(doc, out=tmp_path / "lora", quiet=True)
    sel = res.metrics["selection"][0]
    assert 0 < sel["peft"]["trainable"] < sel["peft"]["total"]
    assert sel["trainable_params_at_start"] < sel["total_params"]


def test_resume_with_a_changed_config_is_refused_before_anything_is_written(
    finished: Path,
) -> None:
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    changed = {**CFG, "train": {**CFG["train"], "lr": 0.02}}
    with pytest.raises(CheckpointError, match=r"train\.lr: 0\.01 -> 0\.02") as err:
        run(changed, out=finished, resume=True, quiet=True)
    assert "transferkit resume" in err.value.fix
    after = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    assert after == before  # nothing overwritten, not even config.yaml


def test_resume_accepts_settings_added_after_the_run_started(
    finished: Path, tmp_path: Path
) -> None:
    """A run directory written before a setting existed still resumes (the setting takes its
    default, with a warning); a changed value next to it is still refused."""
    import shutil

    from transferkit.experiment import resume

    old = tmp_path / "old"
    shutil.copytree(finished, old)
    doc = yaml.safe_load((old / "config.yaml").read_text())
    del doc["train"]["on_nonfinite"], doc["adaptation"]["collapse_guard"]
    (old / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.warns(UserWarning, match=r"train\.on_nonfinite = 'stop'"):
        res = resume(old, quiet=True)
    assert res.metrics["target"] == json.loads((finished / "metrics.json").read_text())["target"]
    changed = {**CFG, "train": {**CFG["train"], "lr": 0.02}}
    with (
        pytest.warns(UserWarning, match="before these settings existed"),
        pytest.raises(CheckpointError, match=r"train\.lr: 0\.01 -> 0\.02"),
    ):
        run(changed, out=old, resume=True, quiet=True)


def test_config_changes_and_additions() -> None:
    from transferkit.experiment.rundir import config_additions, config_changes

    old = "train:\n  lr: 0.1\nmethod:\n  params: {}\n"
    new = "train:\n  lr: 0.1\n  guard: 0.5\nmethod:\n  params:\n    x: 1\n"
    assert config_additions(old, new) == ["train.guard = 0.5"]
    # params was an empty mapping and now holds x: a change of an existing key
    assert config_changes(old, new) == ["method.params: {} -> None", "method.params.x: None -> 1"]
