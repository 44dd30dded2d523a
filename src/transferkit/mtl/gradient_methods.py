"""Gradient-based multi-task methods: PCGrad, MGDA-UB, CAGrad, Nash-MTL.

Each is a :class:`GradientMethod`: a registered weighting of kind ``"gradient"`` that maps
the Gram matrix ``K`` of the present tasks' gradients to the coefficients ``w`` of the
update ``d = sum_t w_t g_t`` (math in :mod:`transferkit.mtl.gradients`). Where the
gradients are taken is the ``space`` parameter:

* ``"params"``: w.r.t. the shared parameters (one ``torch.autograd.grad`` per task);
* ``"representation"``: w.r.t. the shared representation ``rep`` the architecture's
  ``encode`` returns (Sener & Koltun's "upper bound" MGDA-UB: per-task gradients cost a
  backward through the task heads only, then one backward of ``sum_t w_t c_t L_t``
  through the shared encoder).

:mod:`transferkit.mtl.surgery` does the autograd work and writes ``.grad``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from transferkit.mtl import gradients as gm
from transferkit.mtl.tasks import TaskSpec
from transferkit.mtl.weighting import Weighting, WeightingParams, register_weighting

Space = Literal["params", "representation"]


class GradientParams(WeightingParams):
    space: Space = Field("params", description='gradients w.r.t. "params" or "representation"')


class GradientMethod(Weighting):
    """Base of the gradient methods: ``coefficients(K) -> w`` (both float64 numpy)."""

    kind: ClassVar[Literal["loss", "gradient"]] = "gradient"
    Params: ClassVar[type[WeightingParams]] = GradientParams

    @property
    def space(self) -> Space:
        return self.hparams.space  # type: ignore[attr-defined,no-any-return]

    def coefficients(self, gram: np.ndarray) -> np.ndarray:
        """``w`` ``[T']`` for the Gram matrix ``[T', T']`` of the present tasks."""
        raise NotImplementedError


class PCGradParams(GradientParams):
    seed: int = Field(0, description="seed of the per-step random projection orders")


@register_weighting
class PCGrad(GradientMethod):
    """Projecting Conflicting Gradients (Yu et al. 2020).

    The random order of projections is drawn from a generator seeded with
    ``(seed, step)``, ``step`` counting calls in a buffer: identical on every process and
    after a resume.
    """

    name: ClassVar[str] = "pcgrad"
    paper: ClassVar[str] = "Yu et al. 2020, Gradient Surgery, https://arxiv.org/abs/2001.06782"
    Params: ClassVar[type[WeightingParams]] = PCGradParams

    def __init__(self, tasks: Sequence[TaskSpec], params: WeightingParams | None = None) -> None:
        super().__init__(tasks, params)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def coefficients(self, gram: np.ndarray) -> np.ndarray:
        step = int(self.calls)
        self.calls += 1
        rng = np.random.default_rng([self.hparams.seed, step])  # type: ignore[attr-defined]
        return gm.pcgrad_coefficients(gram, gm.random_orders(len(gram), rng))


class MGDAParams(GradientParams):
    space: Space = Field(
        "representation", description='"representation" (MGDA-UB) or "params" (exact MGDA)'
    )
    max_iter: int = Field(250, ge=1, description="Frank-Wolfe iterations (more than 2 tasks)")
    tol: float = Field(1e-8, gt=0, description="relative duality gap that stops Frank-Wolfe")


@register_weighting
class MGDA(GradientMethod):
    """Multiple-gradient descent, min-norm point of the task gradients (Sener & Koltun
    2018). Weights are convex (``w >= 0``, ``sum w = 1``); default space is the shared
    representation (MGDA-UB)."""

    name: ClassVar[str] = "mgda"
    paper: ClassVar[str] = "Sener & Koltun 2018, https://arxiv.org/abs/1810.04650"
    Params: ClassVar[type[WeightingParams]] = MGDAParams

    def coefficients(self, gram: np.ndarray) -> np.ndarray:
        p = self.hparams
        w, _ = gm.min_norm_coefficients(gram, p.max_iter, p.tol)  # type: ignore[attr-defined]
        return w


class CAGradParams(GradientParams):
    c: float = Field(0.4, ge=0, description="radius c of the ball around the mean gradient")
    rescale: bool = Field(True, description="divide the update by 1 + c^2 (authors' default)")


@register_weighting
class CAGrad(GradientMethod):
    """Conflict-Averse Gradient descent (Liu et al. 2021), ``c = 0.4`` by default."""

    name: ClassVar[str] = "cagrad"
    paper: ClassVar[str] = "Liu et al. 2021, https://arxiv.org/abs/2110.14048"
    Params: ClassVar[type[WeightingParams]] = CAGradParams

    def coefficients(self, gram: np.ndarray) -> np.ndarray:
        p = self.hparams
        return gm.cagrad_coefficients(gram, p.c, p.rescale)  # type: ignore[attr-defined]


class NashParams(GradientParams):
    max_iter: int = Field(100, ge=1, description="trust-region Newton iterations (at most)")


@register_weighting
class NashMTL(GradientMethod):
    """Nash-MTL bargaining (Navon et al. 2022).

    Like the authors' implementation, the system is solved for ``K / |K|_F``: the weights
    are ``a' = sqrt(|K|_F) a*`` with ``a*`` the solution of ``K a = 1 / a``, so the update
    has the gradients' own scale (``|sum_t a*_t g_t| = sqrt(T)`` whatever the gradients);
    ``K a' = |K|_F / a'``. The last solve is kept in ``last_solution`` (iterations,
    residual). The authors' cvxpy sequence of convex approximations is replaced by an exact
    trust-region Newton solve (``mtl.gradients.nash_coefficients``).
    """

    name: ClassVar[str] = "nash"
    paper: ClassVar[str] = "Navon et al. 2022, Nash-MTL, https://arxiv.org/abs/2202.01017"
    Params: ClassVar[type[WeightingParams]] = NashParams

    def __init__(self, tasks: Sequence[TaskSpec], params: WeightingParams | None = None) -> None:
        super().__init__(tasks, params)
        self.last_solution: gm.NashSolution | None = None

    def coefficients(self, gram: np.ndarray) -> np.ndarray:
        sol = gm.nash_coefficients(gram, self.hparams.max_iter)  # type: ignore[attr-defined]
        self.last_solution = sol
        return sol.alpha * np.sqrt(np.linalg.norm(gram))


def combine(grads: Tensor, weights: np.ndarray) -> Tensor:
    """``d = sum_t w_t g_t`` for ``grads`` ``[T, P]`` and numpy ``weights`` ``[T]``."""
    w = torch.as_tensor(weights, dtype=grads.dtype, device=grads.device)
    return w @ grads
