"""Candidate backbones for the advisor: spec parsing, building, modality checks, heads.

A candidate is a backbone spec as accepted by :func:`~transferkit.backbones.create_backbone`
(``packaged:minilm-l6``, ``tk:smallcnn``, ``file:<path>.safetensors``, ...), optionally
prefixed with ``random:`` to build the same architecture from random initialisation
(``pretrained=False``): a negative control whose score tells how much of a pretrained
model's score comes from its architecture alone rather than from its weights.

Options a spec cannot carry are inferred from the data: ``tk:mlp`` gets ``in_features`` =
the number of columns of a tabular dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from transferkit.backbones.base import Backbone
from transferkit.data.types import Dataset
from transferkit.errors import ConfigError

RANDOM_PREFIX = "random:"
#: the backbone modality that reads each data modality
READS = {"text": "text", "image": "image", "tabular": "vector"}
#: specs whose input modality is known without building them
KNOWN_MODALITY = {
    "tk:mlp": "vector",
    "tk:smallcnn": "image",
    "packaged:minilm-l6": "text",
    "packaged:efficientnet-lite0": "image",
}
EXAMPLES = {
    "text": "packaged:minilm-l6 or hf:<encoder>",
    "image": "packaged:efficientnet-lite0, timm:<name> or tk:smallcnn",
    "tabular": "tk:mlp or file:<a saved tk:mlp>",
}


@dataclass(frozen=True)
class Candidate:
    """One parsed candidate: ``label`` as the user wrote it, ``spec`` without ``random:``."""

    label: str
    spec: str
    pretrained: bool


def parse_candidate(label: str) -> Candidate:
    """``"random:tk:mlp"`` -> ``Candidate("random:tk:mlp", "tk:mlp", pretrained=False)``."""
    text = label.strip()
    if text.startswith(RANDOM_PREFIX):
        spec = text[len(RANDOM_PREFIX) :].strip()
        if not spec:
            raise ConfigError(
                f"{label!r} names no backbone after 'random:'",
                where=f"model {label!r}",
                fix="write random:<spec>, e.g. random:tk:smallcnn",
            )
        return Candidate(text, spec, pretrained=False)
    return Candidate(text, text, pretrained=True)


def parse_model_list(text: str) -> list[str]:
    """Split a comma-separated ``--models`` value; an empty list is a :class:`ConfigError`."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ConfigError(
            "no models to score",
            where=f"--models {text!r}",
            fix="pass comma-separated backbone specs, e.g. --models tk:smallcnn,random:tk:smallcnn",
        )
    return specs


def infer_backbone_options(spec: str, data: Dataset) -> dict[str, Any]:
    """Options the spec cannot carry, read off the data (``tk:mlp``: ``in_features``)."""
    if spec.strip() == "tk:mlp" and data.modality == "tabular":
        return {"in_features": int(np.asarray(data.x).shape[1])}
    return {}


def modality_error(label: str, reads: str, data: Dataset) -> ConfigError:
    """The error for a model that reads ``reads`` inputs given ``data`` of another kind."""
    return ConfigError(
        f"model {label!r} reads {reads} inputs but the data {data.name!r} is {data.modality}",
        where=f"model {label!r}, data {data.name!r} ({data.modality})",
        fix=f"use a {data.modality} backbone, e.g. {EXAMPLES.get(data.modality, '')}",
    )


def check_modality(backbone: Backbone, label: str, data: Dataset) -> None:
    """Refuse a backbone that cannot read ``data`` (a text model on images, a vector model
    expecting another number of columns)."""
    if backbone.modality != READS.get(data.modality):
        raise modality_error(label, backbone.modality, data)
    want = backbone.preprocess.extra.get("in_features") if backbone.modality == "vector" else None
    have = int(np.asarray(data.x).shape[1]) if data.modality == "tabular" else None
    if want is not None and have is not None and int(want) != have:
        raise ConfigError(
            f"model {label!r} reads vectors of {want} columns but the data {data.name!r} has "
            f"{have}",
            where=f"model {label!r}, data {data.name!r}",
            fix="score a model trained on data with the same columns",
        )


def build_candidate(
    spec: str | Backbone,
    data: Dataset,
    *,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> tuple[Backbone, Candidate]:
    """Build (or take) one candidate backbone and check it can read ``data``.

    ``torch.manual_seed(seed)`` runs first, so random initialisations are reproducible.
    A :class:`Backbone` instance is used as it is (label = its ``spec``, pretrained).
    """
    if isinstance(spec, Backbone):
        check_modality(spec, spec.spec, data)
        return spec, Candidate(spec.spec, spec.spec, pretrained=True)
    from transferkit.backbones import create_backbone

    cand = parse_candidate(spec)
    known = KNOWN_MODALITY.get(cand.spec)
    if known is not None and known != READS.get(data.modality):
        raise modality_error(cand.label, known, data)  # before building a large model
    kw = {**infer_backbone_options(cand.spec, data), **(options or {})}
    torch.manual_seed(seed)
    backbone = create_backbone(cand.spec, pretrained=cand.pretrained, **kw)
    check_modality(backbone, cand.label, data)
    return backbone, cand


def count_params(backbone: Backbone) -> int:
    """Number of parameters (trainable or not) of ``backbone``."""
    return int(sum(p.numel() for p in backbone.parameters()))


def classifier_head(backbone: Backbone) -> tuple[np.ndarray, np.ndarray] | None:
    """The source-task classifier ``(W [Z, D], b [Z])`` on the pooled features, if any.

    A backbone that keeps its pretraining head exposes it as the buffers
    ``imagenet_weight`` / ``imagenet_bias`` (``packaged:efficientnet-lite0``), so source
    logits are ``features @ W.T + b`` with no second forward pass. None otherwise.
    """
    w = getattr(backbone, "imagenet_weight", None)
    b = getattr(backbone, "imagenet_bias", None)
    if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor):
        return None
    if w.ndim != 2 or b.shape != (w.shape[0],) or w.shape[1] != backbone.num_features:
        return None
    return w.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()


def source_probs(features: np.ndarray, head: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Softmax of the source logits ``features @ W.T + b``: ``[N, Z]`` rows summing to 1."""
    from scipy.special import softmax

    w, b = head
    return softmax(np.asarray(features, dtype=np.float64) @ w.T + b, axis=1)
