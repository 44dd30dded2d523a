"""DELTA: keep the fine-tuned model's feature maps close to the source model's, with attention.

Li, Xiong, Wang, Rao, Liu, Chen & Huan 2019, "DELTA: DEep Learning Transfer using Feature
Map with Attention for Convolutional Networks", ICLR, https://arxiv.org/abs/1901.09229.

For chosen layers ``j`` with feature maps ``FM_j`` of shape ``[B, C_j, *spatial]`` (or pooled
``[B, C_j]``), current weights ``w`` and frozen starting weights ``w^0``:

.. math::

    \\Omega(w) = \\sum_j \\sum_{i=1}^{C_j} W_j^i \\cdot \\frac{1}{B} \\sum_{b=1}^{B}
                 \\lVert FM_j^i(w, x_b) - FM_j^i(w^0, x_b) \\rVert_2^2

where the norm runs over the spatial positions of channel ``i``. The channel weights
``W_j`` (each ``[C_j]``, summing to 1 over channels) are

* ``attention="none"``: uniform, ``W_j^i = 1 / C_j``;
* ``attention="supervised"`` (the paper's): ``W_j = softmax_i(dL_j^i / tau)`` with
  ``dL_j^i = L(source with channel i of layer j removed) - L(source)``, the increase of the
  labelled loss on a batch when that channel is removed, estimated once with the frozen
  source model and a given head (see :mod:`transferkit.losses.delta_attention`).

The paper adds ``beta ||w_new||^2`` on the new head; combine with
:class:`~transferkit.losses.l2sp.L2SP` (``alpha=0``) for that part.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError
from transferkit.losses.delta_attention import (
    OutputCapture,
    channel_attention,
    group_module_names,
)

__all__ = ["DELTA", "channel_distances", "delta_loss"]


def channel_distances(feature: Tensor, source_feature: Tensor, channel_dim: int = 1) -> Tensor:
    """Per-channel ``mean_b ||FM^i(w, x_b) - FM^i(w^0, x_b)||^2``, shape ``[C]``.

    Args:
        feature: current feature map ``[B, C, *spatial]`` or ``[B, C]`` (channels on
            ``channel_dim``; e.g. ``-1`` for token features ``[B, L, D]``).
        source_feature: the same layer from the frozen source model, same shape (detached).
    """
    if feature.shape != source_feature.shape or feature.ndim < 2:
        raise DataError(
            f"DELTA feature maps must share a shape [B, C, ...]; got {tuple(feature.shape)} "
            f"and {tuple(source_feature.shape)}",
            where="delta_loss(features, source_features)",
            fix="take both from the same layers of the same architecture",
        )
    diff = (feature - source_feature.detach()).movedim(channel_dim, 1)
    per_sample = diff.pow(2).flatten(2).sum(-1) if diff.ndim > 2 else diff.pow(2)  # [B, C]
    return per_sample.mean(0)


def delta_loss(
    features: Sequence[Tensor],
    source_features: Sequence[Tensor],
    channel_weights: Sequence[Tensor] | None = None,
    channel_dim: int = 1,
) -> Tensor:
    """DELTA penalty ``sum_j sum_i W_j^i mean_b ||FM_j^i(w) - FM_j^i(w^0)||^2`` (scalar).

    Args:
        features: per layer ``j``, current features ``[B, C_j, ...]``.
        source_features: per layer, the frozen source model's features, same shapes.
        channel_weights: per layer, ``W_j`` of shape ``[C_j]``; ``None`` (or an empty tensor
            for a layer) means uniform ``1 / C_j``.
        channel_dim: channel axis of every feature map.
    """
    if len(features) != len(source_features) or not features:
        raise DataError(
            f"DELTA got {len(features)} current and {len(source_features)} source feature "
            "maps; they must be the same, non-zero number of layers",
            where="delta_loss(features, source_features)",
        )
    weights = list(channel_weights) if channel_weights is not None else [None] * len(features)
    if len(weights) != len(features):
        raise DataError(
            f"DELTA got {len(weights)} channel weight vectors for {len(features)} layers",
            where="delta_loss(channel_weights)",
        )
    total = features[0].new_zeros(())
    for f, f0, w in zip(features, source_features, weights, strict=True):
        dist = channel_distances(f, f0, channel_dim if f.ndim > 2 else 1)
        if w is None or w.numel() == 0:
            total = total + dist.mean()
            continue
        if w.shape != dist.shape:
            raise DataError(
                f"DELTA channel weights have shape {tuple(w.shape)}, the layer has "
                f"{dist.numel()} channels",
                where="delta_loss(channel_weights)",
                fix="fit the attention on the same layers the loss uses",
            )
        total = total + (w.to(dist) * dist).sum()
    return total


class DELTA(nn.Module):
    """DELTA as a module: a frozen deep copy of the starting backbone plus layer choice.

    Choose layers either by layer-group ``indices`` (pooled ``[B, D_j]`` features from the
    :class:`~transferkit.backbones.base.Backbone`'s ``forward_intermediates``) or by module
    ``layers`` names (full feature maps ``[B, C, H, W]`` captured by forward hooks; works
    with any ``nn.Module``). The frozen copy never receives gradients and stays in eval
    mode whatever ``.train()`` is called on a parent module; its weights and the fitted
    attention are buffers/parameters in ``state_dict()`` so resume is exact. The copy
    doubles the backbone's memory. A live model with BatchNorm in train mode normalises with
    batch statistics while the copy uses running ones, so the penalty is exactly 0 at the
    start only when the live model is in eval mode (or has no BatchNorm).

    Training step::

        out, feats = delta.features(backbone, x)        # ONE forward of the live model
        loss = task_loss(head(out), y) + alpha * delta(x, feats)

    Args:
        backbone: the pretrained model at its starting point (deep-copied here).
        indices: layer-group indices (Backbone only); negative counts from the end.
        layers: module names (``dict(model.named_modules())`` keys) to hook instead.
        attention: ``"none"`` (uniform channel weights) or ``"supervised"`` (call
            :meth:`fit_attention` once before training).
        channel_dim: channel axis of hooked module outputs (``1`` for ``[B, C, H, W]``,
            ``-1`` for token features ``[B, L, D]``); pooled features use axis 1.
        group_modules: with ``indices`` and supervised attention, the module names whose
            outputs the layer groups produce (inferred from parameter names if omitted).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        indices: Sequence[int] | None = None,
        layers: Sequence[str] | None = None,
        attention: Literal["none", "supervised"] = "none",
        channel_dim: int = 1,
        group_modules: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if (indices is None) == (layers is None) or not (indices or layers):
            raise ConfigError(
                "DELTA needs exactly one non-empty choice of layers",
                where="DELTA(indices=..., layers=...)",
                fix="pass indices=[...] (layer groups) or layers=['module.name', ...]",
            )
        if attention not in ("none", "supervised"):
            raise ConfigError(
                f"unknown DELTA attention {attention!r}",
                where="DELTA(attention=...)",
                fix='use "none" or "supervised"',
            )
        if indices is not None and not hasattr(backbone, "forward_intermediates"):
            raise ConfigError(
                f"{type(backbone).__name__} has no forward_intermediates, so layer-group "
                "indices cannot be used",
                where="DELTA(indices=...)",
                fix="pass layers=[module names] to hook module outputs instead",
            )
        self.indices = list(indices) if indices is not None else None
        self.layers = list(layers) if layers is not None else None
        self.attention = attention
        self.channel_dim = channel_dim
        self.group_modules = list(group_modules) if group_modules is not None else None
        self.source = copy.deepcopy(backbone)
        self.source.requires_grad_(False)
        self.source.eval()
        if self.layers is not None:
            OutputCapture(self.source, self.layers).close()  # validates the names now
        for j in range(self.num_layers):
            self.register_buffer(f"attention_{j}", torch.empty(0), persistent=True)

    @property
    def num_layers(self) -> int:
        return len(self.indices if self.indices is not None else self.layers or [])

    def train(self, mode: bool = True) -> DELTA:
        super().train(mode)
        self.source.eval()
        return self

    def channel_weights(self) -> list[Tensor]:
        """Fitted ``W_j`` per layer (empty tensors mean uniform ``1 / C_j``)."""
        return [getattr(self, f"attention_{j}") for j in range(self.num_layers)]

    @property
    def attention_fitted(self) -> bool:
        return all(w.numel() > 0 for w in self.channel_weights())

    def features(self, model: nn.Module, x: Any) -> tuple[Tensor, list[Tensor]]:
        """``(model output [B, D], features at the chosen layers)`` from one forward pass."""
        if self.indices is not None:
            outs = model.forward_intermediates(x, [*self.indices, -1])
            return outs[-1], list(outs[:-1])
        assert self.layers is not None
        with OutputCapture(model, self.layers) as store:
            out = model(x)
        return out, [store[name] for name in self.layers]

    def forward(self, x: Any, features: Sequence[Tensor]) -> Tensor:
        """Penalty for the live model's ``features`` (from :meth:`features`) on inputs ``x``."""
        if self.attention == "supervised" and not self.attention_fitted:
            raise ConfigError(
                "DELTA attention is 'supervised' but fit_attention() was never called",
                where="DELTA.forward",
                fix="call delta.fit_attention(x, y, head) once before training",
            )
        with torch.no_grad():
            _, source_features = self.features(self.source, x)
        weights = self.channel_weights() if self.attention == "supervised" else None
        return delta_loss(features, source_features, weights, self.channel_dim)

    def fit_attention(
        self,
        x: Any,
        y: Tensor,
        head: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        temperature: float = 1.0,
        channels_per_pass: int | None = None,
    ) -> list[Tensor]:
        """Estimate and store ``W_j = softmax(dL_j / temperature)`` from a labelled batch.

        ``head`` maps the source model's output to predictions; ``loss_fn(pred, y)`` returns
        per-example losses (default: cross-entropy, ``reduction="none"``).
        """
        names = self.layers
        if names is None:
            assert self.indices is not None
            names = self.group_modules or group_module_names(self.source, self.indices)
            if len(names) != len(self.indices):
                raise ConfigError(
                    f"{len(names)} group_modules for {len(self.indices)} indices",
                    where="DELTA(group_modules=...)",
                )
        weights = channel_attention(
            self.source,
            head,
            x,
            y,
            names,
            loss_fn=loss_fn,
            temperature=temperature,
            channel_dim=self.channel_dim,
            channels_per_pass=channels_per_pass,
        )
        if self.indices is not None:
            dims = [f.shape[1] for f in self.features(self.source, x)[1]]
            for name, w, d in zip(names, weights, dims, strict=True):
                if w.numel() != d:
                    raise ConfigError(
                        f"module {name!r} outputs {w.numel()} channels but its layer group's "
                        f"pooled feature has {d}",
                        where="DELTA(group_modules=...)",
                        fix="name the module whose output the layer group pools, or check "
                        "channel_dim",
                    )
        for j, w in enumerate(weights):
            setattr(self, f"attention_{j}", w.detach().clone())
        return weights

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # Attention buffers start empty; take the saved shape so a fitted state loads.
        for j in range(self.num_layers):
            key = f"{prefix}attention_{j}"
            if key in state_dict:
                own = getattr(self, f"attention_{j}")
                setattr(self, f"attention_{j}", own.new_empty(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        where = f"indices={self.indices}" if self.indices is not None else f"layers={self.layers}"
        return f"{where}, attention={self.attention!r}, channel_dim={self.channel_dim}"
