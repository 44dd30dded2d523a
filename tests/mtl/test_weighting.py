"""Loss weightings: equal, uncertainty, DWA, GradNorm; their state round-trips."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.mtl.helpers import MultiTaskData, full_batch, make_mtl
from transferkit.errors import ConfigError
from transferkit.mtl import WEIGHTINGS, build_weighting
from transferkit.mtl.gradnorm import GradNorm, grad_norms
from transferkit.mtl.tasks import TaskSpec
from transferkit.mtl.weighting import DynamicWeightAverage, UncertaintyWeighting

REG = [
    TaskSpec(name="clean", kind="regression", num_outputs=1),
    TaskSpec(name="noisy", kind="regression", num_outputs=1),
]


def test_registry_lists_every_weighting() -> None:
    assert WEIGHTINGS.names() == [
        "cagrad",
        "dwa",
        "equal",
        "gradnorm",
        "mgda",
        "nash",
        "pcgrad",
        "uncertainty",
    ]
    with pytest.raises(ConfigError, match="did you mean pcgrad"):
        build_weighting("pcgrd", {}, REG)
    with pytest.raises(ConfigError, match="temperature") as err:
        build_weighting("dwa", {"temperature": -1}, REG)
    assert err.value.where == "method.params.weighting.params"


def test_equal_weighting_is_the_sum_of_task_losses() -> None:
    tasks = [
        {"name": "a", "kind": "classification", "num_outputs": 3, "loss_weight": 0.5},
        {"name": "b", "kind": "regression", "num_outputs": 1},
    ]
    m = make_mtl("equal", tasks=tasks)
    out = m.training_step(full_batch(MultiTaskData()))
    want = 0.5 * out["loss_a"] + out["loss_b"]
    torch.testing.assert_close(out["loss"].detach(), want)
    assert float(out["weight_a"]) == float(out["weight_b"]) == 1.0


def test_uncertainty_form_per_task_kind() -> None:
    tasks = [
        TaskSpec(name="r", kind="regression", num_outputs=1),
        TaskSpec(name="c", kind="classification", num_outputs=2),
        TaskSpec(name="m", kind="multilabel", num_outputs=2),
    ]
    w = UncertaintyWeighting(tasks)
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.3, -0.2, 0.1]))
    losses = {"r": torch.tensor(2.0), "c": torch.tensor(1.5), "m": torch.tensor(0.7)}
    res = w.combine(losses)
    want = (
        0.5 * math.exp(-0.3) * 2.0 + 0.15 + math.exp(0.2) * 1.5 - 0.1 + math.exp(-0.1) * 0.7 + 0.05
    )
    assert float(res.loss.detach()) == pytest.approx(want, rel=1e-6)
    assert float(res.weights["r"]) == pytest.approx(0.5 * math.exp(-0.3), rel=1e-6)
    only_c = w.combine({"c": torch.tensor(1.5)})  # absent tasks add no s/2 term
    assert float(only_c.loss.detach()) == pytest.approx(math.exp(0.2) * 1.5 - 0.1, rel=1e-6)


def test_uncertainty_lowers_the_weight_of_a_noisy_task() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    clean = x @ torch.tensor([1.0, -1.0, 0.5, 0.0])
    noisy = x @ torch.tensor([0.0, 1.0, 1.0, -0.5]) + 3.0 * torch.randn(256, generator=g)
    torch.manual_seed(0)
    body, heads = nn.Linear(4, 8), nn.ModuleList(nn.Linear(8, 1) for _ in range(2))
    w = UncertaintyWeighting(REG)
    opt = torch.optim.Adam([*body.parameters(), *heads.parameters(), *w.parameters()], lr=0.05)
    first = None
    for _ in range(150):
        h = body(x)
        losses = {
            n: ((head(h).squeeze(-1) - y) ** 2).mean()
            for n, head, y in zip(["clean", "noisy"], heads, [clean, noisy], strict=True)
        }
        res = w.combine(losses)
        first = first or {k: float(v) for k, v in res.weights.items()}
        opt.zero_grad()
        res.loss.backward()
        opt.step()
    last = {k: float(v) for k, v in res.weights.items()}
    assert first == {"clean": 0.5, "noisy": 0.5}
    assert last["noisy"] < 0.5 and last["noisy"] < last["clean"] / 5
    # at the optimum s = log L: the weight 1 / (2 sigma^2) tends to 1 / (2 L)
    assert last["noisy"] == pytest.approx(0.5 / float(losses["noisy"].detach()), rel=0.3)


def _epoch(dwa: DynamicWeightAverage, means: dict[str, list[float]]) -> list[dict[str, float]]:
    seen = []
    for vals in zip(*means.values(), strict=True):
        res = dwa.combine({k: torch.tensor(v) for k, v in zip(means, vals, strict=True)})
        seen.append({k: float(v) for k, v in res.weights.items()})
    dwa.epoch_end()
    return seen


def test_dwa_weights_from_hand_computed_loss_ratios() -> None:
    dwa = DynamicWeightAverage(REG)
    first = _epoch(dwa, {"clean": [4.0, 2.0], "noisy": [1.0, 1.0]})  # means 3, 1
    second = _epoch(dwa, {"clean": [1.0, 2.0], "noisy": [2.0, 2.0]})  # means 1.5, 2
    assert all(w == {"clean": 1.0, "noisy": 1.0} for w in first + second)
    weights = _epoch(dwa, {"clean": [1.0], "noisy": [1.0]})[0]
    r = np.array([1.5 / 3.0, 2.0 / 1.0])  # L(e-1) / L(e-2)
    want = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
    assert weights["clean"] == pytest.approx(want[0], rel=1e-6)
    assert weights["noisy"] == pytest.approx(want[1], rel=1e-6)
    assert weights["noisy"] > 1 > weights["clean"]  # the task that stopped improving
    assert int(dwa.epochs_seen) == 3


def test_dwa_task_absent_for_an_epoch_keeps_its_mean() -> None:
    dwa = DynamicWeightAverage(REG)
    dwa.combine({"clean": torch.tensor(2.0), "noisy": torch.tensor(4.0)})
    dwa.epoch_end()
    dwa.combine({"clean": torch.tensor(1.0)})
    dwa.epoch_end()
    w = dwa.current_weights()
    r = np.array([0.5, 1.0])
    np.testing.assert_allclose(w.numpy(), 2 * np.exp(r / 2) / np.exp(r / 2).sum(), rtol=1e-6)


def _gradnorm_toy() -> tuple[nn.Linear, list[nn.Linear], torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(4, 4), [nn.Linear(4, 1), nn.Linear(4, 1)], torch.randn(32, 4)


def test_gradnorm_weight_gradient_by_hand() -> None:
    shared, heads, x = _gradnorm_toy()
    gn = GradNorm(REG, GradNorm.Params(alpha=1.0))
    h = shared(x)
    losses = {"clean": heads[0](h).square().mean(), "noisy": 10 * heads[1](h).square().mean()}
    res = gn.combine(losses, list(shared.parameters()))
    n = grad_norms(list(losses.values()), list(shared.parameters()))
    res.loss.backward()
    # at step 0 every rate is 1, so target = mean(G) and dL/dw_t = sign(G_t - Gbar) n_t
    g = n  # w = 1
    want = torch.sign(g - g.mean()) * n
    torch.testing.assert_close(gn.task_weights.grad, want)
    assert float(res.loss.detach()) == pytest.approx(float(sum(losses.values()).detach()))


def test_gradnorm_moves_weights_towards_balanced_gradient_norms() -> None:
    shared, heads, x = _gradnorm_toy()
    gn = GradNorm(REG, GradNorm.Params(alpha=0.0))
    opt = torch.optim.SGD(gn.parameters(), lr=0.02)
    params = list(shared.parameters())
    gaps = []
    for _ in range(30):
        h = shared(x)
        losses = {"clean": heads[0](h).square().mean(), "noisy": 10 * heads[1](h).square().mean()}
        res = gn.combine(losses, params)
        n = grad_norms(list(losses.values()), params)
        g = gn.task_weights.detach() * n
        gaps.append(float((g[0] - g[1]).abs() / g.sum()))
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        gn.step_end()
    w = gn.task_weights.detach()
    assert float(w.sum()) == pytest.approx(2.0)  # renormalised to the task count
    assert w[1] < 1 < w[0]  # the task with the large gradient gets the small weight
    assert gaps[-1] < 0.2 * gaps[0]


def _advance(w: Any, shared: nn.Linear, x: torch.Tensor, i: int) -> list[float]:
    """Step ``i`` of a toy run: combine, backward, SGD on the weighting, hooks (epochs of
    two steps); returns the weights it used."""
    if w.kind == "gradient":
        g = np.array([[1.0, 0.0, 1.0], [-1.0, 1.0, 0.2], [-0.3, -1.0, 0.0]]) * (1 + 0.1 * i)
        return list(w.coefficients(g @ g.T))
    h = shared(x)
    losses = {t.name: (h[:, k] * (1 + 0.1 * i)).square().mean() for k, t in enumerate(w.tasks)}
    res = w.combine(losses, list(shared.parameters()))
    res.loss.backward()
    with torch.no_grad():
        for q in w.parameters():
            q -= 0.1 * q.grad
            q.grad = None
    shared.zero_grad()
    w.step_end()
    if i % 2 == 1:
        w.epoch_end()
    return [float(v) for v in res.weights.values()]


@pytest.mark.parametrize("name", ["uncertainty", "dwa", "gradnorm", "pcgrad"])
def test_state_round_trip_restores_identical_next_step_weights(name: str) -> None:
    tasks = [*REG, TaskSpec(name="third", kind="classification", num_outputs=2)]
    torch.manual_seed(0)
    shared, x = nn.Linear(3, 3), torch.randn(8, 3)
    a = build_weighting(name, {}, tasks)
    for i in range(5):  # 5 steps: DWA is mid-epoch, with sums of step 4 pending
        _advance(a, shared, x, i)
    b = build_weighting(name, {}, tasks)
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    ref = [_advance(a, shared, x, i) for i in range(5, 8)]
    assert [_advance(b, shared, x, i) for i in range(5, 8)] == ref
    fresh = build_weighting(name, {}, tasks)  # without the state the weights differ
    assert [_advance(fresh, shared, x, i) for i in range(5, 8)] != ref
