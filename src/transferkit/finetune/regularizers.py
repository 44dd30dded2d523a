"""The regularisers against forgetting that ``finetune`` adds to its task loss, as one module.

Given a fine-tuned backbone ``g_w`` (start point ``g_{w^0}``), head ``h`` and optional live
source head ``h_s``, one training step computes ``f = g_w(x)`` ``[B, D]`` (and, for DELTA,
the pooled layer-group outputs ``FM_j`` from the *same* forward pass via
``forward_intermediates(x, [*layers, -1])``) and the penalties

* ``l2sp  = alpha/2 ||w - w^0||^2 + beta/2 ||w_head||^2``         (:mod:`losses.l2sp`)
* ``delta = alpha * sum_j sum_i W_j^i mean_b ||FM_j^i(w) - FM_j^i(w^0)||^2``
  (:mod:`losses.delta`; a frozen copy of the start backbone gives ``FM(w^0)``)
* ``bss   = eta * sum_{i<=k} sigma_{min,i}(f)^2``                   (:mod:`losses.bss`)
* ``lwf   = lambda * T^2 KL(softmax(h_s^0(g_{w^0}(x))/T) || softmax(h_s(f)/T))``
  (:mod:`losses.lwf`; a frozen copy of backbone + source head gives the targets)

each already weighted, so ``loss = task_loss + sum of the penalties``. The frozen copies
(DELTA, LwF) and the L2-SP snapshot are built when this module is, i.e. from the pretrained
weights, live in ``state_dict()`` (so a resumed run keeps the original start point) and
double the backbone's memory each.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from transferkit.backbones.base import Backbone
from transferkit.errors import ConfigError
from transferkit.finetune.params import BSSParams, DeltaParams, L2SPParams, LwFParams
from transferkit.losses.bss import bss_loss
from transferkit.losses.delta import DELTA
from transferkit.losses.l2sp import L2SP, l2sp_loss
from transferkit.losses.lwf import LwF


def _check_layers(layers: list[int], n_groups: int) -> list[int]:
    bad = [i for i in layers if not -n_groups <= i < n_groups]
    if bad:
        raise ConfigError(
            f"DELTA layer-group indices {bad} are out of range for {n_groups} layer groups",
            where="method.params.delta.layers",
            fix=f"use indices in {-n_groups}..{n_groups - 1} (negative counts from the end)",
        )
    return list(layers)


class Regularizers(nn.Module):
    """Holds the configured regularisers' state; :meth:`penalties` computes their terms.

    Args:
        backbone: the backbone at its starting point (snapshotted / deep-copied here).
        l2sp, delta, bss, lwf: each regulariser's parameters, or None when off.
        source_head: the source task's head (needed by LwF, deep-copied here).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        l2sp: L2SPParams | None = None,
        delta: DeltaParams | None = None,
        bss: BSSParams | None = None,
        lwf: LwFParams | None = None,
        source_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.l2sp_params, self.delta_params = l2sp, delta
        self.bss_params, self.lwf_params = bss, lwf
        self.l2sp = L2SP(backbone, l2sp.alpha, l2sp.beta) if l2sp is not None else None
        self.delta: DELTA | None = None
        if delta is not None:
            n = len(backbone.layer_groups())
            idx = _check_layers(delta.layers, n)
            self.delta = DELTA(backbone, indices=idx, attention=delta.attention)
        if bss is not None and bss.k > backbone.num_features:
            raise ConfigError(
                f"BSS k={bss.k} exceeds the feature dimension {backbone.num_features}",
                where="method.params.bss.k",
                fix=f"use k <= {backbone.num_features} (the paper uses 1)",
            )
        self.lwf: LwF | None = None
        if lwf is not None:
            if source_head is None:
                raise ConfigError(
                    "LwF needs the source task's head (features -> source logits), and none "
                    "was given",
                    where="method.params.lwf",
                    fix="pass source_head=... to the method (e.g. the head stored in a "
                    "transferkit checkpoint of the source model), or drop the lwf key",
                )
            self.lwf = LwF(backbone, source_head, T=lwf.temperature)

    @property
    def active(self) -> bool:
        """True when at least one regulariser is configured."""
        return any(
            p is not None
            for p in (self.l2sp_params, self.delta_params, self.bss_params, self.lwf_params)
        )

    def features(self, backbone: Backbone, x: Any) -> tuple[Tensor, list[Tensor]]:
        """``(f [B, D], [FM_j [B, D_j] for DELTA's layers])`` from ONE forward pass."""
        if self.delta is None:
            return backbone(x), []
        return self.delta.features(backbone, x)

    def penalties(
        self,
        backbone: Backbone,
        head: nn.Module,
        x: Any,
        features: Tensor,
        intermediates: list[Tensor],
        source_head: nn.Module | None = None,
    ) -> dict[str, Tensor]:
        """Each configured, weighted penalty by name (scalars)."""
        out: dict[str, Tensor] = {}
        if self.l2sp is not None:
            out["l2sp"] = self._l2sp(backbone, head)
        if self.delta is not None and self.delta_params is not None:
            out["delta"] = self.delta_params.alpha * self.delta(x, intermediates)
        if self.bss_params is not None:
            k = min(self.bss_params.k, *features.shape)
            out["bss"] = self.bss_params.eta * bss_loss(features, k)
        if self.lwf is not None and self.lwf_params is not None:
            assert source_head is not None
            out["lwf"] = self.lwf_params.lambda_ * self.lwf(source_head(features), x)
        return out

    def _l2sp(self, backbone: Backbone, head: nn.Module) -> Tensor:
        """L2-SP over the parameters that train or were snapshotted.

        Frozen parameters that are in the snapshot contribute exactly 0 (they never moved);
        frozen ones that are not (base weights renamed by an adapter) are left out, so they
        are not mistaken for new weights.
        """
        assert self.l2sp is not None
        start = self.l2sp.start_params()
        live = {n: p for n, p in backbone.named_parameters() if p.requires_grad or n in start}
        new = dict(head.named_parameters())
        return l2sp_loss(live, start, self.l2sp.alpha, self.l2sp.beta, new_params=new)
