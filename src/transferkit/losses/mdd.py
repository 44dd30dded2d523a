"""Margin Disparity Discrepancy (MDD): adversarial auxiliary head with a margin.

Zhang, Liu, Long & Jordan 2019, "Bridging Theory and Algorithm for Domain Adaptation",
ICML, https://arxiv.org/abs/1904.05801.

With main-head logits ``y`` (predictions ``h = argmax y``, no gradient) and auxiliary-head
logits ``y'`` computed from gradient-reversed features, ``p' = softmax(y')``:

.. math::

    D_\\gamma = \\mathbb{E}_t \\log\\big(1 - p'_t[h_t]\\big)
        - \\gamma\\, \\mathbb{E}_s \\big(-\\log p'_s[h_s]\\big)

The auxiliary head maximises ``D_gamma`` (agree with the main head on source, disagree on
target); the features minimise it. With the GRL between features and auxiliary head a single
minimisation does both, of

.. math::

    L_{mdd} = -D_\\gamma = \\gamma\\, \\mathrm{CE}(y'_s, h_s)
        + \\mathbb{E}_t\\big[-\\log(1 - p'_t[h_t])\\big] \\;\\ge 0

(the target term is the paper's "modified log loss"). ``log(1 - p'[h])`` is computed stably
as ``logsumexp_{j != h} y'_j - logsumexp_j y'_j``. The paper uses margins ``gamma`` in 2..4.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError
from transferkit.losses.adversarial import GradientReversal

__all__ = ["MDDHeads", "MarginDisparityDiscrepancy", "log_one_minus_softmax", "mdd_loss"]


def _check_margin(margin: float) -> None:
    if not margin > 0:
        raise ConfigError(
            f"MDD margin={margin!r} must be positive",
            where="mdd margin",
            fix="use a margin between 2 and 4 (the paper uses 4 on Office-31)",
        )


def log_one_minus_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """``log(1 - softmax(logits)[i, index[i]])`` per row, stable: ``[B, C], [B] -> [B]``."""
    mask = F.one_hot(index, logits.shape[-1]).bool()
    others = logits.masked_fill(mask, float("-inf")).logsumexp(-1)
    return others - logits.logsumexp(-1)


def _check_logits(y: Tensor, y_adv: Tensor, domain: str) -> None:
    if y.ndim != 2 or y.shape != y_adv.shape or y.shape[0] < 1 or y.shape[1] < 2:
        raise DataError(
            f"MDD needs {domain} main and auxiliary logits of one shape [B, C] with C >= 2, got "
            f"{tuple(y.shape)} and {tuple(y_adv.shape)}",
            where=f"mdd_loss({domain})",
            fix="give the auxiliary head the same number of classes as the main head",
        )


def mdd_loss(
    y_s: Tensor, y_s_adv: Tensor, y_t: Tensor, y_t_adv: Tensor, margin: float = 4.0
) -> Tensor:
    """``gamma * CE(y_s_adv, argmax y_s) + mean(-log(1 - softmax(y_t_adv)[argmax y_t]))``.

    Shapes ``[B_s, C]`` (source) and ``[B_t, C]`` (target). ``y_*_adv`` must come from the
    auxiliary head applied to gradient-reversed features (see :class:`MDDHeads`).
    """
    _check_margin(margin)
    _check_logits(y_s, y_s_adv, "source")
    _check_logits(y_t, y_t_adv, "target")
    h_s, h_t = y_s.detach().argmax(-1), y_t.detach().argmax(-1)
    source = F.cross_entropy(y_s_adv, h_s)
    target = -log_one_minus_softmax(y_t_adv, h_t).mean()
    return margin * source + target


class MarginDisparityDiscrepancy(nn.Module):
    """MDD as a module: ``(y_s, y_s_adv, y_t, y_t_adv) -> scalar`` (see :func:`mdd_loss`)."""

    def __init__(self, margin: float = 4.0) -> None:
        super().__init__()
        _check_margin(margin)
        self.margin = float(margin)

    def forward(self, y_s: Tensor, y_s_adv: Tensor, y_t: Tensor, y_t_adv: Tensor) -> Tensor:
        return mdd_loss(y_s, y_s_adv, y_t, y_t_adv, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class MDDHeads(nn.Module):
    """Main head and adversarial auxiliary head: ``features [B, D] -> (y [B, C], y_adv [B, C])``.

    ``y = head(features)``; ``y_adv = adv_head(grl(features))``, so the auxiliary head's
    gradient reaches the features reversed and scaled by ``grl.lambda_``.
    """

    def __init__(
        self, head: nn.Module, adv_head: nn.Module, grl: GradientReversal | None = None
    ) -> None:
        super().__init__()
        self.head = head
        self.adv_head = adv_head
        self.grl = grl if grl is not None else GradientReversal(1.0)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(features), self.adv_head(self.grl(features))
