"""DELTA: hand-computed distances, zero at start, frozen copy, supervised channel attention."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import TinyVectorBackbone
from transferkit.backbones.base import LayerGroup
from transferkit.errors import ConfigError
from transferkit.losses.delta import DELTA, channel_distances, delta_loss
from transferkit.losses.delta_attention import group_module_names


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def test_channel_distances_and_loss_by_hand() -> None:
    f = torch.zeros(2, 2, 1, 2)
    f[0, 0] = torch.tensor([[1.0, 2.0]])  # ||.||^2 = 5 for example 0, channel 0
    f[1, 1] = torch.tensor([[3.0, 0.0]])  # ||.||^2 = 9 for example 1, channel 1
    zero = torch.zeros_like(f)
    torch.testing.assert_close(channel_distances(f, zero), torch.tensor([2.5, 4.5]))
    assert delta_loss([f], [zero]).item() == pytest.approx((2.5 + 4.5) / 2)  # uniform 1/C
    w = torch.tensor([0.2, 0.8])
    assert delta_loss([f], [zero], [w]).item() == pytest.approx(0.2 * 2.5 + 0.8 * 4.5)
    tokens = f.flatten(2).transpose(1, 2)  # [B, L=2, D=2], channels last
    torch.testing.assert_close(
        channel_distances(tokens, torch.zeros_like(tokens), -1), torch.tensor([2.5, 4.5])
    )


def test_pooled_intermediates_zero_at_start_positive_after_perturbation(
    tiny_backbone: TinyVectorBackbone,
) -> None:
    delta = DELTA(tiny_backbone, indices=[0, 1])
    x = torch.randn(16, 6)
    tiny_backbone.eval()  # same BatchNorm statistics as the frozen copy
    out, feats = delta.features(tiny_backbone, x)
    assert [f.shape for f in feats] == [(16, 8), (16, 8)]
    torch.testing.assert_close(out, tiny_backbone(x))
    assert delta(x, feats).item() == 0.0
    with torch.no_grad():
        tiny_backbone.block2[0].weight.add_(0.1)
    _, feats = delta.features(tiny_backbone, x)
    assert delta(x, feats).item() > 0.0


def test_frozen_copy_unchanged_by_optimizer_steps(tiny_backbone: TinyVectorBackbone) -> None:
    delta = DELTA(tiny_backbone, indices=[0, -1])
    frozen = {k: v.clone() for k, v in delta.state_dict().items()}
    opt = torch.optim.Adam(tiny_backbone.parameters(), lr=0.05)
    delta.train()
    assert not delta.source.training
    x, y = torch.randn(16, 6), torch.randn(16, 8)
    for _ in range(3):
        opt.zero_grad()
        out, feats = delta.features(tiny_backbone, x)
        (F.mse_loss(out, y) + delta(x, feats)).backward()
        opt.step()
    for key, value in delta.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert all(not p.requires_grad and p.grad is None for p in delta.parameters())
    assert all(p.grad is not None for p in tiny_backbone.parameters())


def test_full_feature_maps_through_hooks_match_the_formula() -> None:
    model = _cnn()
    delta = DELTA(model, layers=["1", "3"])
    x = torch.randn(4, 2, 5, 5)
    _, feats = delta.features(model, x)
    assert delta(x, feats).item() == 0.0
    with torch.no_grad():
        model[2].bias.add_(0.5)  # only layer "3" moves
    out, feats = delta.features(model, x)
    assert [f.shape for f in feats] == [(4, 3, 5, 5), (4, 4, 5, 5)]
    torch.testing.assert_close(out, model(x))
    ref = delta.source[:4](x)
    expected = ((feats[1] - ref) ** 2).sum((2, 3)).mean(0).mean()
    assert delta(x, feats).item() == pytest.approx(expected.item(), rel=1e-5)


class _Net(nn.Module):
    """x -> h = W1 x (bias-free) -> relu -> head; optionally plus a skip from x (batch-shaped)."""

    def __init__(self, skip: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.hidden = nn.Linear(4, 5, bias=False)
        self.skip = nn.Linear(4, 5) if skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(x))
        return h + self.skip(x) if self.skip is not None else h


def _loop_attention(net: _Net, head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The paper's definition: zero filter i (a row of W1), measure the loss increase."""
    with torch.no_grad():
        base = F.cross_entropy(head(net(x)), y)
        increases = []
        for i in range(5):
            pruned = _Net(skip=net.skip is not None)
            pruned.load_state_dict(net.state_dict())
            pruned.hidden.weight[i] = 0
            increases.append(F.cross_entropy(head(pruned(x)), y) - base)
    return torch.softmax(torch.stack(increases) / 0.05, 0)


