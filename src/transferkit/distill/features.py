"""Full (unpooled) layer-group outputs for feature distillation, from ONE ordinary pass.

``Backbone.forward_intermediates`` returns *pooled* ``[B, D_i]`` outputs; FitNets and
attention transfer need the maps themselves (``[B, C, H, W]`` for CNNs, ``[B, L, D]`` for
transformers). :class:`HintTap` captures them with hooks while ``backbone(x)`` runs, so
the same pass also gives the pooled features the head needs, and gradients flow through
the captured maps. Which tensor is "the output of layer group k" follows the layer groups
(data, see :mod:`transferkit.backbones.taps`):

* ``k < n - 1``: the input of the widest module that holds only group ``k + 1``'s
  parameters (what ``forward_intermediates`` pools, before pooling);
* ``k = n - 1``: the output of the widest module that holds only the last group's
  parameters when that is a map (3-D / 4-D); otherwise ``backbone(x)`` itself.

Channels-last maps (``[B, H, W, C]``, e.g. Swin) are permuted to ``[B, C, H, W]``. The
channel width of group ``k``'s map is ``layer_groups()[k].dim``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from transferkit.backbones.base import Backbone, Prepared
from transferkit.backbones.taps import find_tap, normalize_indices
from transferkit.errors import ConfigError

__all__ = ["HintTap", "forward_with_hints", "hint_dims", "pool_map"]


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], Tensor):
        return value[0]
    if isinstance(value, Mapping):
        for v in value.values():
            if isinstance(v, Tensor):
                return v
    return None


def _group_module(backbone: Backbone, k: int) -> str:
    groups = [g.param_names for g in backbone.layer_groups()]
    others = {p for j, g in enumerate(groups) if j != k for p in g}
    try:
        return find_tap(backbone, groups[k], others)
    except (ConfigError, AttributeError) as exc:
        raise ConfigError(
            f"cannot locate the module of layer group {k} of {backbone.spec} for full hint "
            f"maps ({exc})",
            where="method.params.hint_layers",
            fix="use pooled hints (hint_pool: true), which work with every backbone",
        ) from None


class HintTap:
    """Context manager capturing full outputs of layer groups ``indices`` during forward.

    Usage::

        with HintTap(backbone, [1, -1]) as tap:
            features = backbone(x)          # [B, D] pooled, as usual
        maps = tap.maps(features)           # one map per index, in the order given
    """

    def __init__(self, backbone: Backbone, indices: Sequence[int]) -> None:
        n = len(backbone.layer_groups())
        self.backbone = backbone
        self.indices = normalize_indices(list(indices), n, "method.params.hint_layers")
        self._n = n
        self._captured: dict[int, Tensor] = {}
        self._handles: list[Any] = []
        rule = getattr(backbone, "pool_rule", None)
        self._channels_last = bool(getattr(rule, "channels_last", False))

    def _store(self, k: int, value: Any) -> None:
        t = _first_tensor(value)
        if t is not None and k not in self._captured:
            self._captured[k] = t

    def __enter__(self) -> HintTap:
        self._captured = {}
        for k in sorted(set(self.indices)):
            if k < self._n - 1:
                mod = self.backbone.get_submodule(_group_module(self.backbone, k + 1))

                def pre(_m: nn.Module, args: tuple, kwargs: dict, k: int = k) -> None:
                    self._store(k, args[0] if args else kwargs)

                self._handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                mod = self.backbone.get_submodule(_group_module(self.backbone, k))

                def post(_m: nn.Module, _args: tuple, out: Any, k: int = k) -> None:
                    self._store(k, out)

                self._handles.append(mod.register_forward_hook(post))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def maps(self, final: Tensor) -> list[Tensor]:
        """The captured maps in the order of ``indices`` (``final`` for a vector last group)."""
        out = []
        for k in self.indices:
            t = self._captured.get(k)
            if k == self._n - 1 and (t is None or t.ndim < 3):
                t = final
            if t is None:
                raise RuntimeError(f"layer group {k} of {self.backbone.spec} produced no output")
            if t.ndim == 4 and self._channels_last:
                t = t.permute(0, 3, 1, 2)
            out.append(t)
        return out


def pool_map(t: Tensor) -> Tensor:
    """Global average of a map: ``[B, C, H, W] -> [B, C]``, ``[B, L, D] -> [B, D]``."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    return t


def forward_with_hints(
    backbone: Backbone, x: Prepared, indices: Sequence[int], pool: bool = False
) -> tuple[Tensor, list[Tensor]]:
    """``(backbone(x) [B, D], hint maps)`` from one forward pass.

    ``pool=True`` returns the backbone's own pooled intermediates ``[B, D_i]`` (exactly
    ``forward_intermediates``), which works for any backbone and any pair of architectures.
    """
    if not indices:
        return backbone(x), []
    if pool:
        outs = backbone.forward_intermediates(x, [*indices, -1])
        return outs[-1], list(outs[:-1])
    with HintTap(backbone, indices) as tap:
        final = backbone(x)
    return final, tap.maps(final)


def hint_dims(backbone: Backbone, indices: Sequence[int]) -> list[int]:
    """Channel width of each hint map (``layer_groups()[k].dim``)."""
    groups = backbone.layer_groups()
    idx = normalize_indices(list(indices), len(groups), "method.params.hint_layers")
    return [groups[k].dim for k in idx]
