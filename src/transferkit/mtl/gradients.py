"""Gradient-combination rules as pure functions of the tasks' Gram matrix.

Every rule here turns the ``T`` task gradients ``g_1..g_T`` (rows of ``G`` ``[T, P]``)
into ONE update ``d = sum_t w_t g_t``, and every ``w`` depends on the gradients only through
their Gram matrix ``K = G G^T`` ``[T, T]`` (``K_ij = g_i . g_j``). So the functions take
``K`` (float64 numpy, tiny) and return the coefficients ``w`` ``[T]``; the caller forms
``d = w @ G`` on the device. This also makes them cheap to run on the host, identical on
every process of a distributed run, and easy to test against hand-computed vectors.

* PCGrad (Yu et al. 2020, https://arxiv.org/abs/2001.06782): for each task ``i``, in a
  random order of the others ``j``: if ``g_i^PC . g_j < 0``,
  ``g_i^PC <- g_i^PC - (g_i^PC . g_j) / |g_j|^2 g_j``; ``d = sum_i g_i^PC``.
* MGDA (Sener & Koltun 2018, https://arxiv.org/abs/1810.04650): the min-norm point of the
  convex hull, ``min_{w in simplex} |sum_t w_t g_t|^2``; closed form for two tasks,
  ``w_1 = clip(((g_2 - g_1) . g_2) / |g_1 - g_2|^2, 0, 1)``, (pairwise) Frank-Wolfe otherwise.
* CAGrad (Liu et al. 2021, https://arxiv.org/abs/2110.14048): with ``g_0`` the mean
  gradient and ``phi = c^2 |g_0|^2``, ``w* = argmin_{w in simplex} g_w . g_0 + sqrt(phi)
  |g_w|``; ``d = (g_0 + sqrt(phi) / |g_w*| g_w*) / (1 + c^2)`` (the authors' rescaling).
* Nash-MTL (Navon et al. 2022, https://arxiv.org/abs/2202.01017): the bargaining solution
  ``d = sum_t a_t g_t`` with ``a > 0`` and ``K a = 1 / a`` (element-wise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

_TINY = 1e-20


def gram_matrix(grads: Tensor, chunk: int = 1 << 18) -> np.ndarray:
    """``K = G G^T`` of the task gradients ``grads`` ``[T, P]`` as float64 numpy.

    Computed in chunks of ``chunk`` parameters: each chunk's product in the gradients'
    own dtype, accumulated in float64 (no float64 copy of ``G``: on a 5M-parameter model
    a full float64 conversion costs ~100x the float32 product).
    """
    g = grads.detach()
    if g.dtype == torch.float64:
        return (g @ g.T).cpu().numpy()
    k = torch.zeros(g.shape[0], g.shape[0], dtype=torch.float64, device=g.device)
    for part in torch.split(g, chunk, dim=1):
        k += (part @ part.T).double()
    return k.cpu().numpy()


def cosine_matrix(gram: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities ``K_ij / sqrt(K_ii K_jj)`` (NaN for a zero gradient)."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    denom = np.outer(norms, norms)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, gram / np.where(denom > 0, denom, 1.0), np.nan)


def pcgrad_coefficients(gram: np.ndarray, orders: Sequence[Sequence[int]]) -> np.ndarray:
    """PCGrad's ``w`` (module docstring); ``orders[i]`` lists the order of the ``j != i``.

    ``g_i^PC = sum_k C_ik g_k`` is tracked through its coefficients ``C`` (so
    ``g_i^PC . g_j = C_i . K_:j``); projections onto a zero gradient are skipped.
    """
    t = len(gram)
    coef = np.eye(t)
    for i in range(t):
        for j in orders[i]:
            if j == i or gram[j, j] <= _TINY:
                continue
            dot = coef[i] @ gram[:, j]
            if dot < 0:
                coef[i, j] -= dot / gram[j, j]
    return coef.sum(axis=0)


def random_orders(num_tasks: int, rng: np.random.Generator) -> list[list[int]]:
    """For each task, a random permutation of the other tasks (PCGrad's shuffling)."""
    return [
        [int(j) for j in rng.permutation([k for k in range(num_tasks) if k != i])]
        for i in range(num_tasks)
    ]


def min_norm_pair(g11: float, g12: float, g22: float) -> float:
    """Weight ``w_1`` of ``min_{w in [0, 1]} |w g_1 + (1 - w) g_2|^2`` (``w_2 = 1 - w_1``)."""
    denom = g11 - 2.0 * g12 + g22
    if denom <= _TINY:  # g_1 == g_2: every point is the minimum
        return 0.5
    return float(np.clip((g22 - g12) / denom, 0.0, 1.0))


def _best_pair(gram: np.ndarray) -> np.ndarray:
    """The min-norm point over all two-task edges of the simplex (Frank-Wolfe's start)."""
    t = len(gram)
    best, w = np.inf, np.full(t, 1.0 / t)
    for i in range(t):
        for j in range(i + 1, t):
            a = min_norm_pair(gram[i, i], gram[i, j], gram[j, j])
            cand = np.zeros(t)
            cand[i], cand[j] = a, 1.0 - a
            cost = cand @ gram @ cand
            if cost < best:
                best, w = cost, cand
    return w


def min_norm_coefficients(
    gram: np.ndarray, max_iter: int = 250, tol: float = 1e-8
) -> tuple[np.ndarray, int]:
    """MGDA's min-norm weights ``w`` (sum 1, >= 0) and the Frank-Wolfe iterations used.

    Two tasks: closed form. More: Frank-Wolfe (Sener & Koltun, Algorithm 2) started at
    the best pair, in its pairwise variant (Lacoste-Julien & Jaggi 2015,
    https://arxiv.org/abs/1511.05932), which converges linearly on the simplex where the
    plain one zig-zags: each step moves weight from the support vertex ``a`` with the
    largest ``(K w)_a`` to the vertex ``t`` with the smallest, with the exact line search
    ``gamma = ((K w)_a - (K w)_t) / (K_aa - 2 K_at + K_tt)`` clipped to ``[0, w_a]``, until
    the duality gap ``w^T K w - min_t (K w)_t`` is below ``tol * w^T K w``.
    """
    t = len(gram)
    if t == 1:
        return np.ones(1), 0
    w = _best_pair(gram)
    if t == 2:
        return w, 0
    for it in range(max_iter):
        kw = gram @ w
        vv, k = float(w @ kw), int(np.argmin(kw))
        if vv - kw[k] <= tol * max(vv, _TINY):
            return w, it
        support = np.flatnonzero(w > 0)
        a = int(support[np.argmax(kw[support])])
        curv = gram[a, a] - 2.0 * gram[a, k] + gram[k, k]
        step = w[a] if curv <= _TINY else min(w[a], (kw[a] - kw[k]) / curv)
        w = w.copy()
        w[a] -= step
        w[k] += step
        w[a] = max(w[a], 0.0)
    return w, max_iter


def cagrad_coefficients(gram: np.ndarray, c: float = 0.4, rescale: bool = True) -> np.ndarray:
    """CAGrad's ``w`` (module docstring); ``c = 0`` gives the mean gradient exactly.

    The inner problem is solved over the simplex with ``scipy.optimize.minimize`` (SLSQP,
    as in the authors' code).
    """
    t = len(gram)
    mean = np.full(t, 1.0 / t)
    g0_sq = float(mean @ gram @ mean)
    if c == 0 or g0_sq <= _TINY:
        return mean / (1.0 + c**2) if rescale else mean
    sqrt_phi = c * np.sqrt(g0_sq)
    k_g0 = gram @ mean

    def objective(w: np.ndarray) -> float:
        return float(w @ k_g0 + sqrt_phi * np.sqrt(w @ gram @ w + 1e-12))

    res = minimize(
        objective,
        mean,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * t,
        constraints=({"type": "eq", "fun": lambda w: np.sum(w) - 1.0},),
        options={"ftol": 1e-12, "maxiter": 200},
    )
    w = np.clip(res.x, 0.0, None)
    w /= w.sum()
    lam = sqrt_phi / np.sqrt(w @ gram @ w + 1e-12)
    d = mean + lam * w
    return d / (1.0 + c**2) if rescale else d


@dataclass
class NashSolution:
    """``alpha`` with ``K alpha = 1 / alpha``; ``iterations`` of the solver, the relative
    ``residual`` ``|K alpha - 1/alpha| / |1/alpha|`` (over the non-zero gradients)."""

    alpha: np.ndarray
    iterations: int
    residual: float


def nash_coefficients(gram: np.ndarray, max_iter: int = 100, ridge: float = 1e-10) -> NashSolution:
    """Solve Nash-MTL's bargaining system ``K a = 1 / a``, ``a > 0``.

    ``a`` is the unique minimiser of the strictly convex ``f(a) = a^T K a / 2 - sum log a``
    (``grad f = K a - 1/a``). With ``a = exp(b)`` this is an unconstrained problem, solved
    by ``scipy.optimize.minimize(method="trust-exact")`` (Newton steps in a trust region,
    exact Hessian ``diag(a * K a) + diag(a) K diag(a)``) from ``b_i = -log(K_ii) / 2``
    (the solution for orthogonal gradients); it converges in a handful of iterations.
    ``K`` is scaled by its Frobenius norm for conditioning, with ``ridge`` on the diagonal
    so that degenerate cases (exactly opposite gradients) stay solvable; tasks with a zero
    gradient get ``a = 0``.
    """
    t = len(gram)
    diag = np.diag(gram)
    active = diag > 1e-12 * max(float(diag.max(initial=0.0)), _TINY)
    alpha = np.zeros(t)
    if not active.any():
        return NashSolution(alpha, 0, 0.0)
    k = gram[np.ix_(active, active)]
    scale = float(np.linalg.norm(k))
    kn = k / scale + ridge * np.eye(len(k))

    def fun(b: np.ndarray) -> tuple[float, np.ndarray]:
        a = np.exp(b)
        ka = kn @ a
        return 0.5 * float(a @ ka) - float(b.sum()), a * ka - 1.0

    def hess(b: np.ndarray) -> np.ndarray:
        a = np.exp(b)
        return np.diag(a * (kn @ a)) + np.outer(a, a) * kn

    b0 = -0.5 * np.log(np.diag(kn))
    res = minimize(
        fun,
        b0,
        jac=True,
        hess=hess,
        method="trust-exact",
        options={"gtol": 1e-12, "maxiter": max_iter},
    )
    a = np.exp(res.x) / np.sqrt(scale)
    resid = np.linalg.norm(k @ a - 1.0 / a) / np.linalg.norm(1.0 / a)
    alpha[active] = a
    return NashSolution(alpha, int(res.nit), float(resid))
