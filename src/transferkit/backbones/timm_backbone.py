"""``timm:<name>``: any timm model as a Backbone.

The model is built with ``timm.create_model(name, pretrained=..., num_classes=0)``, so
``forward`` returns timm's pooled pre-logits features ``[B, D]``. Layer groups are timm's
own coarse grouping (``model.group_matcher(coarse=True)`` fed to
``timm.models.group_parameters``): stem, one group per stage/block, final norm merged into
the last one, so every parameter lies in exactly one group. Intermediates are the tensors
entering each next group, captured by hooks in one forward pass (see
:mod:`transferkit.backbones.taps`): timm's own ``forward_intermediates`` indices follow
``feature_info``, which does not line up with the matcher's groups on many models
(EfficientNet's ``conv_head``, ConvNeXt's ``head.norm``, the ResNet stem before max-pool).
Preprocessing follows ``timm.data.resolve_data_config``.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models import group_parameters
from torch import nn

from transferkit.backbones.base import Prepared, Preprocess
from transferkit.backbones.names import OFFLINE_FIX, unknown_name_error
from transferkit.backbones.preprocess import parse_size, prepare_images
from transferkit.backbones.taps import PoolRule, TappedBackbone, find_tap
from transferkit.errors import BackboneError

OWN_KWARGS = ("input_size", "crop_pct")


def group_name(model: nn.Module, k: int, groups: list[list[str]]) -> str:
    """Readable name of group ``k``: the one sub-module holding it, ``stem``, or ``a+b``."""
    params = groups[k]
    others = {p for j, g in enumerate(groups) if j != k for p in g}
    if any(p.rpartition(".")[0] for p in params):
        own = find_tap(model, params, others)
        if all(p.startswith(own + ".") for p in params):
            return own
    if k == 0:
        return "stem"
    heads: list[str] = []
    for parts in (p.split(".")[:-1] for p in params):
        head = ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]
        if parts and head not in heads:
            heads.append(head)
    return "+".join(heads) if heads else "params"


def timm_groups(model: nn.Module) -> tuple[list[str], list[list[str]]]:
    """(names, parameter names) of timm's coarse layer groups, input -> output."""
    grouped = group_parameters(model, model.group_matcher(coarse=True))
    groups = [list(v) for _, v in sorted(grouped.items())]
    groups = [g for g in groups if g]
    return [group_name(model, k, groups) for k in range(len(groups))], groups


def pool_rule_for(model: nn.Module) -> PoolRule:
    """Class token for ``global_pool='token'`` models, else mean of the patch tokens."""
    token = getattr(model, "global_pool", None) == "token"
    return PoolRule(
        channels_last=str(getattr(model, "output_fmt", "NCHW")) == "NHWC",
        tokens="cls" if token else "mean",
        prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
    )


def image_preprocess(model: nn.Module, kw: dict[str, Any], spec: str) -> Preprocess:
    """Preprocess from ``resolve_data_config``, overridden by ``input_size``/``img_size``."""
    cfg = timm.data.resolve_data_config(model=model)
    chans = int(kw.get("in_chans", cfg["input_size"][0]))
    size = cfg["input_size"][1:]
    for key in ("input_size", "img_size"):
        if kw.get(key) is not None:
            size = parse_size(kw[key], spec)
            break
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if len(mean) != chans:
        mean, std = (sum(mean) / len(mean),) * chans, (sum(std) / len(std),) * chans
    crop = float(kw.get("crop_pct") or cfg.get("crop_pct") or 1.0)
    return Preprocess(
        "image",
        mean=mean,
        std=std,
        input_size=(chans, *size),
        interpolation=cfg.get("interpolation", "bilinear"),
        extra={"crop_pct": crop},
    )


def create_timm_model(name: str, pretrained: bool, **kw: Any) -> nn.Module:
    """``timm.create_model`` with unknown names / offline downloads as BackboneError."""
    base = name.partition(".")[0]
    if not timm.is_model(base):
        raise unknown_name_error("timm", name)
    try:
        return timm.create_model(name, pretrained=pretrained, **kw)
    except TypeError as exc:
        raise BackboneError(
            f"timm model {name!r} rejected an option: {exc}",
            where=f"timm:{name}",
            fix="remove or rename the option",
        ) from exc
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise BackboneError(
                f"timm could not build {name!r}: {exc}", where=f"timm:{name}"
            ) from exc
        raise BackboneError(
            f"could not download pretrained weights for timm:{name} "
            f"(the Hugging Face Hub is unreachable or the file is not cached: "
            f"{type(exc).__name__})",
            where=f"timm:{name}",
            fix=OFFLINE_FIX,
        ) from exc


class TimmBackbone(TappedBackbone):
    """A timm model without its classifier; see the module docstring."""

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        *,
        model: nn.Module | None = None,
        spec: str | None = None,
        **kw: Any,
    ) -> None:
        """Build ``timm:<name>``; ``model``/``spec`` let wrappers pass a prepared model."""
        super().__init__()
        self.spec = spec or f"timm:{name}"
        self.modality = "image"
        self.init_kwargs = dict(kw)
        model_kw = {k: v for k, v in kw.items() if k not in OWN_KWARGS}
        self.model = (
            model
            if model is not None
            else create_timm_model(name, pretrained, num_classes=0, **model_kw)
        )
        self.preprocess = image_preprocess(self.model, kw, self.spec)
        self.pool_rule = pool_rule_for(self.model)
        names, groups = timm_groups(self.model)
        c, h, w = self.preprocess.input_size or (3, 224, 224)
        self._init_groups(names, groups, self.image_probes(c, h, w))

    def forward(self, x: Prepared) -> torch.Tensor:
        return self.model(x)

    def prepare(self, raw: Any) -> torch.Tensor:
        return prepare_images(raw, self.preprocess)


def build_timm(name: str, pretrained: bool = True, **kw: Any) -> TimmBackbone:
    """``timm:<name>`` -> :class:`TimmBackbone`."""
    return TimmBackbone(name, pretrained, **kw)
