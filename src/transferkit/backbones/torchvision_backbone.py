"""``torchvision:<name>``: any torchvision classification model as a Backbone.

Built with ``torchvision.models.get_model(name, weights="DEFAULT" | None)``. The final
classification layer (the last ``Linear``, or ``Conv2d`` for SqueezeNet, with
``num_classes`` outputs) is replaced by ``nn.Identity`` so ``forward`` returns the pooled
features the classifier saw; auxiliary heads (GoogLeNet, Inception) are dropped.

Layer groups come from the top-level children in order; ``features``, ``layers``,
``blocks`` and ``trunk_output`` sequences are split into their blocks, an encoder holding
a ``layers`` sequence (ViT) into its layers; a normalisation layer joins the group before
it (``conv1 + bn1`` -> ``stem``) and bare parameters (``class_token``,
``pos_embedding``) join a neighbouring group.
Intermediates are captured by hooks in one pass (:mod:`transferkit.backbones.taps`).
Preprocessing follows the default weights' ``transforms()`` (mean, std, resize, crop).
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn

from transferkit.backbones.base import Prepared, Preprocess
from transferkit.backbones.names import OFFLINE_FIX, unknown_name_error
from transferkit.backbones.preprocess import crop_from_resize, parse_size, prepare_images
from transferkit.backbones.taps import PoolRule, TappedBackbone
from transferkit.errors import BackboneError

OWN_KWARGS = ("input_size", "crop_pct")
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
EXPAND = ("features", "layers", "blocks", "trunk_output")


def _params(module: nn.Module, prefix: str, recurse: bool = True) -> list[str]:
    return [f"{prefix}{n}" for n, _ in module.named_parameters(recurse=recurse)]


def _units(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module | None, list[str]]]:
    """(name, module or None for bare parameters, parameter names) in registration order."""
    out: list[tuple[str, nn.Module | None, list[str]]] = []
    direct = _params(module, prefix, recurse=False)
    if direct:
        out.append((prefix.rstrip(".") or "params", None, direct))
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if not any(True for _ in child.parameters()):
            continue
        if name in EXPAND and isinstance(child, nn.Sequential | nn.ModuleList):
            for sub, block in child.named_children():
                if any(True for _ in block.parameters()):
                    out.append((f"{full}.{sub}", block, _params(block, f"{full}.{sub}.")))
        elif isinstance(getattr(child, "layers", None), nn.Sequential | nn.ModuleList):
            out += _units(child, f"{full}.")
        else:
            out.append((full, child, _params(child, f"{full}.")))
    return out


def torchvision_groups(model: nn.Module) -> tuple[list[str], list[list[str]]]:
    """(names, parameter names) of the layer groups, input -> output (see module doc)."""
    names: list[str] = []
    groups: list[list[str]] = []
    pending: list[str] = []  # bare parameters seen before any group
    for name, mod, params in _units(model):
        joins = mod is None or (isinstance(mod, NORMS) and not list(mod.children()))
        if joins and groups:
            groups[-1] += params
            if mod is not None and len(groups) == 1:
                names[0] = "stem"
        elif mod is None:
            pending += params
        else:
            names.append(name)
            groups.append(pending + params)
            pending = []
    if pending:
        raise BackboneError("model has parameters outside any module", where=str(pending[:3]))
    return names, groups


def strip_classifier(model: nn.Module, num_classes: int) -> str:
    """Replace the final classification layer with ``nn.Identity``; return its name."""
    last = None
    for name, mod in model.named_modules():
        if (isinstance(mod, nn.Linear) and mod.out_features == num_classes) or (
            isinstance(mod, nn.Conv2d) and mod.out_channels == num_classes
        ):
            last = name
    if last is None:
        raise BackboneError(
            f"found no classification layer with {num_classes} outputs",
            fix="pass num_classes= matching the model's head",
        )
    parent, _, child = last.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    for aux in ("AuxLogits", "aux1", "aux2"):
        if getattr(model, aux, None) is not None:
            setattr(model, aux, None)
    if hasattr(model, "aux_logits"):
        model.aux_logits = False
    return last


def image_preprocess(name: str, kw: dict[str, Any], spec: str) -> Preprocess:
    """Mean/std/size from the default weights' transforms (no download needed)."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    crop, resize, interp = 224, 256, "bilinear"
    try:
        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        mean, std = tuple(t.mean), tuple(t.std)
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        interp = str(getattr(t.interpolation, "value", interp))
    except (AttributeError, ValueError, KeyError, IndexError, TypeError):
        pass
    size = parse_size(kw["input_size"], spec) if kw.get("input_size") else (crop, crop)
    if kw.get("image_size") and not kw.get("input_size"):
        size = parse_size(kw["image_size"], spec)
    pct = float(kw.get("crop_pct") or crop_from_resize(crop, resize))
    return Preprocess(
        "image",
        mean=mean,
        std=std,
        input_size=(3, *size),
        interpolation=interp,
        extra={"crop_pct": pct},
    )


def build_model(name: str, pretrained: bool, **kw: Any) -> nn.Module:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise unknown_name_error("torchvision", name)
    if name in ("googlenet", "inception_v3"):
        kw.setdefault("aux_logits", False)
        if not pretrained:
            kw.setdefault("init_weights", True)
    try:
        return torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, **kw)
    except TypeError as exc:
        raise BackboneError(
            f"torchvision model {name!r} rejected an option: {exc}",
            where=f"torchvision:{name}",
            fix="remove or rename the option",
        ) from exc
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise BackboneError(
            f"could not download the default weights of torchvision:{name} ({exc})",
            where=f"torchvision:{name}",
            fix=OFFLINE_FIX + " (torchvision caches weights in $TORCH_HOME/hub/checkpoints)",
        ) from exc


class TorchvisionBackbone(TappedBackbone):
    """A torchvision classifier with its last layer removed; see the module docstring."""

    def __init__(self, name: str, pretrained: bool = True, **kw: Any) -> None:
        super().__init__()
        self.spec = f"torchvision:{name}"
        self.modality = "image"
        self.init_kwargs = dict(kw)
        model_kw = {k: v for k, v in kw.items() if k not in OWN_KWARGS}
        self.model = build_model(name, pretrained, **model_kw)
        strip_classifier(self.model, int(model_kw.get("num_classes", 1000)))
        self.preprocess = image_preprocess(name, kw, self.spec)
        self.pool_rule = PoolRule(
            channels_last=isinstance(
                getattr(self.model, "permute", None), torchvision.ops.misc.Permute
            ),
            tokens="cls" if hasattr(self.model, "class_token") else "mean",
        )
        names, groups = torchvision_groups(self.model)
        _, h, w = self.preprocess.input_size or (3, 224, 224)
        self._init_groups(names, groups, self.image_probes(3, h, w))

    def forward(self, x: Prepared) -> torch.Tensor:
        out = self.model(x)
        return out.flatten(1) if out.ndim > 2 else out

    def prepare(self, raw: Any) -> torch.Tensor:
        return prepare_images(raw, self.preprocess)


def build_torchvision(name: str, pretrained: bool = True, **kw: Any) -> TorchvisionBackbone:
    """``torchvision:<name>`` -> :class:`TorchvisionBackbone`."""
    return TorchvisionBackbone(name, pretrained, **kw)
