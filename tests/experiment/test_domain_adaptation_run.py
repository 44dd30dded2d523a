"""Domain adaptation through the experiment runner: domains, baselines, selection, gap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transferkit.data.types import Dataset, Splits
from transferkit.errors import ConfigError, DataError
from transferkit.experiment import load_config, run
from transferkit.experiment.domains import adaptation_pool, align_classes
from transferkit.experiment.label_free import (
    COLLAPSE_PENALTY,
    SELECTOR_KEYS,
    guarded,
    oracle_summary,
    per_example_ce,
    selection_key,
)


def _blobs(path: Path, n: int, shift: float, seed: int) -> None:
    """Two Gaussian classes along dim 0; ``shift`` moves every example along dims 0 and 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.6, (n, 6)).astype(np.float32)
    x[:, 0] += (2 * y - 1) * 1.5 + shift * 0.5
    x[:, 1] += shift
    np.savez(path, x=x, y=y)


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("domains")
    _blobs(d / "source.npz", 240, 0.0, 0)
    _blobs(d / "target.npz", 240, 2.5, 1)
    return d / "source.npz", d / "target.npz"


def _cfg(source: Path, target: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "da",
        "data": {"source": str(source), "target": str(target)},
        "model": {
            "backbone": "tk:mlp",
            "pretrained": False,
            "backbone_options": {"in_features": 6, "hidden": [16]},
        },
        "method": {"name": "dann", "params": {"backbone_lr_mult": 1.0}},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "early_stopping": {"patience": 5}},
        "adaptation": {"selection_examples": 60, "gap_examples": 60},
        "seeds": [0],
        "report": True,
    }
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def test_da_method_needs_a_source_and_others_refuse_one(domains: tuple[Path, Path]) -> None:
    src, tgt = domains
    cfg = _cfg(src, tgt)
    del cfg["data"]["source"]
    with pytest.raises(ConfigError, match=r"data\.source is not set"):
        load_config(cfg)
    cfg = _cfg(src, tgt, method={"name": "finetune", "params": {}})
    with pytest.raises(ConfigError, match="does not use a source domain"):
        load_config(cfg)


def _ds(classes: list[str], y: list[int]) -> Dataset:
    return Dataset("d", "tabular", np.zeros((len(y), 2), np.float32), np.asarray(y), classes)


def test_align_classes_remaps_order_and_refuses_other_classes() -> None:
    tgt = _ds(["cat", "dog"], [0, 1])
    src = align_classes(_ds(["dog", "cat"], [0, 0, 1]), tgt)
    assert src.classes == ["cat", "dog"]
    assert src.y.tolist() == [1, 1, 0]  # dog -> 1, cat -> 0
    with pytest.raises(DataError, match=r"only in source \['bird'\]"):
        align_classes(_ds(["bird", "dog"], [0, 1]), tgt)


def test_adaptation_pool_is_every_training_input_without_labels() -> None:
    train, left = _ds(["a", "b"], [0, 1]), _ds(["a", "b"], [1, 1, 0])
    pool = adaptation_pool(Splits(train, train, train, left.unlabelled()))
    assert pool.y is None and len(pool) == 5


def test_per_example_ce_matches_hand_values() -> None:
    z = np.array([[0.0, 0.0], [2.0, 0.0]])
    ce = per_example_ce(z, np.array([0, 1]))
    assert ce == pytest.approx([np.log(2), np.log(1 + np.exp(2.0))])


def test_oracle_summary_picks_best_test_epoch() -> None:
    hist = [
        {"epoch": e, "val_dev_risk": r, "val_oracle_test_accuracy": a}
        for e, r, a in [(1, 0.9, 0.6), (2, 0.5, 0.7), (3, 0.7, 0.8)]
    ]
    s = oracle_summary(hist, "accuracy", "val_dev_risk", "min", 2)
    assert (s["oracle_epoch"], s["oracle_test"], s["selected_epoch"]) == (3, 0.8, 2)
    assert [e["criterion"] for e in s["epochs"]] == [0.9, 0.5, 0.7]


