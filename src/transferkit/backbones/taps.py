"""Layer groups as data, and their pooled outputs from ONE forward pass (hooks).

A :class:`TappedBackbone` wraps any ``nn.Module`` whose layer groups are known as lists of
parameter names. The output of group ``k`` (all but the last) is the tensor that flows
*into* group ``k + 1``: a forward pre-hook on the widest sub-module that holds only group
``k + 1``'s parameters (its "tap") captures it, and it is pooled on the spot to ``[B, C]``:

* ``[B, C, H, W]`` (or ``[B, H, W, C]`` for channels-last models): global average pooling;
* ``[B, N, C]`` tokens: the class token, or the mean of the ``N - prefix`` patch tokens;
* ``[B, C]``: as is.

The last group's output is ``forward(x)`` itself, so ``forward_intermediates(x, [-1])``
equals ``forward(x)`` by construction. When the last group is not requested the pass stops
right after the deepest requested tap fired, so probing early layers is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from transferkit.backbones.base import Backbone, LayerGroup, Prepared
from transferkit.errors import ConfigError


@dataclass(frozen=True)
class PoolRule:
    """How an intermediate tensor is pooled to ``[B, C]`` (see module docstring)."""

    channels_last: bool = False
    tokens: Literal["mean", "cls"] = "mean"
    prefix_tokens: int = 0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 4:
            return t.mean(dim=(1, 2) if self.channels_last else (2, 3))
        if t.ndim == 3:
            if self.tokens == "cls":
                return t[:, 0]
            body = t[:, self.prefix_tokens :] if t.shape[1] > self.prefix_tokens else t
            return body.mean(dim=1)
        if t.ndim == 2:
            return t
        return t.flatten(1)


class _StopForward(Exception):
    """Raised from a hook once every requested intermediate has been captured."""


def normalize_indices(indices: Sequence[int] | int, n: int, where: str) -> list[int]:
    """Validate group indices (negative ones count from the end) -> non-negative ints."""
    if isinstance(indices, int):
        indices = [indices]
    out = []
    for i in indices:
        if not isinstance(i, int) or not -n <= i < n:
            raise ConfigError(
                f"layer-group index {i!r} is out of range for {n} groups",
                where=where,
                fix=f"use indices in {-n}..{n - 1} (see layer_groups())",
            )
        out.append(i % n)
    return out


def _module_path(param_name: str) -> str:
    return param_name.rpartition(".")[0]


def find_tap(root: nn.Module, group: Sequence[str], others: set[str]) -> str:
    """Widest sub-module of ``root`` holding only params of ``group`` and reached first.

    Starts at the module owning the group's first parameter (registration order, which is
    execution order for the models we wrap) and widens while the wider module holds none of
    ``others``, skipping containers that are never called (``ModuleList``, ``ModuleDict``).
    Root-level parameters (``cls_token``) are skipped: they own no module.
    """
    first = next((p for p in group if _module_path(p)), None)
    if first is None:
        raise ConfigError(f"layer group starting with {group[0]!r} owns no sub-module to tap")
    path = _module_path(first).split(".")
    tap = ".".join(path)
    for depth in range(len(path) - 1, 0, -1):
        wider = ".".join(path[:depth])
        if any(o.startswith(wider + ".") for o in others):
            break
        if not isinstance(root.get_submodule(wider), nn.ModuleList | nn.ModuleDict):
            tap = wider  # containers that are never called cannot be hooked
    root.get_submodule(tap)  # raises if absent
    return tap


def derive_taps(root: nn.Module, groups: Sequence[Sequence[str]]) -> list[str | None]:
    """Tap module names per group (``None`` for the last group: its output is forward)."""
    taps: list[str | None] = []
    for k in range(len(groups) - 1):
        nxt = groups[k + 1]
        others = {p for j, g in enumerate(groups) if j != k + 1 for p in g}
        taps.append(find_tap(root, nxt, others))
    return [*taps, None]


class TappedBackbone(Backbone):
    """Backbone base implementing layer groups + one-pass intermediates via pre-hooks.

    Subclasses set ``self.model`` (the wrapped network), call :meth:`_init_groups` at the
    end of ``__init__`` with the group names and parameter names (relative to
    ``self.model``), and implement ``forward`` and ``prepare``.
    """

    model: nn.Module
    pool_rule: PoolRule

    def _init_groups(
        self,
        names: Sequence[str],
        groups: Sequence[Sequence[str]],
        probes: Sequence[Callable[[], Prepared]],
    ) -> None:
        """Store groups, derive taps, and measure each group's output width.

        ``probes`` build dummy batches, tried in order until one runs (a small image first:
        channel widths do not depend on the spatial size, and it is much cheaper).
        """
        self._group_names = list(names)
        self._group_params = [tuple(f"model.{p}" for p in g) for g in groups]
        self._taps = derive_taps(self.model, groups)
        was_training = self.training
        self.eval()
        try:
            for i, probe in enumerate(probes):
                try:
                    with torch.no_grad():
                        outs = self.forward_intermediates(probe(), list(range(len(groups))))
                    break
                except (RuntimeError, AssertionError, ValueError):
                    if i == len(probes) - 1:
                        raise
        finally:
            self.train(was_training)
        self._dims = [int(o.shape[-1]) for o in outs]
        self.num_features = self._dims[-1]

    @staticmethod
    def image_probes(c: int, h: int, w: int) -> list[Callable[[], torch.Tensor]]:
        """A 32x32 dummy image first (when smaller), then the model's own input size."""
        sizes = [(min(h, 32), min(w, 32)), (h, w)]
        return [lambda s=s: torch.zeros(1, c, *s) for s in dict.fromkeys(sizes)]

    def layer_groups(self) -> list[LayerGroup]:
        return [
            LayerGroup(n, p, d)
            for n, p, d in zip(self._group_names, self._group_params, self._dims, strict=True)
        ]

    def tap_modules(self) -> list[str | None]:
        """Name (in ``named_modules()``) of the module whose input is each group's output."""
        return [None if t is None else f"model.{t}" for t in self._taps]

    def forward_intermediates(self, x: Prepared, indices: Sequence[int]) -> list[torch.Tensor]:
        n = len(self._taps)
        idx = normalize_indices(indices, n, f"{self.spec}.forward_intermediates")
        wanted = sorted({i for i in idx if i != n - 1})
        captured: dict[int, torch.Tensor] = {}
        stop = (n - 1) not in idx

        def make_hook(k: int) -> Callable[..., None]:
            def hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
                if k in captured:
                    return
                captured[k] = self.pool_rule(args[0])
                if stop and len(captured) == len(wanted):
                    raise _StopForward

            return hook

        handles = [
            self.model.get_submodule(self._taps[k]).register_forward_pre_hook(make_hook(k))
            for k in wanted
        ]
        final = None
        try:
            final = self.forward(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [k for k in wanted if k not in captured]
        if missing:
            raise RuntimeError(f"layer groups {missing} of {self.spec} produced no output")
        return [final if i == n - 1 else captured[i] for i in idx]  # type: ignore[misc]
