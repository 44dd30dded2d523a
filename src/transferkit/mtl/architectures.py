"""How tasks share a backbone: hard parameter sharing and Multi-gate Mixture-of-Experts.

An architecture maps prepared inputs to one feature vector ``[B, out_features]`` per task;
the task heads sit on top (in :class:`~transferkit.methods.multitask.MultiTask`). It also
says which trainable parameters are *shared* (every task's loss depends on them) and which
belong to one task, which is what gradient surgery needs. Architectures whose tasks meet
in a shared representation split the forward pass in two:

* ``encode(x) -> rep``: a tuple of tensors computed by the shared parameters only;
* ``decode(rep, task) -> [B, out_features]``: the task-specific rest (parameter-free for
  hard sharing, the task's gate for MMoE).

Representation-space gradient methods (MGDA-UB) differentiate the task losses w.r.t.
``rep`` instead of the shared parameters.

* Hard sharing (Caruana 1997, https://doi.org/10.1023/A:1007379606734): ``rep = (f,)``
  with ``f = backbone(x)`` ``[B, D]``; every task reads ``f``.
* MMoE (Ma et al. 2018, https://dl.acm.org/doi/10.1145/3219819.3220007): ``E`` experts
  ``e_k(f) = W2_k relu(W1_k f)`` ``[B, H]`` shared by all tasks and one softmax gate per
  task, ``g_t(f) = softmax(V_t f)`` ``[B, E]``; task ``t`` reads
  ``h_t = sum_k g_t(f)_k e_k(f)``. ``rep = (f, stack_k e_k(f))`` (``[B, D]``, ``[B, E, H]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from transferkit.backbones.base import Backbone, Prepared

Rep = tuple[Tensor, ...]


def _trainable(params: Any) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]


def last_group_parameters(
    backbone: Backbone, among: Sequence[nn.Parameter] | None = None
) -> list[nn.Parameter]:
    """Trainable parameters of the backbone's last layer group that has any (or []);
    only those in ``among`` count when it is given."""
    named = dict(backbone.named_parameters())
    keep = None if among is None else {id(p) for p in among}
    for group in reversed(backbone.layer_groups()):
        params = _trainable(named[n] for n in group.param_names if n in named)
        params = [p for p in params if keep is None or id(p) in keep]
        if params:
            return params
    return []


class TaskArchitecture(nn.Module):
    """Base class: a backbone shared (in some way) by named tasks.

    Attributes:
        backbone: the shared feature extractor.
        task_names: the tasks, in order.
        out_features: size of each task's feature vector (input of its head).
        shares_representation: True when ``encode`` / ``decode`` are available.
    """

    shares_representation: ClassVar[bool] = True

    def __init__(self, backbone: Backbone, task_names: Sequence[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.task_names = list(task_names)
        self.out_features = int(backbone.num_features)

    def encode(self, x: Prepared) -> Rep:
        """The shared representation (tensors computed by shared parameters only)."""
        raise NotImplementedError(f"{type(self).__name__} has no shared representation")

    def decode(self, rep: Rep, task: str) -> Tensor:
        """Task ``task``'s features ``[B, out_features]`` from the shared representation."""
        raise NotImplementedError(f"{type(self).__name__} has no shared representation")

    def task_features(self, x: Prepared, tasks: Sequence[str]) -> dict[str, Tensor]:
        """Features ``[B, out_features]`` of each task in ``tasks`` (one shared pass)."""
        rep = self.encode(x)
        return {t: self.decode(rep, t) for t in tasks}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters every task depends on."""
        return _trainable(self.backbone.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Trainable parameters only ``task`` depends on (its head excluded)."""
        return []

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer (GradNorm measures gradient norms there)."""
        return last_group_parameters(self.backbone)


class HardSharing(TaskArchitecture):
    """Every task reads the pooled backbone features ``f = backbone(x)`` ``[B, D]``."""

    def encode(self, x: Prepared) -> Rep:
        return (self.backbone(x),)

    def decode(self, rep: Rep, task: str) -> Tensor:
        return rep[0]


class Expert(nn.Sequential):
    """One MMoE expert: ``Linear(D, hidden) -> ReLU -> Dropout -> Linear(hidden, out)``."""

    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )


class MMoE(TaskArchitecture):
    """Multi-gate Mixture-of-Experts on the pooled backbone features (module docstring).

    Args:
        backbone: shared feature extractor (``[B, D]`` features).
        task_names: one gate per task.
        num_experts: ``E``.
        expert_dim: ``H``, size of each expert's output and of every task's features
            (default ``D``).
        expert_hidden: hidden width of each expert (default ``H``).
        dropout: dropout inside the experts.
    """

    def __init__(
        self,
        backbone: Backbone,
        task_names: Sequence[str],
        num_experts: int = 4,
        expert_dim: int | None = None,
        expert_hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(backbone, task_names)
        d = int(backbone.num_features)
        h = expert_dim or d
        self.out_features = h
        self.experts = nn.ModuleList(
            Expert(d, expert_hidden or h, h, dropout) for _ in range(num_experts)
        )
        self.gates = nn.ModuleDict({t: nn.Linear(d, num_experts) for t in self.task_names})

    def gate_probabilities(self, features: Tensor, task: str) -> Tensor:
        """``softmax(V_t f)`` ``[B, E]``: how task ``task`` mixes the experts."""
        return torch.softmax(self.gates[task](features), dim=-1)

    def encode(self, x: Prepared) -> Rep:
        f = self.backbone(x)
        return f, torch.stack([e(f) for e in self.experts], dim=1)

    def decode(self, rep: Rep, task: str) -> Tensor:
        f, experts = rep
        g = self.gate_probabilities(f, task)
        return torch.einsum("be,beh->bh", g.to(experts.dtype), experts)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*super().shared_parameters(), *_trainable(self.experts.parameters())]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return _trainable(self.gates[task].parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The experts' output layers (the last layer shared by every task)."""
        return _trainable(p for e in self.experts for p in e[-1].parameters())
