"""advise(): measurements, decisions on constructed domains, written files, errors; check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.advisor.conftest import FEATURES, Toy
from transferkit.advisor.advise import advise
from transferkit.advisor.check import check_advice, compare
from transferkit.errors import ConfigError, DataError
from transferkit.experiment import load_config

FAST = {"epochs": 1, "seeds": (0, 1), "n_controls": 2, "max_examples": 300}


def _configs(out: Path) -> tuple[dict, dict]:
    docs = [yaml.safe_load((out / f"{r}.yaml").read_text()) for r in ("recommended", "runner_up")]
    for role in ("recommended", "runner_up"):
        load_config(out / f"{role}.yaml")  # valid: raises otherwise
    return docs[0], docs[1]


def test_unrelated_model_and_large_target_means_train_on_target_alone(
    toy: Toy, tmp_path: Path
) -> None:
    """Issue requirement: features no better than random + many labels -> no transfer."""
    a = advise(toy.unrelated, toy.target, toy.source, out=tmp_path, **FAST)
    tx = a["transferability"]
    assert tx["gap"] == pytest.approx(tx["pretrained"] - tx["random_init"])
    assert len(tx["random_init_runs"]) == 2 and tx["gap"] <= 0.03
    assert tx["weights_random"] is False
    assert a["target_info"]["labels_per_class"]["median"] > 50
    assert a["rule"] == "no_transfer"
    assert a["recommended"]["strategy"] == "target_only"
    assert a["domain_gap"]["proxy_a_distance"] >= 1.0  # shifted source: far apart
    assert a["domain_gap"]["mmd2"] > 0
    reasons = " | ".join(a["recommended"]["reasons"])
    assert f"{tx['gap']:+.3f}" in reasons and "proxy A-distance" in reasons
    rec, alt = _configs(tmp_path)
    assert rec["model"]["pretrained"] is False and rec["baselines"] == {"random_init": False}
    assert rec["model"]["backbone"] == toy.unrelated
    assert rec["train"] == {"epochs": 3, "lr": 3e-3}  # from scratch: longer and hotter
    assert alt["train"] == {"epochs": 1}
    assert alt["method"]["name"] == "finetune" and alt["model"]["pretrained"] is True
    assert "source" not in rec["data"] and rec["data"]["target"] == str(toy.target.resolve())
    assert "baselines" in (tmp_path / "recommended.yaml").read_text().splitlines()[1]
    stored = json.loads((tmp_path / "advice.json").read_text())
    assert stored["rule"] == "no_transfer" and stored["thresholds"]["small_labels_per_class"] == 50


def test_small_target_with_informative_model_gets_feature_extraction(
    toy: Toy, tmp_path: Path
) -> None:
    a = advise(toy.good, toy.target, label_budget=10, out=tmp_path, **FAST)
    lpc = a["target_info"]["labels_per_class"]
    assert lpc["min"] == lpc["median"] == 10 and a["target_info"]["num_classes"] == 4
    assert a["target_info"]["sizes"]["unlabelled"] > 0 and a["domain_gap"] is None
    assert a["transferability"]["gap"] > 0.08 and a["transferability"]["n_examples"] == 40
    assert a["rule"] == "feature_extraction"
    probe = a["probe"]
    assert probe["groups"] == ["linear0", "linear1"] and len(probe["val_metric"]) == 2
    assert (tmp_path / "probe.json").is_file() and (tmp_path / "probe.png").is_file()
    rec, alt = _configs(tmp_path)
    assert rec["method"]["name"] == "linear_probe" and rec["data"]["label_budget"] == 10
    expected_layers = [probe["best_index"]] if probe["best_index"] < 1 else None
    assert rec["method"]["params"].get("layers") == expected_layers
    assert alt["method"]["name"] == "finetune"


def test_far_labelled_source_and_scarce_target_gets_domain_adaptation(
    toy: Toy, tmp_path: Path
) -> None:
    a = advise(toy.good, toy.target, toy.source, label_budget=10, out=tmp_path, **FAST)
    assert a["rule"] == "domain_adaptation"
    assert (a["recommended"]["method"], a["runner_up"]["method"]) == ("mcc", "dann")
    assert a["domain_gap"]["n_target"] > 40  # the unlabelled pool counts for the gap
    rec, alt = _configs(tmp_path)
    assert rec["data"]["source"] == str(toy.source.resolve())
    assert alt["data"]["source"] == rec["data"]["source"]
    assert rec["model"]["backbone_options"] == {}  # file: checkpoints carry their options


def test_tk_mlp_configs_get_in_features(toy: Toy, tmp_path: Path) -> None:
    a = advise("tk:mlp", toy.small_target, out=tmp_path, **FAST)
    rec, _ = _configs(tmp_path)
    assert rec["model"]["backbone_options"] == {"in_features": FEATURES}
    assert a["transferability"]["weights_random"] is True  # tk: specs have no pretraining
    assert a["recommended"]["strategy"] == "target_only"
    assert "nothing pretrained to transfer" in " ".join(a["recommended"]["reasons"])


def test_bad_inputs(toy: Toy, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reads image inputs"):
        advise("tk:smallcnn", toy.target, out=tmp_path, **FAST)
    with pytest.raises(DataError, match="file not found"):
        advise(toy.good, tmp_path / "missing.npz", out=tmp_path, **FAST)
    three = tmp_path / "three.npz"
    x = np.zeros((60, FEATURES), np.float32)
    np.savez(three, x=x, y=np.arange(60) % 3)
    with pytest.raises(DataError, match="different classes"):
        advise(toy.good, toy.target, three, out=tmp_path, **FAST)
    with pytest.raises(ConfigError, match="n_controls"):
        advise(toy.good, toy.target, out=tmp_path, **{**FAST, "n_controls": 0})
    assert not (tmp_path / "advice.json").exists()


def _run(mean: float, sd: float) -> dict:
    return {"mean": mean, "sd": sd}


def test_compare_winner_margin_and_tolerance() -> None:
    c = compare(_run(0.80, 0.02), _run(0.81, 0.03), "accuracy")
    assert c["winner"] == "runner_up" and c["margin"] == pytest.approx(-0.01)
    assert c["tolerance"] == 0.03 and c["advice_right"]  # behind, but within one sd
    assert not compare(_run(0.80, 0.02), _run(0.90, 0.03), "accuracy")["advice_right"]
    ok = compare(_run(0.90, 0.0), _run(0.80, 0.0), "accuracy")
    assert ok["winner"] == "recommended" and ok["advice_right"]
    low = compare(_run(1.0, 0.1), _run(2.0, 0.1), "rmse")  # lower is better
    assert low["winner"] == "recommended" and low["margin"] == pytest.approx(1.0)


def test_check_advice_runs_both_configs(toy: Toy, tmp_path: Path) -> None:
    advise(toy.good, toy.small_target, out=tmp_path, **FAST)
    res = check_advice(tmp_path, overrides=["baselines.classical=false", "report=false"])
    stored = json.loads((tmp_path / "advice_check.json").read_text())
    assert stored["winner"] == res["winner"] and stored["primary_metric"] == "accuracy"
    runs = res["runs"]
    assert len(runs["recommended"]["per_seed"]) == len(runs["runner_up"]["per_seed"]) == 2
    margin = runs["recommended"]["mean"] - runs["runner_up"]["mean"]
    assert res["margin"] == pytest.approx(margin)
    assert res["winner"] == ("recommended" if margin >= 0 else "runner_up")
    for role in ("recommended", "runner_up"):
        assert (tmp_path / "check" / role / "metrics.json").is_file()
    with pytest.raises(ConfigError, match=r"no recommended\.yaml"):
        check_advice(tmp_path / "check")
