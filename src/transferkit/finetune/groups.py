"""Layer-group surgery for fine-tuning: freezing and discriminative learning rates.

Layer groups are data (``Backbone.layer_groups()``, input -> output), so these work on any
backbone without hand-written splitters:

* ``assign_parameters(backbone)``: the backbone's *current* parameters sorted into its
  layer groups. A parameter whose name is not listed by any group (an adapter injected
  after the groups were computed, or a base weight renamed by it) goes to the group whose
  parameter names share the longest module path with it, e.g. ``blocks.3.attn.lora_A.w``
  joins the group of ``blocks.3.attn.weight``; parameters with no unique best match are
  returned apart ("other").
* ``freeze_to(backbone, k)``: groups ``0..k-1`` frozen, ``k..`` trainable (fastai semantics);
  ``k = 0`` trains everything, ``k = n_groups`` freezes the whole backbone.
* ``set_groups_trainable(backbone, flags)``: ``requires_grad`` of each group's parameters.
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

NamedParams = list[tuple[str, nn.Parameter]]


def _module_path(name: str) -> tuple[str, ...]:
    return tuple(name.split(".")[:-1])


def _shared_depth(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def _closest_group(name: str, paths: list[list[tuple[str, ...]]]) -> int | None:
    """Index of the group sharing the longest module path with ``name`` (unique), or None."""
    own = _module_path(name)
    depths = [max((_shared_depth(own, p) for p in ps), default=0) for ps in paths]
    best = max(depths, default=0)
    if best == 0 or depths.count(best) != 1:
        return None
    return depths.index(best)


def assign_parameters(backbone: Backbone) -> tuple[list[NamedParams], NamedParams]:
    """``(per_group, other)``: every parameter of ``backbone`` exactly once, in module order.

    ``per_group[i]`` holds the ``(name, parameter)`` pairs of layer group ``i``; ``other``
    those that belong to no group (see the module docstring for the matching rule).
    """
    groups = backbone.layer_groups()
    index = {p: i for i, g in enumerate(groups) for p in g.param_names}
    paths = [[_module_path(p) for p in g.param_names] for g in groups]
    per_group: list[NamedParams] = [[] for _ in groups]
    other: NamedParams = []
    for name, p in backbone.named_parameters():
        i = index.get(name)
        if i is None:
            i = _closest_group(name, paths)
        (other if i is None else per_group[i]).append((name, p))
    return per_group, other


def set_groups_trainable(backbone: Backbone, trainable: Sequence[bool]) -> None:
    """Set ``requires_grad`` of layer group ``i``'s parameters to ``trainable[i]``.

    Parameters outside every group are left as they are.
    """
    per_group, _ = assign_parameters(backbone)
    if len(trainable) != len(per_group):
        raise ValueError(f"{len(trainable)} flags for {len(per_group)} layer groups")
    for flag, named in zip(trainable, per_group, strict=True):
        for _, p in named:
            p.requires_grad_(bool(flag))


def freeze_to(backbone: Backbone, k: int) -> None:
    """Freeze layer groups ``0..k-1`` and unfreeze groups ``k..n-1`` (and the rest)."""
    n = len(backbone.layer_groups())
    if not 0 <= k <= n:
        raise ConfigError(
            f"cannot freeze {k} layer groups: the backbone has {n}",
            fix=f"use a number between 0 and {n}",
        )
    backbone.requires_grad_(True)
    set_groups_trainable(backbone, [i >= k for i in range(n)])


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
        if any(not m > 0 for m in mults):
            raise ConfigError(
                "learning-rate multipliers must be > 0", where="method.params.group_lr_mults"
            )
        return [float(m) for m in mults]
    if layer_decay is None:
        return [1.0] * n_groups
    if not 0 < layer_decay <= 1:
        raise ConfigError(
            f"layer_decay={layer_decay} must be in (0, 1]",
            where="method.params.layer_decay",
            fix="typical values 0.65 .. 0.95",
        )
    return [layer_decay ** (n_groups - i) for i in range(n_groups)]


def discriminative_groups(
    backbone: Backbone,
    head: nn.Module,
    base_lr: float,
    multipliers: Sequence[float],
    backbone_mult: float = 1.0,
    *,
    first_group: int = 0,
    trainable_only: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer param groups: one per backbone layer group + the head.

    Group ``i`` (named ``backbone.<group name>``) gets ``lr = base_lr * backbone_mult *
    multipliers[i]``; parameters outside every layer group form ``backbone.other`` at
    ``base_lr * backbone_mult``; the head gets ``base_lr``. Every group carries ``name`` and
    ``lr_mult`` (for logging and tests). Groups before ``first_group`` are left out.
    Frozen parameters are included unless ``trainable_only``: they have no gradient, so
    optimizers skip them, and gradual unfreezing can turn them on later without rebuilding
    the optimizer. Empty groups are dropped.
    """
    groups = backbone.layer_groups()
    per_group, other = assign_parameters(backbone)
    if len(multipliers) != len(groups):
        raise ValueError(f"{len(multipliers)} multipliers for {len(groups)} layer groups")
    entries = [
        (f"backbone.{g.name}", named, backbone_mult * m)
        for i, (g, named, m) in enumerate(zip(groups, per_group, multipliers, strict=True))
        if i >= first_group
    ]
    entries.append(("backbone.other", other, backbone_mult))
    entries.append(("head", list(head.named_parameters()), 1.0))
    out = []
    for name, named, mult in entries:
        params = [p for _, p in named if p.requires_grad or not trainable_only]
        if params or name == "head":
            out.append({"params": params, "lr": base_lr * mult, "name": name, "lr_mult": mult})
    return out
