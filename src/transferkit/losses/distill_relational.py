"""Relational knowledge distillation (RKD): match the *structure* of a batch of embeddings.

Park, Kim, Lu & Cho 2019, "Relational Knowledge Distillation", CVPR,
https://arxiv.org/abs/1904.05068. For embeddings ``t`` (teacher ``[B, D_t]``) and ``s``
(student ``[B, D_s]``; the widths may differ) and the Huber loss ``l_delta`` (``delta = 1``):

Distance-wise, with ``mu`` the mean distance over the ``B (B - 1)`` ordered pairs ``i != j``:

.. math::

    \\psi_D(t_i, t_j) = \\frac{1}{\\mu} \\|t_i - t_j\\|_2, \\qquad
    L_{RKD-D} = \\operatorname{mean}_{i \\ne j} l_\\delta(\\psi_D(t_i, t_j), \\psi_D(s_i, s_j))

Angle-wise, with ``e_{ij} = (t_i - t_j) / ||t_i - t_j||_2``:

.. math::

    \\psi_A(t_i, t_j, t_k) = \\langle e_{ij}, e_{kj} \\rangle, \\qquad
    L_{RKD-A} = \\operatorname{mean}_{i, j, k} l_\\delta(\\psi_A(t_i,t_j,t_k), \\psi_A(s_i,s_j,s_k))

``L_RKD = lambda_D L_RKD-D + lambda_A L_RKD-A``; the paper uses ``lambda_D = 25`` and
``lambda_A = 50`` for classification (``1`` and ``2`` for metric learning). Both terms are
invariant to rotating, translating or uniformly scaling either embedding, so they are 0
whenever the student's embedding is such a transform of the teacher's. The angle term
costs ``O(B^2 D)`` memory for the ``[B, B, D]`` difference vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = ["RKDLoss", "rkd_angle_loss", "rkd_distance_loss", "rkd_loss"]

_EPS = 1e-12


def _float(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _check(s: Tensor, t: Tensor, where: str) -> None:
    if s.ndim != 2 or t.ndim != 2 or s.shape[0] != t.shape[0]:
        raise DataError(
            f"RKD needs student and teacher embeddings [B, D] with the same B; got "
            f"{tuple(s.shape)} and {tuple(t.shape)}",
            where=where,
            fix="pass pooled features (one vector per example)",
        )
    if s.shape[0] < 2:
        raise DataError(
            "RKD compares pairs of examples and needs a batch of at least 2",
            where=where,
            fix="use batch_size >= 2 (and drop_last=True if the last batch can hold 1)",
        )


def _normalised_distances(e: Tensor) -> Tensor:
    """``||e_i - e_j|| / mu`` ``[B, B]`` with ``mu`` the mean over pairs ``i != j``."""
    sq = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1)
    d = sq.clamp_min(_EPS).sqrt()  # clamp: a finite (zero) gradient at i == j and duplicates
    b = e.shape[0]
    off = ~torch.eye(b, dtype=torch.bool, device=e.device)
    mu = d[off].mean().clamp_min(_EPS)
    return d / mu


def rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Distance-wise RKD: Huber between mean-normalised pairwise distances (scalar)."""
    _check(student, teacher, "rkd_distance_loss(student, teacher)")
    s, t = _float(student), _float(teacher.detach())
    with torch.no_grad():
        dt = _normalised_distances(t)
    ds = _normalised_distances(s)
    off = ~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    return F.smooth_l1_loss(ds[off], dt[off])


def _angles(e: Tensor) -> Tensor:
    """``<e_ij, e_kj>`` ``[B, B, B]`` (``j`` is the vertex): unit difference vectors' cosines."""
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # diff[j, i] = e_i - e_j
    unit = F.normalize(diff, p=2, dim=2, eps=_EPS)
    return torch.bmm(unit, unit.transpose(1, 2))  # [j, i, k] = <e_ij, e_kj>


def rkd_angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Angle-wise RKD: Huber between cosines of angles of every triplet (scalar)."""
    _check(student, teacher, "rkd_angle_loss(student, teacher)")
    with torch.no_grad():
        at = _angles(_float(teacher.detach()))
    return F.smooth_l1_loss(_angles(_float(student)), at)


def rkd_loss(
    student: Tensor,
    teacher: Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> Tensor:
    """``distance_weight * L_RKD-D + angle_weight * L_RKD-A`` (scalar); a 0 weight skips."""
    total = _float(student).new_zeros(())
    if distance_weight:
        total = total + distance_weight * rkd_distance_loss(student, teacher)
    if angle_weight:
        total = total + angle_weight * rkd_angle_loss(student, teacher)
    return total


class RKDLoss(nn.Module):
    """Module form of :func:`rkd_loss` (stores the paper's weights ``25`` and ``50``)."""

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        if distance_weight < 0 or angle_weight < 0:
            raise ConfigError(
                f"RKD weights must be >= 0, got {distance_weight} and {angle_weight}",
                where="RKDLoss(distance_weight, angle_weight)",
                fix="use the paper's 25 and 50",
            )
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return rkd_loss(student, teacher, self.distance_weight, self.angle_weight)

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"
