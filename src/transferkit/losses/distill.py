"""Logit distillation: Hinton knowledge distillation (KD) and decoupled KD (DKD).

**KD** — Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
https://arxiv.org/abs/1503.02531. With student logits ``z_s`` and teacher logits ``z_t``
``[B, C]`` and temperature ``T``:

.. math::

    p_t = \\operatorname{softmax}(z_t / T), \\quad q_s = \\operatorname{softmax}(z_s / T)

    L_{KD} = T^2 \\cdot \\frac{1}{B} \\sum_b \\mathrm{KL}(p_{t,b} \\,\\|\\, q_{s,b})

    \\frac{\\partial L_{KD}}{\\partial z_s} = \\frac{T^2}{T} \\cdot \\frac{q_s - p_t}{B}

The ``T^2`` factor keeps the gradient's size roughly independent of ``T`` (the paper's
section 2), so the weight against the hard-label cross-entropy needs no retuning when ``T``
changes. ``L_KD`` is 0 when ``z_s == z_t``.

**DKD** — Zhao, Cui, Song, Qiu & Liang 2022, "Decoupled Knowledge Distillation", CVPR,
https://arxiv.org/abs/2203.08679. With target class ``g`` of each example, the binary
probabilities ``b = [p_g, 1 - p_g]`` and the distribution over the non-target classes
``\\hat p_c = \\exp(z_c/T) / \\sum_{c' \\ne g} \\exp(z_{c'}/T)`` (``c != g``):

.. math::

    TCKD = \\mathrm{KL}(b_t \\| b_s), \\quad NCKD = \\mathrm{KL}(\\hat p_t \\| \\hat p_s)

    L_{DKD} = T^2 \\cdot \\frac{1}{B} \\sum_b (\\alpha \\cdot TCKD_b + \\beta \\cdot NCKD_b)

Classic KD equals ``TCKD + (1 - p_{t,g}) NCKD``; DKD frees NCKD's weight. The paper uses
``alpha = 1``, ``beta = 8`` (CIFAR-100) or ``beta = 0.5`` (ImageNet) and ``T = 4``. Without
labels (distillation on unlabelled data) the teacher's arg-max is the target class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = ["DKDLoss", "KDLoss", "dkd_loss", "dkd_terms", "kd_loss"]


def check_temperature(T: float, where: str) -> float:
    """``T`` as a float; a non-positive or non-finite one is a :class:`ConfigError`."""
    if not (isinstance(T, int | float) and 0 < float(T) < float("inf")):
        raise ConfigError(
            f"temperature T={T!r} must be a positive number",
            where=where,
            fix="use T=4.0 (a common choice) or T=1.0 for no softening",
        )
    return float(T)


def check_logits(student: Tensor, teacher: Tensor, where: str) -> None:
    """Both ``[B, C]`` with the same shape, or a :class:`DataError` naming the shapes."""
    if student.ndim != 2 or student.shape != teacher.shape:
        raise DataError(
            f"student and teacher logits must both be [B, C] with the same shape; got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}",
            where=where,
            fix="give the student a head with as many outputs as the teacher's classes",
        )


def _float(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """Hinton KD: ``T^2 * mean_b KL(softmax(z_t/T) || softmax(z_s/T))`` (scalar).

    Args:
        student_logits: ``z_s`` ``[B, C]`` (gradients flow into it).
        teacher_logits: ``z_t`` ``[B, C]`` (detached).
        T: temperature (> 0).
    """
    T = check_temperature(T, "kd_loss(T=...)")
    check_logits(student_logits, teacher_logits, "kd_loss(student_logits, teacher_logits)")
    log_q = F.log_softmax(_float(student_logits) / T, dim=1)
    log_p = F.log_softmax(_float(teacher_logits.detach()) / T, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    return kl.mean() * (T * T)


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p || q)`` per row ``[B]`` from log-probabilities (0 * log 0 taken as 0)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(1)


def _binary_log_probs(log_probs: Tensor, mask: Tensor) -> Tensor:
    """``[log p_g, log(1 - p_g)]`` ``[B, 2]`` from log-softmax ``[B, C]`` and one-hot mask."""
    log_pg = log_probs.masked_select(mask).view(-1, 1)
    log_rest = torch.logsumexp(log_probs.masked_fill(mask, float("-inf")), dim=1, keepdim=True)
    return torch.cat([log_pg, log_rest], dim=1)


def _non_target_log_probs(logits: Tensor, mask: Tensor, T: float) -> Tensor:
    """``log softmax`` over the ``C - 1`` non-target classes ``[B, C - 1]``."""
    b, c = logits.shape
    return F.log_softmax(logits.masked_select(~mask).view(b, c - 1) / T, dim=1)


def _target_classes(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None
) -> Tensor:
    if target is None:
        return teacher_logits.argmax(1)
    c = student_logits.shape[1]
    if target.shape != student_logits.shape[:1] or target.dtype.is_floating_point:
        raise DataError(
            f"DKD targets must be integer class ids [B]; got {tuple(target.shape)} "
            f"({target.dtype}) for logits {tuple(student_logits.shape)}",
            where="dkd_loss(target=...)",
            fix="pass the batch's labels, or None to use the teacher's arg-max",
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
        raise DataError(
            f"DKD target class ids must lie in 0..{c - 1}",
            where="dkd_loss(target=...)",
            fix="check that student, teacher and labels use the same classes",
        )
    return target.long()


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None, T: float = 4.0
) -> tuple[Tensor, Tensor]:
    """``(mean_b TCKD_b, mean_b NCKD_b)``, both without the ``T^2`` factor (scalars).

    Args:
        student_logits, teacher_logits: ``[B, C]`` with ``C >= 2``.
        target: class ids ``[B]``; ``None`` uses the teacher's arg-max.
        T: temperature.
    """
    T = check_temperature(T, "dkd_loss(T=...)")
    check_logits(student_logits, teacher_logits, "dkd_loss(student_logits, teacher_logits)")
    if student_logits.shape[1] < 2:
        raise DataError("DKD needs at least 2 classes", where="dkd_loss(student_logits)")
    zs, zt = _float(student_logits), _float(teacher_logits.detach())
    g = _target_classes(zs, zt, target)
    mask = F.one_hot(g, zs.shape[1]).bool()
    tckd = _kl_rows(
        _binary_log_probs(F.log_softmax(zt / T, 1), mask),
        _binary_log_probs(F.log_softmax(zs / T, 1), mask),
    )
    if zs.shape[1] == 2:  # a single non-target class: its conditional distribution is [1]
        nckd = torch.zeros_like(tckd)
    else:
        nckd = _kl_rows(_non_target_log_probs(zt, mask, T), _non_target_log_probs(zs, mask, T))
    return tckd.mean(), nckd.mean()


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 8.0,
    T: float = 4.0,
) -> Tensor:
    """Decoupled KD ``T^2 (alpha TCKD + beta NCKD)`` averaged over the batch (scalar)."""
    tckd, nckd = dkd_terms(student_logits, teacher_logits, target, T)
    return (alpha * tckd + beta * nckd) * (T * T)


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss` (stores ``T``)."""

    def __init__(self, T: float = 4.0) -> None:
        super().__init__()
        self.T = check_temperature(T, "KDLoss(T=...)")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return kd_loss(student_logits, teacher_logits, self.T)

    def extra_repr(self) -> str:
        return f"T={self.T}"


class DKDLoss(nn.Module):
    """Module form of :func:`dkd_loss` (stores ``alpha``, ``beta``, ``T``)."""

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0) -> None:
        super().__init__()
        if alpha < 0 or beta < 0:
            raise ConfigError(
                f"DKD weights must be >= 0, got alpha={alpha}, beta={beta}",
                where="DKDLoss(alpha, beta)",
                fix="use alpha=1, beta=8 (the paper's CIFAR-100 setting)",
            )
        self.alpha, self.beta = float(alpha), float(beta)
        self.T = check_temperature(T, "DKDLoss(T=...)")

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None
    ) -> Tensor:
        return dkd_loss(student_logits, teacher_logits, target, self.alpha, self.beta, self.T)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, T={self.T}"
