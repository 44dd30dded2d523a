"""Linear probe and fine-tuning: closed-form folding, freezing, learning-rate groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tests.conftest import TinyVectorBackbone
from transferkit.errors import ConfigError
from transferkit.methods import METHODS
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head
from transferkit.methods.linear_probe import LinearProbe, LinearProbeParams


def _features(n: int = 120, d: int = 8, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    f = rng.normal(size=(n, d)) * 3 + 5 + y[:, None] * 1.5
    return f.astype(np.float32), y


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_probe_head_equals_sklearn(tiny_backbone: TinyVectorBackbone, classes: int) -> None:
    f, y = _features(classes=classes)
    probe = LinearProbe(
        tiny_backbone,
        make_head(8, classes),
        "classification",
        LinearProbeParams(strengths=[0.1, 1.0]),
    )
    probe.fit_features(f[:80], y[:80], f[80:], y[80:])
    assert probe.selected_strength_ in (0.1, 1.0) and set(probe.val_scores_) == {0.1, 1.0}
    mu, sd = f[:80].mean(0), f[:80].std(0) + 1e-6
    ref = LogisticRegression(C=probe.selected_strength_, max_iter=2000)
    ref.fit((f[:80] - mu) / sd, y[:80])
    with torch.no_grad():
        logits = probe.head(torch.as_tensor(f)).numpy()
    np.testing.assert_allclose(
        torch.softmax(torch.as_tensor(logits), -1).numpy(),
        ref.predict_proba((f - mu) / sd),
        atol=1e-4,
    )
    assert all(not p.requires_grad for p in probe.backbone.parameters())


def test_linear_probe_regression(tiny_backbone: TinyVectorBackbone) -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(100, 8)).astype(np.float32)
    y = (f @ rng.normal(size=8) + 0.5).astype(np.float32)
    probe = LinearProbe(tiny_backbone, make_head(8, 1), "regression", LinearProbeParams())
    probe.fit_features(f[:70], y[:70], f[70:], y[70:])
    with torch.no_grad():
        pred = probe.head(torch.as_tensor(f[70:])).squeeze(-1).numpy()
    assert np.abs(pred - y[70:]).max() < 0.05


def test_linear_probe_rejects_mlp_head(tiny_backbone: TinyVectorBackbone) -> None:
    with pytest.raises(ConfigError, match="linear head"):
        LinearProbe(tiny_backbone, make_head(8, 2, "mlp"), "classification", LinearProbeParams())


def _finetune(freeze: str | int, mult: float = 0.1) -> Finetune:
    torch.manual_seed(0)
    bb = TinyVectorBackbone()
    return Finetune(
        bb, make_head(8, 3), "classification", FinetuneParams(freeze=freeze, backbone_lr_mult=mult)
    )


def _sgd_steps(m: Finetune, steps: int = 5) -> None:
    opt = torch.optim.SGD(m.param_groups(0.1), lr=0.1)
    rng = np.random.default_rng(0)
    m.train()
    for _ in range(steps):
        x = torch.as_tensor(rng.normal(size=(16, 6)), dtype=torch.float32)
        y = torch.as_tensor(rng.integers(0, 3, 16))
        opt.zero_grad()
        m.training_step({"x": x, "y": y})["loss"].backward()
        opt.step()


def test_frozen_parameters_stay_bit_equal() -> None:
    m = _finetune(freeze=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _sgd_steps(m)
    after = m.state_dict()
    for k in before:
        same = torch.equal(before[k], after[k])
        # block1 (frozen group, including its BatchNorm running stats) is bit-equal
        assert same == k.startswith("backbone.block1"), k


def test_all_but_head_trains_head_only() -> None:
    m = _finetune(freeze="all_but_head")
    groups = m.param_groups(0.1)
    assert [g["name"] for g in groups] == ["head"]
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    _sgd_steps(m)
    assert all(torch.equal(before[k], v) for k, v in m.backbone.state_dict().items())


def test_backbone_lr_multiplier_in_group_lr() -> None:
    m = _finetune(freeze="none", mult=0.25)
    groups = {g["name"]: g for g in m.param_groups(0.2)}
    assert groups["head"]["lr"] == 0.2 and groups["backbone"]["lr"] == pytest.approx(0.05)
    n_params = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n_params == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("freeze", ["some", 7, -1])
def test_bad_freeze_values(freeze: str | int) -> None:
    with pytest.raises(ConfigError, match="freeze"):
        _finetune(freeze=freeze)


def test_registry_lists_first_methods() -> None:
    assert {"linear_probe", "finetune"} <= set(METHODS.names())
    assert METHODS.get("linear_probe").family == "feature-extraction"
    assert "backbone_lr_mult" in METHODS.get("finetune").describe_params()
