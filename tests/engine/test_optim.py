"""Optimizer groups: no weight decay on biases / norm parameters, group keys kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import nn

from tests.engine.tiny import TinyMLP, collate, make_blobs, make_method
from transferkit.engine import TrainConfig, Trainer, build_optimizer, split_weight_decay
from transferkit.errors import ConfigError
from transferkit.methods.base import Method


def _names(method: nn.Module, params: list[torch.Tensor]) -> set[str]:
    by_id = {id(p): n for n, p in method.named_parameters()}
    return {by_id[id(p)] for p in params}


def test_split_keeps_lr_and_name_and_skips_bias_and_norm() -> None:
    method = make_method(body_mult=0.25)
    groups = split_weight_decay(method, TrainConfig(lr=0.1, weight_decay=0.05))
    table = {(g["name"], g["decay"]): g for g in groups}
    assert set(table) == {("body", True), ("body", False), ("head", True), ("head", False)}
    assert _names(method, table["body", True]["params"]) == {"body.0.weight"}
    assert _names(method, table["body", False]["params"]) == {
        "body.0.bias",
        "body.1.weight",
        "body.1.bias",
    }  # Linear bias + LayerNorm
    assert _names(method, table["head", True]["params"]) == {"head.weight"}
    assert _names(method, table["head", False]["params"]) == {"head.bias"}
    for (name, decay), g in table.items():
        assert g["lr"] == pytest.approx(0.025 if name == "body" else 0.1)
        assert g["weight_decay"] == (0.05 if decay else 0.0)


class BatchNormNet(TinyMLP):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(16)
        self.proj = nn.Linear(16, 16, bias=False)

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        return Method.param_groups(self, base_lr)  # one group with everything


def test_batchnorm_parameters_never_decay() -> None:
    method = BatchNormNet()
    groups = split_weight_decay(method, TrainConfig(weight_decay=0.1))
    decayed = set().union(*(_names(method, g["params"]) for g in groups if g["decay"]))
    assert decayed == {"body.0.weight", "head.weight", "proj.weight"}


class ZeroGradMethod(TinyMLP):
    """Loss with zero (not None) gradients: only weight decay moves the parameters."""

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss": 0.0 * self.predict(batch["x"]).sum()}


def test_weight_decay_shrinks_weights_only(tmp_path: Any) -> None:
    torch.manual_seed(0)
    method = ZeroGradMethod()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    cfg = TrainConfig(
        optimizer="sgd",
        momentum=0.0,
        lr=0.1,
        weight_decay=0.5,
        epochs=1,
        batch_size=16,
        schedule="constant",
        mixed_precision="no",
        save_checkpoints=False,
    )
    Trainer(method, make_blobs(32), collate, cfg, tmp_path, quiet=True).fit()
    after = method.state_dict()
    # two SGD steps with gradient wd * w: w <- w (1 - lr * wd)^2
    for key in ("body.0.weight", "head.weight"):
        torch.testing.assert_close(after[key], before[key] * (1 - 0.05) ** 2)
    for key in ("body.0.bias", "body.1.weight", "body.1.bias", "head.bias"):
        assert torch.equal(after[key], before[key]), key


def test_group_weight_decay_override() -> None:
    method = make_method()
    orig = method.param_groups

    def groups(base_lr: float) -> list[dict[str, Any]]:
        out = orig(base_lr)
        out[0]["weight_decay"] = 0.3
        return out

    method.param_groups = groups  # type: ignore[method-assign]
    opt = build_optimizer(method, TrainConfig(weight_decay=0.01))
    wds = {(g["name"], g["decay"]): g["weight_decay"] for g in opt.param_groups}
    assert wds == {
        ("body", True): 0.3,
        ("body", False): 0.0,
        ("head", True): 0.01,
        ("head", False): 0.0,
    }


def test_duplicate_parameter_is_a_config_error() -> None:
    method = make_method()
    method.param_groups = lambda lr: [  # type: ignore[method-assign]
        {"params": list(method.parameters()), "lr": lr, "name": "a"},
        {"params": list(method.head.parameters()), "lr": lr, "name": "b"},
    ]
    with pytest.raises(ConfigError, match="appears in groups 'a' and 'b'"):
        build_optimizer(method, TrainConfig())


def test_foreign_tensor_and_empty_groups_are_config_errors() -> None:
    method = make_method()
    stray = nn.Parameter(torch.zeros(3))
    method.param_groups = lambda lr: [{"params": [stray], "lr": lr}]  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="not a parameter of the method"):
        build_optimizer(method, TrainConfig())
    method.param_groups = lambda lr: [{"params": [], "lr": lr}]  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="no parameters to train"):
        build_optimizer(method, TrainConfig())


def test_sgd_options_reach_the_optimizer() -> None:
    opt = build_optimizer(
        make_method(), TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True, lr=0.3)
    )
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["momentum"] == 0.8 and g["nesterov"] for g in opt.param_groups)