@pytest.fixture(scope="module")
def da_run(domains: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dann"
    run(_cfg(*domains), out=out, quiet=True)
    return out


def test_collapse_guard_ranks_collapsed_epochs_below_healthy_ones() -> None:
    # epoch 3 has the lowest DEV but predicts one class (diversity 0.02): the measured
    # failure on mnist5k -> digits, where DEV picked chance-level checkpoints
    hist = [
        {"epoch": 1, "val_dev_risk": 2.3, "val_target_diversity": 0.9, "acc": 0.19},
        {"epoch": 2, "val_dev_risk": 2.0, "val_target_diversity": 0.8, "acc": 0.30},
        {"epoch": 3, "val_dev_risk": 0.05, "val_target_diversity": 0.02, "acc": 0.10},
    ]
    for r in hist:
        r["val_selection"] = guarded(r["val_dev_risk"], "min", r["val_target_diversity"] < 0.25)
        r["val_oracle_test_accuracy"] = r.pop("acc")
    assert min(hist, key=lambda r: r["val_selection"])["epoch"] == 2
    assert hist[2]["val_selection"] == pytest.approx(0.05 + COLLAPSE_PENALTY)
    assert guarded(5.0, "max", True) == 5.0 - COLLAPSE_PENALTY
    assert guarded(5.0, "max", False) == 5.0
    assert selection_key("snd", 0.25) == ("val_selection", "max")
    assert selection_key("snd", 0.0) == SELECTOR_KEYS["snd"]
    s = oracle_summary(hist, "accuracy", "val_dev_risk", "min", 2, collapse_guard=0.25)
    assert s["selected_collapsed"] is False and s["selected_diversity"] == 0.8
    assert s["epochs"][2]["target_diversity"] == 0.02
    # all collapsed: the raw criterion decides among them
    both = [guarded(v, "min", True) for v in (0.3, 0.1)]
    assert both.index(min(both)) == 1
    s = oracle_summary(hist, "accuracy", "val_dev_risk", "min", 3, collapse_guard=0.25)
    assert s["selected_collapsed"] is True


def test_collapse_guard_off_monitors_the_raw_criterion(
    domains: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg = _cfg(
        *domains,
        adaptation={"collapse_guard": 0.0, "domain_gap": False},
        baselines={"enabled": False},
        report=False,
    )
    m = run(cfg, out=tmp_path / "r", quiet=True).metrics
    lf = m["label_free_selection"]
    epochs = lf["epochs_first_seed"]
    assert lf["collapse_guard"] == 0.0 and lf["per_seed"][0]["collapsed"] is False
    assert lf["per_seed"][0]["selected_epoch"] == min(epochs, key=lambda e: e["criterion"])["epoch"]


def test_run_compares_with_source_only_and_reports_target_only(da_run: Path) -> None:
    m = json.loads((da_run / "metrics.json").read_text())
    assert m["family"] == "domain-adaptation"
    assert set(m["baselines"]) == {"source_only", "target_only"}
    assert m["best_baseline"] == "source_only"
    assert m["transfer_gain"]["baseline"] == "source_only"


def test_selected_checkpoint_is_the_criterions_best_and_oracle_bounds_it(da_run: Path) -> None:
    m = json.loads((da_run / "metrics.json").read_text())
    lf = m["label_free_selection"]
    assert lf["criterion"] == "dev"
    epochs = lf["epochs_first_seed"]
    assert len(epochs) == 3
    guard = lf["collapse_guard"]
    assert guard == 0.25 and all(0.0 <= e["target_diversity"] <= 1.0 for e in epochs)
    healthy = [e for e in epochs if e["target_diversity"] >= guard] or epochs
    best = min(healthy, key=lambda e: e["criterion"])  # dev: lower is better
    assert lf["per_seed"][0]["selected_epoch"] == best["epoch"]
    # the restored checkpoint's test accuracy is the one logged at that epoch
    assert m["target"]["accuracy"] == pytest.approx(best["test"])
    assert lf["oracle"] >= lf["selected"] - 1e-12
    assert lf["oracle"] == pytest.approx(max(e["test"] for e in epochs))


def test_domain_gap_before_and_after_with_plots_in_report(da_run: Path) -> None:
    m = json.loads((da_run / "metrics.json").read_text())
    gap = m["domain_gap"]
    for when in ("before", "after"):
        assert 0.0 <= gap[when]["proxy_a_distance"] <= 2.0
        assert (da_run / gap[when]["plot"]).is_file()
    html = (da_run / "report.html").read_text()
    assert "Checkpoint selection without target labels" in html
    assert "Domain gap" in html and "source-only model" in html


def test_selector_choice_changes_the_monitored_key(
    domains: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg = _cfg(
        *domains,
        adaptation={"selector": "source_val", "domain_gap": False},
        baselines={"enabled": False},
        report=False,
    )
    m = run(cfg, out=tmp_path / "r", quiet=True).metrics
    lf = m["label_free_selection"]
    assert lf["epochs_first_seed"][0]["criterion"] == lf["epochs_first_seed"][0]["source_accuracy"]
    assert SELECTOR_KEYS["source_val"] == ("val_source_accuracy", "max")
    assert "domain_gap" not in m and m["transfer_gain"] is None
