"""Task weightings: the common interface, the registry, and the loss-based weightings.

A weighting turns the task losses ``c_t L_t`` (``c_t`` the static ``loss_weight``) into
what is optimised. Two kinds share one interface (:class:`Weighting`):

* ``kind = "loss"``: :meth:`Weighting.combine` returns ``sum_t lambda_t c_t L_t`` (plus
  any regulariser) and the weights ``lambda_t``; the usual ``loss.backward()`` follows.
  Equal weights, uncertainty weighting, DWA (here) and GradNorm (``mtl.gradnorm``).
* ``kind = "gradient"``: the per-task gradients are combined instead
  (:mod:`transferkit.mtl.gradient_methods`, applied by :mod:`transferkit.mtl.surgery`).

Weightings are ``nn.Module`` s, so their learned parameters (uncertainty log-variances,
GradNorm weights) and their state (DWA's loss history, GradNorm's initial losses) are in
the method's ``state_dict`` and checkpoints resume them exactly. Schedule hooks:
:meth:`Weighting.step_end` after every optimizer step and :meth:`Weighting.epoch_end`
at every epoch end (the multi-task method's trainer callback calls both).
Registered by name in :data:`WEIGHTINGS`; each class documents its ``Params``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.mtl.tasks import TaskSpec
from transferkit.registry import Registry

Reduce = Callable[[Tensor], Tensor]


class WeightingParams(BaseModel):
    """Base of every weighting's parameter schema (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Weighted(NamedTuple):
    """The objective to minimise and the weight ``lambda_t`` of each present task."""

    loss: Tensor
    weights: dict[str, Tensor]


class Weighting(nn.Module):
    """Base class of task weightings (see module docstring).

    Args:
        tasks: the task specs, in order (index ``t`` of every per-task tensor).
        params: a validated ``Params`` instance (defaults when None).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["loss", "gradient"]] = "loss"
    paper: ClassVar[str] = ""
    needs_last_shared: ClassVar[bool] = False
    Params: ClassVar[type[WeightingParams]] = WeightingParams

    def __init__(self, tasks: Sequence[TaskSpec], params: WeightingParams | None = None) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.task_names = [t.name for t in self.tasks]
        self.index = {n: i for i, n in enumerate(self.task_names)}
        self.hparams = params if params is not None else self.Params()

    def combine(
        self, losses: Mapping[str, Tensor], last_shared: Sequence[nn.Parameter] = ()
    ) -> Weighted:
        """``(objective, weights)`` from the present tasks' losses ``c_t L_t``."""
        raise NotImplementedError

    def step_end(self) -> None:
        """Called after every optimizer step (no-op by default)."""

    def epoch_end(self, reduce: Reduce | None = None) -> None:
        """Called at every epoch end; ``reduce`` sums a tensor over processes (or None)."""

    def lr_mult(self) -> float:
        """Learning-rate multiplier of the weighting's own parameters."""
        return float(getattr(self.hparams, "lr_mult", 1.0))


WEIGHTINGS: Registry[type[Weighting]] = Registry("task weighting", ConfigError)


