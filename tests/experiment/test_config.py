"""Config schema: defaults, round-trip, overrides, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferkit.errors import ConfigError
from transferkit.experiment.config import dump_config, load_config

BASE = {"data": {"target": "digits"}, "model": {"backbone": "tk:smallcnn"}}


def test_defaults_filled_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(BASE)
    assert cfg.method.name == "finetune" and cfg.seeds == [0, 1, 2]
    assert cfg.train.early_stopping.patience == 3
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_overrides_parse_yaml_values() -> None:
    cfg = load_config(
        BASE,
        [
            "train.lr=0.05",
            "seeds=[3, 4]",
            "data.label_budget=8",
            "method.params.freeze=all_but_head",
        ],
    )
    assert cfg.train.lr == 0.05 and cfg.seeds == [3, 4] and cfg.data.label_budget == 8
    assert cfg.method.params == {"freeze": "all_but_head"}


def test_typo_suggests_closest_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({**BASE, "train": {"lerning_rate": 1, "lr": 0.1, "bach_size": 3}})
    msg = str(err.value)
    assert "train.lerning_rate" in msg and "train.bach_size" in msg
    assert "did you mean 'train.batch_size'" in msg


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({**BASE, "train": {"lr": -1}}, "train.lr"),
        ({**BASE, "train": {"batch_size": 0}}, "train.batch_size"),
        ({**BASE, "seeds": []}, "seeds"),
        ({**BASE, "seeds": [1, 1]}, "distinct"),
        ({"model": {"backbone": "x"}}, "data: required key is missing"),
        ({**BASE, "method": {"name": "finetnue"}}, "did you mean finetune"),
        ({**BASE, "method": {"params": {"freez": "none"}}}, "did you mean 'freeze'"),
        ({**BASE, "method": {"params": {"backbone_lr_mult": 0}}}, "backbone_lr_mult"),
        ({**BASE, "train": {"early_stopping": {"monitor": "accuracy"}}}, "val_accuracy"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_configs_name_the_key(doc: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(doc)  # type: ignore[arg-type]
    assert fragment in str(err.value)


def test_bad_override_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no '='"):
        load_config(BASE, ["train.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