@pytest.mark.parametrize("skip", [False, True])  # True: the batched pass fails, loop fallback
@pytest.mark.parametrize("per_pass", [None, 1, 2])
def test_supervised_attention_equals_channel_removal(skip: bool, per_pass: int | None) -> None:
    net = _Net(skip)
    torch.manual_seed(4)
    head = nn.Linear(5, 3)
    with torch.no_grad():
        head.weight[:, 2] = 0  # channel 2 is ignored by the head: removing it costs nothing
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    calls = []
    head.register_forward_hook(lambda *_: calls.append(1))
    delta = DELTA(net, layers=["hidden"], attention="supervised")
    with pytest.raises(ConfigError, match="fit_attention"):
        delta(x, delta.features(net, x)[1])
    (w,) = delta.fit_attention(x, y, head, temperature=0.05, channels_per_pass=per_pass)
    if per_pass is None:  # base + one 5-channel pass + 2 checks; fallback: base + 5 passes
        assert len(calls) == (6 if skip else 4)
    torch.testing.assert_close(w, _loop_attention(net, head, x, y), rtol=1e-4, atol=1e-6)
    assert w.sum().item() == pytest.approx(1.0)
    assert delta.attention_fitted and head.training


def test_fitted_attention_weights_the_loss_and_survives_state_dict(
    tiny_backbone: TinyVectorBackbone,
) -> None:
    head = nn.Linear(8, 3)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    delta = DELTA(tiny_backbone, indices=[0, 1], attention="supervised")
    weights = delta.fit_attention(x, y, head)
    assert [w.shape for w in weights] == [(8,), (8,)]
    fresh = DELTA(tiny_backbone, indices=[0, 1], attention="supervised")
    fresh.load_state_dict(delta.state_dict())
    for a, b in zip(fresh.channel_weights(), weights, strict=True):
        torch.testing.assert_close(a, b)
    tiny_backbone.eval()
    with torch.no_grad():
        tiny_backbone.block1[0].weight.mul_(1.5)
    _, feats = fresh.features(tiny_backbone, x)
    _, ref = fresh.features(fresh.source, x)
    expected = delta_loss(feats, ref, weights)
    assert fresh(x, feats).item() == pytest.approx(expected.item(), rel=1e-6) and expected > 0


def test_group_modules_and_bad_configuration(tiny_backbone: TinyVectorBackbone) -> None:
    assert group_module_names(tiny_backbone, [0, -1]) == ["block1", "block2"]
    stem = SimpleNamespace(
        layer_groups=lambda: [
            LayerGroup("stem", ("conv.weight", "bn.weight"), 4),
            LayerGroup("stage", ("stage.0.weight",), 4),
        ]
    )
    assert group_module_names(stem, [1]) == ["stage"]
    with pytest.raises(ConfigError, match="group_modules"):
        group_module_names(stem, [0])
    with pytest.raises(ConfigError, match="exactly one"):
        DELTA(tiny_backbone, indices=[0], layers=["block1"])
    with pytest.raises(ConfigError, match="block1"):
        DELTA(tiny_backbone, layers=["blok1"])
    with pytest.raises(ConfigError, match="forward_intermediates"):
        DELTA(_cnn(), indices=[0])
    with pytest.raises(ConfigError, match="attention"):
        DELTA(tiny_backbone, indices=[0], attention="learned")  # type: ignore[arg-type]


class _MeanTokens(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(1)


def _removal_by_zeroing_filters(
    model: nn.Module, conv_or_linear: str, head: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Zero filter i (weight row + bias) of the layer; the output channel i is then 0."""
    with torch.no_grad():
        base = F.cross_entropy(head(model(x)), y)
        layer = dict(model.named_modules())[conv_or_linear]
        out = []
        for i in range(layer.weight.shape[0]):
            saved = layer.weight[i].clone(), layer.bias[i].clone()
            layer.weight[i], layer.bias[i] = 0, 0
            out.append(F.cross_entropy(head(model(x)), y) - base)
            layer.weight[i], layer.bias[i] = saved
    return torch.softmax(torch.stack(out) / 0.1, 0)


@pytest.mark.parametrize("per_pass", [None, 1])
def test_attention_on_conv_maps_and_channels_last_tokens(per_pass: int | None) -> None:
    torch.manual_seed(5)
    cnn, head = _cnn(), nn.Linear(4, 3)
    x, y = torch.randn(6, 2, 5, 5), torch.randint(0, 3, (6,))
    delta = DELTA(cnn, layers=["1"], attention="supervised")  # ReLU output [B, 3, 5, 5]
    (w,) = delta.fit_attention(x, y, head, temperature=0.1, channels_per_pass=per_pass)
    expected = _removal_by_zeroing_filters(cnn, "0", head, x, y)  # ReLU(0) = 0
    torch.testing.assert_close(w, expected, rtol=1e-4, atol=1e-6)

    tokens = nn.Sequential(nn.Linear(4, 5), _MeanTokens())
    x, y = torch.randn(6, 7, 4), torch.randint(0, 3, (6,))
    head = nn.Linear(5, 3)
    delta = DELTA(tokens, layers=["0"], attention="supervised", channel_dim=-1)
    (w,) = delta.fit_attention(x, y, head, temperature=0.1, channels_per_pass=per_pass)
    expected = _removal_by_zeroing_filters(tokens, "0", head, x, y)
    torch.testing.assert_close(w, expected, rtol=1e-4, atol=1e-6)
    _, feats = delta.features(tokens, x)
    assert feats[0].shape == (6, 7, 5) and delta(x, feats).item() == 0.0