def register_weighting(cls: type[Weighting]) -> type[Weighting]:
    """Class decorator registering ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    WEIGHTINGS.register(cls.name)(cls)
    return cls


def build_weighting(
    name: str, params: Mapping[str, Any] | None, tasks: Sequence[TaskSpec]
) -> Weighting:
    """The registered weighting ``name`` with validated ``params``.

    Raises :class:`ConfigError` for an unknown name (with close matches) or bad params.
    """
    from pydantic import ValidationError

    cls = WEIGHTINGS.get(name)
    try:
        p = cls.Params.model_validate(dict(params or {}))
    except ValidationError as err:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        fields = ", ".join(cls.Params.model_fields) or "none"
        raise ConfigError(
            f"invalid parameters for weighting {name!r}: {msgs}",
            where="method.params.weighting.params",
            fix=f"{name} takes: {fields}",
        ) from None
    return cls(tasks, p)


def _stack(losses: Mapping[str, Tensor]) -> Tensor:
    return torch.stack(list(losses.values()))


@register_weighting
class EqualWeighting(Weighting):
    """``L = sum_t c_t L_t`` (every ``lambda_t = 1``)."""

    name: ClassVar[str] = "equal"
    paper: ClassVar[str] = (
        "Caruana 1997, Multitask Learning, https://doi.org/10.1023/A:1007379606734"
    )

    def combine(
        self, losses: Mapping[str, Tensor], last_shared: Sequence[nn.Parameter] = ()
    ) -> Weighted:
        total = _stack(losses).sum()
        ones = {t: torch.ones((), device=total.device) for t in losses}
        return Weighted(total, ones)


class UncertaintyParams(WeightingParams):
    lr_mult: float = Field(1.0, gt=0, description="lr of the log-variances = lr * this")


@register_weighting
class UncertaintyWeighting(Weighting):
    """Homoscedastic uncertainty weighting with learned log-variances ``s_t = log sigma_t^2``.

    Kendall, Gal & Cipolla 2018 (https://arxiv.org/abs/1705.07115), eqs. 7 and 10, written
    with ``s_t`` for numerical stability (``log sigma_t = s_t / 2``), ``s_t = 0`` at start:

    * regression (Gaussian likelihood): ``exp(-s_t) / 2 * c_t L_t + s_t / 2``;
    * classification and multilabel (tempered softmax / sigmoid, the paper's
      approximation): ``exp(-s_t) * c_t L_t + s_t / 2``.

    ``lambda_t`` is the factor in front of ``c_t L_t``. An absent task contributes neither
    term (its ``s_t`` is not pushed down). The minimiser over ``s_t`` is ``s_t = log(c_t
    L_t)`` (classification: ``log(2 c_t L_t)``), so a noisy task's weight falls.
    """

    name: ClassVar[str] = "uncertainty"
    paper: ClassVar[str] = "Kendall et al. 2018, https://arxiv.org/abs/1705.07115"
    Params: ClassVar[type[WeightingParams]] = UncertaintyParams

    def __init__(self, tasks: Sequence[TaskSpec], params: WeightingParams | None = None) -> None:
        super().__init__(tasks, params)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
        factors = [0.5 if t.kind == "regression" else 1.0 for t in self.tasks]
        self.register_buffer("factors", torch.tensor(factors), persistent=False)

    def combine(
        self, losses: Mapping[str, Tensor], last_shared: Sequence[nn.Parameter] = ()
    ) -> Weighted:
        idx = torch.tensor([self.index[t] for t in losses], device=self.log_vars.device)
        s = self.log_vars.index_select(0, idx)
        lam = self.factors.index_select(0, idx) * torch.exp(-s)
        total = (lam * _stack(losses)).sum() + 0.5 * s.sum()
        return Weighted(total, dict(zip(losses, lam.detach().unbind(), strict=True)))


class DWAParams(WeightingParams):
    temperature: float = Field(2.0, gt=0, description="softmax temperature T of the ratios")


@register_weighting
class DynamicWeightAverage(Weighting):
    """Dynamic Weight Average (Liu, Johns & Davison 2019, https://arxiv.org/abs/1803.10704).

    ``lambda_t(e) = T_n exp(r_t / T) / sum_k exp(r_k / T)`` with ``r_t = Lbar_t(e-1) /
    Lbar_t(e-2)`` the ratio of the task's mean loss ``c_t L_t`` over the two previous
    epochs, ``T_n`` the number of tasks and ``T`` the temperature; ``lambda_t = 1`` in the
    first two epochs. ``Lbar_t`` averages over the micro-batches in which the task was
    present; a task absent for a whole epoch keeps its previous mean (ratio 1 next).

    State: ``history`` ``[2, T]`` (means of epochs ``e-1``, ``e-2``) and ``epochs_seen``
    are buffers; the running sums of the current epoch are extra state, so a checkpoint
    taken mid-epoch resumes exactly. Under a multi-process launch the sums are added over
    processes at the epoch end, so every process uses the same weights.
    """

    name: ClassVar[str] = "dwa"
    paper: ClassVar[str] = "Liu et al. 2019, https://arxiv.org/abs/1803.10704"
    Params: ClassVar[type[WeightingParams]] = DWAParams

    def __init__(self, tasks: Sequence[TaskSpec], params: WeightingParams | None = None) -> None:
        super().__init__(tasks, params)
        n = len(self.tasks)
        self.register_buffer("history", torch.zeros(2, n, dtype=torch.float64))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))
        self._sums = torch.zeros(2, n, dtype=torch.float64)  # row 0: loss sums, row 1: counts

    def current_weights(self) -> Tensor:
        """``lambda`` ``[T]`` for the running epoch (ones in the first two epochs)."""
        n = len(self.tasks)
        prev, prev2 = self.history[0], self.history[1]
        ratio = torch.where(prev2 > 0, prev / prev2.clamp_min(1e-300), torch.ones_like(prev))
        lam = n * torch.softmax(ratio / self.hparams.temperature, dim=0)  # type: ignore[attr-defined]
        return torch.where(self.epochs_seen >= 2, lam, torch.ones_like(lam)).float()

    def combine(
        self, losses: Mapping[str, Tensor], last_shared: Sequence[nn.Parameter] = ()
    ) -> Weighted:
        vals = _stack(losses)
        idx = torch.tensor([self.index[t] for t in losses], device=vals.device)
        lam = self.current_weights().to(vals.device).index_select(0, idx)
        if self._sums.device != vals.device:
            self._sums = self._sums.to(vals.device)
        self._sums[0].index_add_(0, idx, vals.detach().double())
        self._sums[1].index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
        total = (lam.to(vals.dtype) * vals).sum()
        return Weighted(total, dict(zip(losses, lam.unbind(), strict=True)))

    def epoch_end(self, reduce: Reduce | None = None) -> None:
        """Shift the history by one epoch and start new sums."""
        sums = self._sums.to(self.history.device)
        if reduce is not None:
            sums = reduce(sums)
        seen = sums[1] > 0
        mean = torch.where(seen, sums[0] / sums[1].clamp_min(1.0), self.history[0])
        self.history[1] = self.history[0]
        self.history[0] = mean
        self.epochs_seen += 1
        self._sums = torch.zeros_like(self._sums)

    def get_extra_state(self) -> Tensor:
        return self._sums.detach().clone()

    def set_extra_state(self, state: Any) -> None:
        self._sums = torch.as_tensor(state, dtype=torch.float64).clone()
