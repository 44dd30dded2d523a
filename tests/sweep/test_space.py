"""SPACE.yaml: schema, checks against the experiment config, overrides and suggestions."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tests.sweep.conftest import tiny_config
from transferkit.errors import ConfigError
from transferkit.experiment.config import load_config
from transferkit.sweep.space import (
    ParamSpec,
    check_key,
    check_space,
    load_space,
    suggest,
    to_overrides,
)

SPACE_YAML = """
train.lr: {type: float, low: 1e-4, high: 1.0e-1, log: true}
train.batch_size: {type: int, low: 16, high: 64, step: 16}
method.params.backbone_lr_mult: {type: categorical, choices: [0.1, 1.0]}
train.schedule: {type: categorical, choices: [cosine, constant]}
"""


def test_yaml_space_is_read_in_order_with_yaml_floats(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE_YAML)
    space = load_space(path)
    assert list(space.params) == [
        "train.lr",
        "train.batch_size",
        "method.params.backbone_lr_mult",
        "train.schedule",
    ]
    lr = space.params["train.lr"]
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 1e-4, 0.1, True)  # "1e-4" -> float
    assert space.params["train.schedule"].choices == ["cosine", "constant"]
    assert space.params["train.batch_size"].probe_values() == [16, 64]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "float", "low": 1.0, "high": 1.0}, "low < high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log scale needs low > 0"),
        ({"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}, "cannot be"),
        ({"type": "int", "low": 1, "high": 5.5}, "integer high"),
        ({"type": "int", "low": 1}, "both 'low' and 'high'"),
        ({"type": "categorical", "choices": []}, "non-empty 'choices'"),
        ({"type": "categorical", "choices": [1], "low": 0}, "takes only 'choices'"),
        ({"type": "float", "low": 0, "high": 1, "choices": [1]}, "not 'choices'"),
        ({"type": "float", "low": 0, "high": 1, "scale": "log"}, "unknown field 'scale'"),
        ({"type": "uniform", "low": 0, "high": 1}, "type"),
    ],
)
def test_bad_distributions_name_the_key_and_the_problem(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.lr") as info:
        load_space({"train.lr": spec})
    assert message in info.value.what
    assert info.value.fix and "low/high" in info.value.fix


def test_an_empty_or_non_mapping_space_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="non-empty mapping"):
        load_space({})
    path = tmp_path / "list.yaml"
    path.write_text("- train.lr\n")
    with pytest.raises(ConfigError, match="non-empty mapping") as info:
        load_space(path)
    assert info.value.where == str(path)


@pytest.mark.parametrize(
    ("key", "message", "fix"),
    [
        ("train.lrr", "train has no key 'lrr'", "did you mean 'train.lr'?"),
        ("trian.lr", "the top level has no key 'trian'", "did you mean 'train.lr'?"),
        ("train", "is a section, not a value", "lr"),
        ("train.early_stopping", "is a section", "patience"),
        ("train.lr.max", "'train.lr' is a value, not a section", "search 'train.lr'"),
    ],
)
def test_unknown_keys_and_sections_are_config_errors(key: str, message: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_key(key, "space.yaml")
    assert message in info.value.what
    assert info.value.where == f"space.yaml, key {key}"
    assert info.value.fix is not None and fix in info.value.fix


def test_free_form_and_optional_sections_are_accepted() -> None:
    for key in (
        "method.params.anything",
        "model.backbone_options.width",
        "teacher.lr",  # an optional section (TeacherConfig | None)
        "train.early_stopping.patience",
        "data.target_options.columns",
    ):
        check_key(key)


def test_every_bound_and_choice_is_validated_against_the_config(domains: Any) -> None:
    cfg = tiny_config(domains[1])
    before = copy.deepcopy(cfg)
    ok = load_space({"train.epochs": {"type": "int", "low": 1, "high": 4}})
    check_space(ok, cfg)
    bad_range = load_space({"train.epochs": {"type": "int", "low": 0, "high": 4}})
    with pytest.raises(ConfigError, match=r"'train\.epochs' with value 0") as info:
        check_space(bad_range, cfg, where="s.yaml")
    assert info.value.where == "s.yaml, key train.epochs"
    bad_choice = load_space(
        {"train.optimizer": {"type": "categorical", "choices": ["adamw", "lion"]}}
    )
    with pytest.raises(ConfigError, match="value 'lion'"):
        check_space(bad_choice, cfg)
    unknown_param = load_space(
        {"method.params.backbone_lr_mul": {"type": "float", "low": 0.1, "high": 1}}
    )
    with pytest.raises(ConfigError, match="did you mean 'backbone_lr_mult'"):
        check_space(unknown_param, cfg)
    assert cfg == before  # probing never writes into the caller's config


def test_overrides_parse_back_to_the_same_values(domains: Any) -> None:
    values = {"train.lr": 1e-5, "train.epochs": 3, "model.pretrained": True, "a.b": None}
    values |= {"train.schedule": "cosine", "c.d": "1e-3", "e.f": "yes", "g.h": 0.1}
    for item, (key, value) in zip(to_overrides(values), values.items(), strict=True):
        k, raw = item.split("=", 1)
        assert (
            k == key and yaml.safe_load(raw) == value and type(yaml.safe_load(raw)) is type(value)
        )
    cfg = load_config(tiny_config(domains[1]), to_overrides({"train.lr": 3.5e-5}))
    assert cfg.train.lr == 3.5e-5


def test_suggest_asks_optuna_for_each_distribution() -> None:
    space = load_space(yaml.safe_load(SPACE_YAML))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = [suggest(study.ask(), space) for _ in range(20)]
    for params in seen:
        assert 1e-4 <= params["train.lr"] <= 0.1
        assert params["train.batch_size"] in (16, 32, 48, 64)
        assert params["method.params.backbone_lr_mult"] in (0.1, 1.0)
    assert len({p["train.schedule"] for p in seen}) == 2
    fixed = optuna.trial.FixedTrial(
        {
            "train.lr": 0.01,
            "train.batch_size": 32,
            "method.params.backbone_lr_mult": 1.0,
            "train.schedule": "constant",
        }
    )
    assert suggest(fixed, space)["train.schedule"] == "constant"


def test_param_spec_is_frozen_and_fingerprinted() -> None:
    spec = ParamSpec(type="float", low=0.1, high=1.0)
    with pytest.raises(Exception, match="frozen"):
        spec.low = 0.2  # type: ignore[misc]
    space = load_space({"train.lr": {"type": "float", "low": 0.1, "high": 1.0}})
    assert space.fingerprint() == {"train.lr": {"type": "float", "low": 0.1, "high": 1.0}}
