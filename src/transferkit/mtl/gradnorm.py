"""GradNorm: learn task weights that balance the tasks' gradient norms.

Chen, Badrinarayanan, Lee & Rabinovich 2018, https://arxiv.org/abs/1711.02257. With
learned weights ``w_t`` (``1`` at start), the network minimises ``sum_t w_t c_t L_t`` and
the weights minimise

    ``L_grad = sum_t | G_t - Gbar * r_t^alpha |``,

where ``G_t = |grad_W w_t c_t L_t|_2 = w_t n_t`` is the gradient norm of the weighted task
loss on the last shared layer ``W``, ``Gbar`` the mean of ``G_t``, and ``r_t = Ltilde_t /
mean_k Ltilde_k`` the relative inverse training rate with ``Ltilde_t = L_t(now) / L_t(0)``.
As in the paper the target ``Gbar r_t^alpha`` is a constant, so
``dL_grad / dw_t = sign(G_t - target_t) n_t``; ``L_grad`` reaches only the weights, and the
weighted loss does not. After every optimizer step the weights are renormalised to sum to
the number of tasks (:meth:`GradNorm.step_end`).

The objective returned by :meth:`GradNorm.combine` is
``sum_t w_t.detach() c_t L_t + (L_grad - L_grad.detach())``: its value is the weighted
loss and one backward pass gives both gradients. Costs one extra backward per task from
the loss to ``W`` (``torch.autograd.grad``, ``retain_graph=True``). ``L_t(0)`` is taken at
the first step each task is present and kept in a buffer (checkpointed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.mtl.tasks import TaskSpec
from transferkit.mtl.weighting import Weighted, Weighting, WeightingParams, register_weighting


class GradNormParams(WeightingParams):
    alpha: float = Field(1.5, ge=0, description="asymmetry: higher pulls rates together harder")
    lr_mult: float = Field(1.0, gt=0, description="lr of the task weights = lr * this")


def grad_norms(losses: Sequence[Tensor], params: Sequence[nn.Parameter]) -> Tensor:
    """``n_t = |grad_params L_t|_2`` for each loss (detached, ``[T]``); graph retained."""
    norms = []
    for loss in losses:
        grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
        sq = [g.detach().float().square().sum() for g in grads if g is not None]
        norms.append(torch.stack(sq).sum().sqrt() if sq else loss.new_zeros(()).float())
    return torch.stack(norms)


@register_weighting
class GradNorm(Weighting):
    """GradNorm (module docstring); ``alpha`` (1.5 in the paper's NYUv2 runs)."""

    name: ClassVar[str] = "gradnorm"
    paper: ClassVar[str] = "Chen et al. 2018, https://arxiv.org/abs/1711.02257"
    needs_last_shared: ClassVar[bool] = True
    Params: ClassVar[type[WeightingParams]] = GradNormParams

    def __init__(self, tasks: Sequence[TaskSpec], params: WeightingParams | None = None) -> None:
        super().__init__(tasks, params)
        n = len(self.tasks)
        self.task_weights = nn.Parameter(torch.ones(n))
        self.register_buffer("initial_losses", torch.zeros(n))
        self.register_buffer("has_initial", torch.zeros(n, dtype=torch.bool))

    def combine(
        self, losses: Mapping[str, Tensor], last_shared: Sequence[nn.Parameter] = ()
    ) -> Weighted:
        if not last_shared:
            raise ConfigError(
                "GradNorm needs a trainable shared layer to measure gradient norms on",
                where="method.params.weighting",
                fix="train the backbone (or its last layer group), or use another weighting",
            )
        vals = torch.stack(list(losses.values()))
        idx = torch.tensor([self.index[t] for t in losses], device=vals.device)
        w = self.task_weights.index_select(0, idx)
        first = self.initial_losses.index_select(0, idx)
        known = self.has_initial.index_select(0, idx)
        first = torch.where(known, first, vals.detach().float())
        self.initial_losses.index_copy_(0, idx, first)
        self.has_initial.index_fill_(0, idx, True)
        n = grad_norms(list(losses.values()), last_shared).to(w.dtype)
        g = w * n
        rate = vals.detach().float() / first.clamp_min(1e-12)
        target = (g.mean() * (rate / rate.mean().clamp_min(1e-12)) ** self.hparams.alpha).detach()  # type: ignore[attr-defined]
        l_grad = (g - target).abs().sum()
        total = (w.detach().to(vals.dtype) * vals).sum() + (l_grad - l_grad.detach())
        return Weighted(total, dict(zip(losses, w.detach().unbind(), strict=True)))

    @torch.no_grad()
    def step_end(self) -> None:
        """Clamp the weights to >= 1e-4 and renormalise them to sum to the task count."""
        w = self.task_weights
        w.clamp_(min=1e-4)
        w.mul_(len(self.tasks) / w.sum())
