"""Layer-group surgery for fine-tuning: freezing and discriminative learning rates.

Layer groups are data (``Backbone.layer_groups()``, input -> output), so these work on any
backbone without hand-written splitters:

* ``freeze_to(backbone, k)``: groups ``0..k-1`` frozen, ``k..`` trainable (fastai semantics);
  ``k = 0`` trains everything, ``k = n_groups`` freezes the whole backbone.
* ``discriminative_groups``: one optimizer parameter group per layer group, with
  ``lr_i = base_lr * m_i``. The multipliers come either from an explicit list (one per
  group) or from layer-wise decay, ``m_i = decay ** (n - i)`` for group ``i`` of ``n`` (the
  head gets ``m = 1``): deeper, more task-specific layers learn faster (Howard & Ruder
  2018, https://arxiv.org/abs/1801.06146; Clark et al. 2020, ELECTRA, layer-wise decay).
  The multiplier is written into each group's ``lr`` so stock schedulers honour it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.errors import ConfigError


def freeze_to(backbone: Backbone, k: int) -> None:
    """Freeze layer groups ``0..k-1`` and unfreeze groups ``k..n-1``."""
    groups = backbone.layer_groups()
    if not 0 <= k <= len(groups):
        raise ConfigError(
            f"cannot freeze {k} layer groups: the backbone has {len(groups)}",
            fix=f"use a number between 0 and {len(groups)}",
        )
    frozen = {p for g in groups[:k] for p in g.param_names}
    for name, p in backbone.named_parameters():
        p.requires_grad_(name not in frozen)


def group_multipliers(
    n_groups: int, *, layer_decay: float | None = None, mults: Sequence[float] | None = None
) -> list[float]:
    """Per-group LR multipliers ``[m_0 .. m_{n-1}]`` (input -> output)."""
    if mults is not None:
        if len(mults) != n_groups:
            raise ConfigError(
                f"{len(mults)} learning-rate multipliers given for {n_groups} layer groups",
                where="method.params.group_lr_mults",
                fix=f"give exactly {n_groups} values, input to output",
            )
        if any(m <= 0 for m in mults):
            raise ConfigError("learning-rate multipliers must be > 0",
                              where="method.params.group_lr_mults")
        return [float(m) for m in mults]
    if layer_decay is None:
        return [1.0] * n_groups
    if not 0 < layer_decay <= 1:
        raise ConfigError(f"layer_decay={layer_decay} must be in (0, 1]",
                          where="method.params.layer_decay", fix="typical values 0.65 .. 0.95")
    return [layer_decay ** (n_groups - i) for i in range(n_groups)]


def discriminative_groups(
    backbone: Backbone,
    head: nn.Module,
    base_lr: float,
    multipliers: Sequence[float],
    backbone_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimizer param groups: one per backbone layer group + the head.

    Group ``i`` gets ``lr = base_lr * backbone_mult * multipliers[i]``; the head gets
    ``base_lr``. Every group carries ``name`` and ``lr_mult`` (for logging and tests).
    Frozen parameters are included too: they have no gradient, so optimizers skip them,
    and gradual unfreezing can turn them on later without rebuilding the optimizer.
    """
    named = dict(backbone.named_parameters())
    out = []
    for g, m in zip(backbone.layer_groups(), multipliers, strict=True):
        params = [named[n] for n in g.param_names]
        if params:
            mult = backbone_mult * m
            out.append({"params": params, "lr": base_lr * mult, "name": f"backbone.{g.name}",
                        "lr_mult": mult})
    head_params = list(head.parameters())
    out.append({"params": head_params, "lr": base_lr, "name": "head", "lr_mult": 1.0})
    return out
