"""Learning without Forgetting (LwF): keep the old head's outputs while learning the new task.

Li & Hoiem 2016, "Learning without Forgetting", ECCV / TPAMI 2018,
https://arxiv.org/abs/1606.09282.

With ``z`` the current source-head logits ``[B, C_s]`` and ``r`` the logits recorded from the
original network before fine-tuning ``[B, C_s]``, temperature ``T`` (the paper uses 2):

.. math::

    p = \\operatorname{softmax}(r / T), \\quad q = \\operatorname{softmax}(z / T)

    L_{kl} = T^2 \\cdot \\frac{1}{B} \\sum_b \\mathrm{KL}(p_b \\,\\|\\, q_b)
           = T^2 \\cdot \\frac{1}{B} \\sum_b \\sum_c p_{bc} (\\log p_{bc} - \\log q_{bc})

    L_{ce} = T^2 \\cdot \\frac{1}{B} \\sum_b \\Big(-\\sum_c p_{bc} \\log q_{bc}\\Big)

The paper's "modified cross-entropy" is ``L_ce`` without the ``T^2`` factor (the paper's
``y^{1/T}`` renormalisation of probabilities equals ``softmax(logits / T)``). ``L_kl`` differs
from ``L_ce`` only by the entropy of ``p``, a constant, so both have the same gradient,
``dL/dz = T (q - p) / B``; the ``T^2`` factor (Hinton et al. 2015, knowledge distillation)
keeps that gradient's size independent of ``T`` for large ``T``. The default is ``"kl"``,
which is 0 when ``z == r``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

__all__ = ["LwF", "lwf_loss"]

Form = Literal["kl", "ce"]


def _check(temperature: float, form: str) -> None:
    if not temperature > 0:
        raise ConfigError(
            f"LwF temperature T={temperature!r} must be positive",
            where="lwf T",
            fix="use T=2.0 (the paper's value)",
        )
    if form not in ("kl", "ce"):
        raise ConfigError(f"unknown LwF form {form!r}", where="lwf form", fix='use "kl" or "ce"')


def lwf_loss(
    new_source_logits: Tensor,
    recorded_source_logits: Tensor,
    T: float = 2.0,
    form: Form = "kl",
) -> Tensor:
    """LwF distillation loss between current and recorded source-head logits (scalar).

    Args:
        new_source_logits: ``z`` ``[B, C_s]``, the source head on the current backbone.
        recorded_source_logits: ``r`` ``[B, C_s]``, recorded before fine-tuning (detached).
        T: temperature.
        form: ``"kl"`` (``T^2 KL(p || q)``, zero at ``z == r``) or ``"ce"`` (``T^2 H(p, q)``).
    """
    _check(T, form)
    if new_source_logits.shape != recorded_source_logits.shape or new_source_logits.ndim != 2:
        raise DataError(
            f"LwF logits must both be [B, C_s]; got {tuple(new_source_logits.shape)} and "
            f"{tuple(recorded_source_logits.shape)}",
            where="lwf_loss(new_source_logits, recorded_source_logits)",
            fix="record the targets with the same source head and batch",
        )
    dtype = torch.promote_types(new_source_logits.dtype, torch.float32)
    log_q = F.log_softmax(new_source_logits.to(dtype) / T, dim=1)
    log_p = F.log_softmax(recorded_source_logits.detach().to(dtype) / T, dim=1)
    p = log_p.exp()
    per_example = (p * (log_p - log_q)).sum(1) if form == "kl" else -(p * log_q).sum(1)
    return per_example.mean() * (T * T)


class LwF(nn.Module):
    """LwF as a module owning a frozen copy of the original backbone + source head.

    The copy (no gradients, always in eval mode, kept in ``state_dict()``) produces the
    recorded targets on the fly, which equals recording them before fine-tuning when the
    inputs are the same (no random augmentation differences between the two calls); or pass
    targets recorded beforehand with ``recorded=``.

    Training step::

        z = source_head(backbone(x))                    # live copy of the source head
        loss = task_loss + lambda_old * lwf(z, x)

    Args:
        backbone: the original backbone (deep-copied here).
        source_head: the original task's head (deep-copied here).
        T: temperature; form: ``"kl"`` or ``"ce"`` (see :func:`lwf_loss`).
    """

    def __init__(
        self, backbone: nn.Module, source_head: nn.Module, T: float = 2.0, form: Form = "kl"
    ) -> None:
        super().__init__()
        _check(T, form)
        self.T = float(T)
        self.form: Form = form
        self.original = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(source_head))
        self.original.requires_grad_(False)
        self.original.eval()

    def train(self, mode: bool = True) -> LwF:
        super().train(mode)
        self.original.eval()
        return self

    @torch.no_grad()
    def targets(self, x: Any) -> Tensor:
        """Recorded source logits ``r`` ``[B, C_s]`` from the frozen original network."""
        return self.original(x)

    def forward(
        self, new_source_logits: Tensor, x: Any = None, recorded: Tensor | None = None
    ) -> Tensor:
        """Loss for ``new_source_logits`` against ``recorded`` or the original's output on ``x``."""
        if (x is None) == (recorded is None):
            raise ConfigError(
                "LwF needs exactly one of the inputs x or the recorded logits",
                where="LwF.forward(new_source_logits, x=..., recorded=...)",
            )
        target = self.targets(x) if recorded is None else recorded
        return lwf_loss(new_source_logits, target, self.T, self.form)

    def extra_repr(self) -> str:
        return f"T={self.T}, form={self.form!r}"
