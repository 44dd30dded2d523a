"""Gradient-combination rules against hand-computed vectors and their defining conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from transferkit.mtl import gradients as gm
from transferkit.mtl.gradient_methods import MGDA, CAGrad, NashMTL, PCGrad, combine
from transferkit.mtl.tasks import TaskSpec


def _pc(g: np.ndarray, orders: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """PCGrad's projected gradients g_i^PC (rows) and their sum, via the coefficients."""
    projected = []
    for i in range(len(g)):  # the direct vector algorithm, to compare the coefficients with
        v = g[i].copy()
        for j in orders[i]:
            if v @ g[j] < 0:
                v = v - (v @ g[j]) / (g[j] @ g[j]) * g[j]
        projected.append(v)
    w = gm.pcgrad_coefficients(g @ g.T, orders)
    np.testing.assert_allclose(w @ g, np.sum(projected, axis=0), atol=1e-12)
    return np.array(projected), w


def test_pcgrad_two_conflicting_tasks_by_hand() -> None:
    g = np.array([[1.0, 0.0], [-1.0, 1.0]])  # g1.g2 = -1 < 0
    projected, w = _pc(g, [[1], [0]])
    # g1 - (-1/2) g2 = (0.5, 0.5); g2 - (-1/1) g1 = (0, 1)
    np.testing.assert_allclose(projected, [[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(w, [2.0, 1.5])  # d = 2 g1 + 1.5 g2 = (0.5, 1.5)
    assert projected[0] @ g[1] >= -1e-12 and projected[1] @ g[0] >= -1e-12


@pytest.mark.parametrize("order", [0, 1])
def test_pcgrad_three_tasks_conflicts_resolved_in_any_order(order: int) -> None:
    # g3 conflicts with g1 and g2 (dots -1, -1); g1 and g2 agree (dot 2)
    g = np.array([[-1.0, 2.0, -1.0], [-1.0, 1.0, 1.0], [-2.0, -2.0, -1.0]])
    orders = [[1, 2], [0, 2], [0, 1]] if order == 0 else [[2, 1], [2, 0], [1, 0]]
    projected, _ = _pc(g, orders)
    # g1, g2 are projected onto g3's normal only: g_i + g3 / 9
    np.testing.assert_allclose(projected[0], np.array([-11, 16, -10]) / 9, atol=1e-12)
    np.testing.assert_allclose(projected[1], np.array([-11, 7, 8]) / 9, atol=1e-12)
    # g3: onto g1's normal, then (a new conflict) g2's, or the other way round
    want = np.array([-43, -26, -17]) / 18 if order == 0 else np.array([-43, -28, -13]) / 18
    np.testing.assert_allclose(projected[2], want, atol=1e-12)
    for i in range(3):
        for j in range(3):
            if i != j and g[i] @ g[j] < 0:  # every originally conflicting pair
                assert projected[i] @ g[j] >= -1e-12


def test_pcgrad_leaves_non_conflicting_gradients_untouched() -> None:
    g = np.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    projected, _ = _pc(g, [[1, 2], [0, 2], [0, 1]])
    np.testing.assert_array_equal(projected[2], g[2])  # g3 conflicts with nobody
    agree = np.array([[1.0, 2.0], [2.0, 1.0], [0.5, 0.0]])
    w = gm.pcgrad_coefficients(agree @ agree.T, [[1, 2], [0, 2], [0, 1]])
    np.testing.assert_array_equal(w, [1.0, 1.0, 1.0])


def test_mgda_two_tasks_closed_form() -> None:
    g1, g2 = np.array([2.0, 0.0]), np.array([0.0, 1.0])
    k = np.stack([g1, g2]) @ np.stack([g1, g2]).T
    w, _ = gm.min_norm_coefficients(k)
    alpha = np.clip(((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2)), 0, 1)  # = 1/5
    np.testing.assert_allclose(w, [alpha, 1 - alpha])
    assert alpha == pytest.approx(0.2) and w.sum() == pytest.approx(1.0)
    d = w @ np.stack([g1, g2])  # the min-norm point is orthogonal to g1 - g2
    assert d @ (g1 - g2) == pytest.approx(0.0, abs=1e-12)
    # a gradient inside the hull's far side: the smaller one alone is the minimum
    w2, _ = gm.min_norm_coefficients(np.array([[1.0, 2.0], [2.0, 9.0]]))
    np.testing.assert_allclose(w2, [1.0, 0.0])


def test_mgda_frank_wolfe_matches_a_qp_solver() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4, 6))
    k = g @ g.T
    w, iters = gm.min_norm_coefficients(k, max_iter=2000, tol=1e-9)
    ref = minimize(
        lambda a: a @ k @ a,
        np.full(4, 0.25),
        method="SLSQP",
        bounds=[(0, 1)] * 4,
        constraints=({"type": "eq", "fun": lambda a: a.sum() - 1},),
        options={"ftol": 1e-15},
    )
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    assert w @ k @ w == pytest.approx(ref.fun, rel=1e-6) and iters > 0


def test_cagrad_with_c_zero_is_the_mean_gradient() -> None:
    g = np.array([[1.0, 0.0], [-1.0, 3.0], [0.5, -2.0]])
    w = gm.cagrad_coefficients(g @ g.T, c=0.0)
    np.testing.assert_allclose(w @ g, g.mean(0))


def test_cagrad_optimises_its_dual_objective() -> None:
    g = np.array([[1.0, 0.0], [-0.8, 1.0]])
    k, c = g @ g.T, 0.4
    d = gm.cagrad_coefficients(k, c=c, rescale=False) @ g
    g0 = g.mean(0)
    # the update stays within c|g0| of g0 and improves the worst task more than g0 does
    assert np.linalg.norm(d - g0) == pytest.approx(c * np.linalg.norm(g0), rel=1e-6)
    assert min(g @ d) > min(g @ g0)
    scaled = gm.cagrad_coefficients(k, c=c) @ g
    np.testing.assert_allclose(scaled, d / (1 + c**2))


def test_nash_solution_satisfies_the_bargaining_condition() -> None:
    g = np.array([[3.0, 0.0, 1.0], [-1.0, 2.0, 0.0]])
    k = g @ g.T
    sol = gm.nash_coefficients(k)
    np.testing.assert_allclose(k @ sol.alpha, 1.0 / sol.alpha, rtol=1e-7)
    assert (sol.alpha > 0).all() and sol.residual < 1e-8 and sol.iterations < 50
    d = sol.alpha @ g  # each task gets the same share: alpha_i g_i.d = 1
    np.testing.assert_allclose(sol.alpha * (g @ d), [1.0, 1.0], rtol=1e-7)


def test_nash_orthogonal_gradients_and_a_zero_gradient() -> None:
    k = np.diag([4.0, 0.25])
    np.testing.assert_allclose(gm.nash_coefficients(k).alpha, [0.5, 2.0], rtol=1e-8)
    zero = gm.nash_coefficients(np.diag([4.0, 0.0]))
    np.testing.assert_allclose(zero.alpha, [0.5, 0.0], rtol=1e-8)


def test_cosine_matrix() -> None:
    g = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    cos = gm.cosine_matrix(g @ g.T)
    assert cos[0, 1] == pytest.approx(1 / np.sqrt(2)) and np.isnan(cos[0, 2])


TASKS = [TaskSpec(name="a", num_outputs=2), TaskSpec(name="b", num_outputs=2)]


def test_method_classes_wrap_the_math() -> None:
    g = torch.tensor([[1.0, 0.0, 1.0], [-1.0, 2.0, 0.0]])
    k = gm.gram_matrix(g)
    nash = NashMTL(TASKS)
    w = nash.coefficients(k)  # the authors' scaling: (K / |K|_F) w = 1 / w
    np.testing.assert_allclose((k / np.linalg.norm(k)) @ w, 1.0 / w, rtol=1e-7)
    assert nash.last_solution is not None and nash.last_solution.residual < 1e-8
    mgda = MGDA(TASKS)
    assert mgda.space == "representation" and mgda.coefficients(k).sum() == pytest.approx(1.0)
    c0 = CAGrad(TASKS, CAGrad.Params(c=0.0))
    torch.testing.assert_close(combine(g, c0.coefficients(k)), g.mean(0))


def test_pcgrad_orders_are_seeded_by_step() -> None:
    t3 = [*TASKS, TaskSpec(name="c", num_outputs=2)]
    g = np.array([[1.0, 0.0, 1.0], [-1.0, 1.0, 0.2], [-0.3, -1.0, 0.0]])
    k = g @ g.T
    a, b = PCGrad(t3), PCGrad(t3)
    first = [a.coefficients(k) for _ in range(6)]
    b.load_state_dict(a.state_dict())  # resumes at call 6
    a_next, b_next = a.coefficients(k), b.coefficients(k)
    np.testing.assert_array_equal(a_next, b_next)
    assert int(a.calls) == 7 and len({tuple(np.round(f, 12)) for f in first}) > 1
