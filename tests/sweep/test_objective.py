"""What a trial is scored on: validation only, the kept checkpoint, label-free for DA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.sweep.conftest import tiny_config
from transferkit.errors import ConfigError, TrainingError
from transferkit.experiment.config import dump_config, load_config
from transferkit.sweep.objective import ObjectiveSpec, objective_spec, trial_value


def _spec(cfg: dict[str, Any]) -> ObjectiveSpec:
    return objective_spec(load_config(cfg))


def test_objective_follows_the_family_and_the_monitor(domains: tuple[Path, Path]) -> None:
    tgt = domains[1]
    assert _spec(tiny_config(tgt)) == ObjectiveSpec(None, "maximize", "fine-tuning")
    es = {"early_stopping": {"monitor": "val_rmse"}}
    assert _spec(tiny_config(tgt, train=es)).direction == "minimize"  # auto mode: rmse
    es = {"early_stopping": {"monitor": "val_macro_f1", "mode": "min"}}
    assert _spec(tiny_config(tgt, train=es)) == ObjectiveSpec(
        "val_macro_f1", "minimize", "fine-tuning"
    )
    probe = tiny_config(tgt, method={"name": "linear_probe", "params": {}})
    assert _spec(probe).key is None and _spec(probe).direction == "maximize"


@pytest.mark.parametrize(
    ("selector", "key", "direction"),
    [
        ("dev", "val_dev_risk", "minimize"),
        ("snd", "val_snd", "maximize"),
        ("entropy", "val_entropy", "minimize"),
        ("source_val", "val_source_accuracy", "maximize"),
    ],
)
def test_domain_adaptation_is_scored_by_its_label_free_selector(
    domains: tuple[Path, Path], selector: str, key: str, direction: str
) -> None:
    src, tgt = domains
    adapt = {"selector": selector, "collapse_guard": 0.0}
    cfg = tiny_config(tgt, method={"name": "dann", "params": {}}, adaptation=adapt)
    cfg["data"]["source"] = str(src)
    spec = _spec(cfg)
    assert (spec.key, spec.direction, spec.label_free) == (key, direction, True)
    assert "label-free" in spec.describe()
    # with the collapse guard on (the default) the guarded value is optimised instead
    del cfg["adaptation"]["collapse_guard"]
    spec = _spec(cfg)
    assert (spec.key, spec.direction, spec.label_free) == ("val_selection", direction, True)


def test_closed_form_adaptation_has_no_curve_to_sweep(domains: tuple[Path, Path]) -> None:
    src, tgt = domains
    cfg = tiny_config(tgt, method={"name": "coral", "params": {}})
    cfg["data"]["source"] = str(src)
    with pytest.raises(ConfigError, match="closed form") as info:
        _spec(cfg)
    assert info.value.where == "method.name" and "dann" in (info.value.fix or "")


def _run_dir(
    root: Path,
    cfg: dict[str, Any],
    selection: list[dict[str, Any]],
    curves: dict[int, list[dict[str, Any]]],
    primary: str = "accuracy",
) -> Path:
    """A finished run directory written by hand: config.yaml, metrics.json, log.jsonl."""
    root.mkdir()
    (root / "config.yaml").write_text(dump_config(load_config(cfg)))
    seeds = sorted(curves)
    metrics = {"primary_metric": primary, "seeds": seeds, "selection": selection}
    (root / "metrics.json").write_text(json.dumps(metrics))
    lines = [{"run": "teacher-seed0", "type": "epoch", "epoch": 1, "val_accuracy": 0.99}]
    for seed, rows in curves.items():
        lines.append({"run": f"target-seed{seed}", "type": "step", "step": 1, "loss": 0.5})
        lines += [
            {"run": f"target-seed{seed}", "type": "epoch", "epoch": i + 1, **r}
            for i, r in enumerate(rows)
        ]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"run": "target-seed0", "cut'
    (root / "log.jsonl").write_text(text)
    return root


def test_value_is_the_kept_epochs_validation_metric_mean_over_seeds(
    tmp_path: Path, domains: tuple[Path, Path]
) -> None:
    cfg = tiny_config(domains[1], seeds=[0, 1])
    curves = {
        0: [{"val_accuracy": 0.6}, {"val_accuracy": 0.8}, {"val_accuracy": 0.7}],
        1: [{"val_accuracy": 0.5}, {"val_accuracy": 0.9}],
    }
    selection = [{"best_epoch": 2}, {"best_epoch": None}]
    d = _run_dir(tmp_path / "a", cfg, selection, curves)
    spec = objective_spec(load_config(cfg))
    assert trial_value(d, spec) == pytest.approx((0.8 + 0.9) / 2)  # best epoch / last epoch
    cfg["train"]["early_stopping"]["restore_best"] = False  # the last epoch's weights are kept
    d = _run_dir(tmp_path / "b", cfg, selection, curves)
    assert trial_value(d, spec) == pytest.approx((0.7 + 0.9) / 2)


def test_da_value_reads_the_selector_never_the_oracle(
    tmp_path: Path, domains: tuple[Path, Path]
) -> None:
    src, tgt = domains
    cfg = tiny_config(tgt, method={"name": "dann", "params": {}}, seeds=[0])
    cfg["data"]["source"] = str(src)
    rows = [
        {"val_dev_risk": 0.40, "val_oracle_test_accuracy": 0.95, "val_accuracy": 0.9},
        {"val_dev_risk": 0.30, "val_oracle_test_accuracy": 0.55, "val_accuracy": 0.5},
        {"val_dev_risk": 0.35, "val_oracle_test_accuracy": 0.99, "val_accuracy": 0.99},
    ]
    for r in rows:  # the collapse guard's value: equal to DEV when nothing collapsed
        r["val_selection"] = r["val_dev_risk"]
    d = _run_dir(tmp_path / "da", cfg, [{"best_epoch": 2}], {0: rows})
    assert trial_value(d, objective_spec(load_config(cfg))) == pytest.approx(0.30)


def test_closed_form_value_is_the_selected_strengths_val_score(
    tmp_path: Path, domains: tuple[Path, Path]
) -> None:
    cfg = tiny_config(domains[1], method={"name": "linear_probe", "params": {}}, seeds=[3])
    sel = [{"selected": {"C": 1.0}, "val_scores": {"0.1": 0.7, "1.0": 0.85, "10.0": 0.8}}]
    d = _run_dir(tmp_path / "lp", cfg, sel, {3: []})
    assert trial_value(d, objective_spec(load_config(cfg))) == pytest.approx(0.85)


def test_a_run_without_the_monitored_values_is_a_training_error(
    tmp_path: Path, domains: tuple[Path, Path]
) -> None:
    cfg = tiny_config(domains[1])
    d = _run_dir(tmp_path / "x", cfg, [{"best_epoch": 1}], {0: [{"val_r2": 0.3}]})
    with pytest.raises(TrainingError, match="no 'val_accuracy' value") as info:
        trial_value(d, objective_spec(load_config(cfg)))
    assert "target-seed0" in (info.value.where or "")
