"""Gradient reversal, DANN ramp and loss, CDAN multilinear maps and entropy conditioning."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from transferkit.errors import ConfigError, DataError
from transferkit.losses.adversarial import (
    CDANLoss,
    DANNLoss,
    DomainDiscriminator,
    GradientReversal,
    RandomizedMultilinearMap,
    cdan_loss,
    dann_lambda,
    dann_loss,
    domain_accuracy,
    entropy_weights,
    grad_reverse,
    multilinear_map,
)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_grl_is_identity_forward_and_negates_gradient_exactly(lam: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    grl = GradientReversal(lam)
    y = grl(x)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream * (-lam))


def test_grl_lambda_is_settable_and_follows_the_ramp() -> None:
    x = torch.ones(2, requires_grad=True)
    grl = GradientReversal()
    grl.lambda_ = 0.25
    grl(x).sum().backward()
    assert torch.equal(x.grad, torch.full((2,), -0.25))
    grl.set_progress(0.5, max_lambda=2.0)
    assert grl.lambda_ == pytest.approx(2.0 * (2 / (1 + math.exp(-5)) - 1))
    assert torch.equal(grad_reverse(x, 3.0), x)


def test_dann_lambda_ramp() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(1.0) > 0.999
    ramp = [dann_lambda(p / 10) for p in range(11)]
    assert all(a < b for a, b in itertools.pairwise(ramp))
    with pytest.raises(ConfigError, match="progress"):
        dann_lambda(-0.1)
    with pytest.raises(ConfigError, match="gamma"):
        dann_lambda(0.5, gamma=0.0)


def test_dann_loss_is_balanced_bce_and_reverses_feature_gradients() -> None:
    disc = nn.Linear(2, 1)
    with torch.no_grad():
        disc.weight.zero_()
        disc.bias.zero_()
    f_s = torch.randn(3, 2, requires_grad=True)
    f_t = torch.randn(5, 2)
    assert dann_loss(disc, f_s, f_t).item() == pytest.approx(math.log(2.0))
    # Gradient to the features is -lambda times the un-reversed gradient.
    d2 = nn.Linear(2, 1)
    g_id = torch.autograd.grad(dann_loss(d2, f_s, f_t, nn.Identity()), f_s)[0]
    g_rev = torch.autograd.grad(dann_loss(d2, f_s, f_t, GradientReversal(0.5)), f_s)[0]
    torch.testing.assert_close(g_rev, -0.5 * g_id)


def _train_dann(grl: GradientReversal, steps: int = 200) -> tuple[float, float, float]:
    """Linear features + head on 2-D Gaussians: labels along [1, -1], domain shift along [1, 1].

    Returns (normalised domain mean gap in feature space, discriminator balanced accuracy,
    source task accuracy) on fresh samples. Plain SGD: DANN's adversarial game is stable
    with it (Adam's per-step normalisation makes this tiny game oscillate).
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    def data(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_s = torch.randn(n, 2, generator=gen)
        x_t = torch.randn(n, 2, generator=gen) + torch.tensor([3.0, 3.0])
        return x_s, x_t, (x_s[:, 0] > x_s[:, 1]).long()

    feature, head = nn.Linear(2, 2), nn.Linear(2, 2)
    loss_fn = DANNLoss(DomainDiscriminator(2, hidden=16, dropout=0.0), grl)
    params = [*feature.parameters(), *head.parameters(), *loss_fn.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(steps):
        x_s, x_t, y_s = data(128)
        f_s, f_t = feature(x_s), feature(x_t)
        loss = nn.functional.cross_entropy(head(f_s), y_s) + loss_fn(f_s, f_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_s, x_t, y_s = data(512)
    with torch.no_grad():
        f_s, f_t = feature(x_s), feature(x_t)
        gap = (f_s.mean(0) - f_t.mean(0)).norm() / torch.cat([f_s, f_t]).std(0).norm()
        task_acc = (head(f_s).argmax(-1) == y_s).float().mean().item()
    return gap.item(), domain_accuracy(loss_fn.discriminator, f_s, f_t), task_acc


def test_dann_training_aligns_a_linear_feature_map() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threading only adds overhead
    try:
        gap, dom_acc, task_acc = _train_dann(GradientReversal(1.0))
        gap_off, dom_acc_off, _ = _train_dann(GradientReversal(0.0))  # control: no reversal
    finally:
        torch.set_num_threads(threads)
    assert gap < 0.2 and gap_off > 0.5  # initial gap is about 1.8
    assert dom_acc < 0.65 and dom_acc_off > 0.9
    assert task_acc > 0.95  # the task direction survives alignment


def test_multilinear_map_shape_and_entries() -> None:
    f = torch.arange(6.0).reshape(2, 3)
    g = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    t = multilinear_map(f, g)
    assert t.shape == (2, 6)
    torch.testing.assert_close(t[1], torch.cat([0.25 * f[1], 0.75 * f[1]]))
    torch.testing.assert_close(t[0, 3:], torch.zeros(3))


def test_randomized_map_shape_determinism_and_inner_products() -> None:
    rmap = RandomizedMultilinearMap(4, 3, output_dim=64, seed=7)
    f, g = torch.randn(5, 4), torch.softmax(torch.randn(5, 3), -1)
    out = rmap(f, g)
    assert out.shape == (5, 64)
    torch.testing.assert_close(out, RandomizedMultilinearMap(4, 3, 64, seed=7)(f, g))
    assert "r_f" in rmap.state_dict()
    big = RandomizedMultilinearMap(4, 3, output_dim=20000, seed=1)
    exact = multilinear_map(f, g) @ multilinear_map(f, g).T
    approx = big(f, g) @ big(f, g).T
    assert (approx - exact).abs().max() < 0.15 * exact.abs().max()
    with pytest.raises(DataError, match="built for"):
        rmap(torch.randn(5, 5), g)
    with pytest.raises(ConfigError, match="output_dim"):
        RandomizedMultilinearMap(4, 3, output_dim=0)


def test_entropy_weights_favour_confident_examples() -> None:
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    w = entropy_weights(p)
    raw = torch.tensor([2.0, 1.0 + math.exp(-math.log(2.0))])
    torch.testing.assert_close(w, raw / raw.mean())
    assert w[0] > w[1]


def test_cdan_loss_matches_manual_and_entropy_variant() -> None:
    torch.manual_seed(1)
    f_s, f_t = torch.randn(4, 3), torch.randn(6, 3)
    p_s, p_t = torch.randn(4, 2).softmax(-1), torch.randn(6, 2).softmax(-1)
    disc = DomainDiscriminator(6, hidden=8, dropout=0.0)
    got = cdan_loss(disc, f_s, f_t, p_s, p_t)
    manual = dann_loss(disc, multilinear_map(f_s, p_s), multilinear_map(f_t, p_t))
    torch.testing.assert_close(got, manual)
    weighted = CDANLoss(disc, entropy_conditioning=True)(f_s, f_t, p_s, p_t)
    assert torch.isfinite(weighted) and not torch.allclose(weighted, got)
    rdisc = DomainDiscriminator(16, hidden=8, dropout=0.0)
    rmap = RandomizedMultilinearMap(3, 2, output_dim=16)
    assert torch.isfinite(cdan_loss(rdisc, f_s, f_t, p_s, p_t, mapping=rmap))
    with pytest.raises(DataError, match="batch size"):
        cdan_loss(disc, f_s, f_t, p_s[:3], p_t)


def test_discriminator_validates_arguments() -> None:
    assert DomainDiscriminator(5, hidden=7)(torch.randn(3, 5)).shape == (3,)
    with pytest.raises(ConfigError, match="in_features"):
        DomainDiscriminator(0)
    with pytest.raises(DataError, match="non-empty"):
        dann_loss(DomainDiscriminator(2), torch.randn(0, 2), torch.randn(3, 2))
