"""Optimizer construction from a method's param groups.

``Method.param_groups(base_lr)`` returns groups ``{"params", "lr", "name", ...}`` whose
``lr`` already carries the group's multiplier. Each group is split into a decay and a
no-decay sub-group that keep the group's ``lr``, ``name`` and other keys; the no-decay
sub-group gets ``weight_decay = 0``. No decay applies to every tensor with ``ndim <= 1``
(biases, norm scales, scalars) and to every parameter of a normalisation layer, following
the usual practice (e.g. Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
ICLR 2019, and the BERT/timm recipes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from transferkit.engine.config import TrainConfig
from transferkit.errors import ConfigError

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def no_decay_parameter_ids(module: nn.Module) -> set[int]:
    """ids of the parameters that must not be weight-decayed (see module docstring)."""
    ids = {id(p) for p in module.parameters() if p.ndim <= 1}
    for m in module.modules():
        if isinstance(m, NORM_TYPES):
            ids.update(id(p) for p in m.parameters(recurse=False))
    return ids


def _group_error(method: nn.Module, what: str, fix: str) -> ConfigError:
    return ConfigError(what, where=f"{type(method).__name__}.param_groups", fix=fix)


def _checked_groups(method: nn.Module, base_lr: float) -> list[Mapping[str, Any]]:
    groups = list(method.param_groups(base_lr))  # type: ignore[operator]
    owned = {id(p) for p in method.parameters()}
    seen: dict[int, str] = {}
    for i, g in enumerate(groups):
        if not isinstance(g, Mapping) or "params" not in g or "lr" not in g:
            raise _group_error(
                method,
                f"param group {i} is not a dict with 'params' and 'lr'",
                "return [{'params': [...], 'lr': base_lr * mult, 'name': ...}]",
            )
        name = str(g.get("name", i))
        for p in g["params"]:
            if id(p) not in owned:
                raise _group_error(
                    method,
                    f"param group {name!r} holds a tensor that is not a parameter of the method",
                    "register every trained tensor "
                    "as an nn.Parameter of a sub-module, so it is checkpointed",
                )
            if id(p) in seen:
                raise _group_error(
                    method,
                    f"a parameter appears in groups {seen[id(p)]!r} and {name!r}",
                    "put each parameter in exactly one group",
                )
            seen[id(p)] = name
    if not seen:
        raise _group_error(
            method,
            "the method has no parameters to train",
            "unfreeze some parameters, or use a closed-form method",
        )
    return groups


def split_weight_decay(method: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's param groups: each method group split into decay / no-decay.

    A group may set its own ``weight_decay`` (used for its decay sub-group). Every
    sub-group gets the extra key ``decay`` (bool). Empty sub-groups are dropped.
    """
    no_decay = no_decay_parameter_ids(method)
    out: list[dict[str, Any]] = []
    for i, g in enumerate(_checked_groups(method, config.lr)):
        params = list(g["params"])
        extra = {k: v for k, v in g.items() if k not in ("params", "weight_decay")}
        extra.setdefault("name", str(i))
        wd = float(g.get("weight_decay", config.weight_decay))
        decay = [p for p in params if id(p) not in no_decay]
        keep = [p for p in params if id(p) in no_decay]
        if decay:
            out.append({**extra, "params": decay, "weight_decay": wd, "decay": True})
        if keep:
            out.append({**extra, "params": keep, "weight_decay": 0.0, "decay": False})
    return out


def _fused_ok(groups: list[dict[str, Any]]) -> bool:
    """Fused kernels need floating-point parameters on the CPU or a CUDA device."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )


def build_optimizer(method: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over :func:`split_weight_decay` groups.

    Uses torch's fused implementation where it applies: one kernel for all parameters
    instead of a Python loop over tensors (on the CPU here, AdamW over 22M parameters
    takes ~0.1-0.2 s per step fused vs ~1.5-2.8 s unfused; memory bandwidth bound).
    """
    groups = split_weight_decay(method, config)
    fused = {"fused": True} if _fused_ok(groups) else {}
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            groups,
            lr=config.lr,
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
            **fused,
        )
    return torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        **fused,
    )
