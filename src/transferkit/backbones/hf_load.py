"""Loading for ``hf:`` backbones: model, tokenizer and image preprocessing, with errors
that say what to do offline.

``source`` is a local directory (anything that exists, or starts with ``/``, ``.`` or
``~``) or a Hub id. Hub ids are resolved from the local Hugging Face cache when the hub is
unreachable; when that fails too, the error names the offline alternatives.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from transferkit.backbones.base import Preprocess
from transferkit.backbones.preprocess import parse_size
from transferkit.errors import BackboneError

OWN_KWARGS = (
    "config",
    "pooling",
    "normalize",
    "max_length",
    "trust_remote_code",
    "tokenizer",
    "input_size",
)
HUB_FIX = (
    "offline, use packaged:minilm-l6 (text) or packaged:efficientnet-lite0 (images), or "
    "hf:<local directory> holding config.json + weights written by save_pretrained "
    "(copy it from a machine with internet access)"
)


def resolve_local(source: str, spec: str) -> Path | None:
    """The local directory ``source`` names, ``None`` for a Hub id; missing paths raise."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackboneError(
                f"{source!r} is a file, not a model directory",
                where=spec,
                fix="pass the directory that holds config.json",
            )
        return path
    if source.startswith(("/", ".", "~")):
        raise BackboneError(
            f"no such model directory: {source}",
            where=spec,
            fix="check the path, or give a Hub id such as 'bert-base-uncased'",
        )
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _load_error(source: str, local: Path | None, exc: Exception, spec: str) -> BackboneError:
    if local is not None:
        return BackboneError(
            f"cannot load a transformers model from {local} ({type(exc).__name__}: "
            f"{str(exc)[:300]})",
            where=spec,
            fix="the directory must hold config.json and weights written by save_pretrained",
        )
    why = (
        "the hub is unreachable (HF_HUB_OFFLINE=1)"
        if _offline()
        else ("the hub is unreachable or has no such model")
    )
    return BackboneError(
        f"could not load {source!r} from the Hugging Face Hub: {why}, and it is not in the "
        "local cache",
        where=spec,
        fix=HUB_FIX,
    )


def _config(cfg: Any) -> Any:
    from transformers import AutoConfig

    if isinstance(cfg, dict):
        d = dict(cfg)
        return AutoConfig.for_model(d.pop("model_type"), **d)
    return cfg


def load_model(source: str, pretrained: bool, kw: dict[str, Any], spec: str) -> nn.Module:
    """``AutoModel`` from a config kw, from ``source`` (pretrained) or from its config."""
    from transformers import AutoConfig, AutoModel

    trust = bool(kw.get("trust_remote_code", False))
    extra = {k: v for k, v in kw.items() if k not in OWN_KWARGS}
    if kw.get("config") is not None:
        try:
            return AutoModel.from_config(_config(kw["config"]), trust_remote_code=trust)
        except (KeyError, ValueError, TypeError) as exc:
            raise BackboneError(
                f"cannot build a model from the given config: {exc}",
                where=spec,
                fix="pass a transformers PretrainedConfig",
            ) from exc
    local = resolve_local(source, spec)
    src = str(local) if local is not None else source
    try:
        if pretrained:
            with _quiet_loading():
                return AutoModel.from_pretrained(src, trust_remote_code=trust, **extra)
        cfg = AutoConfig.from_pretrained(src, trust_remote_code=trust)
        return AutoModel.from_config(cfg, trust_remote_code=trust)
    except TypeError as exc:
        raise BackboneError(
            f"{spec} rejected an option: {exc}", where=spec, fix="remove or rename the option"
        ) from exc
    except (OSError, ValueError) as exc:
        raise _load_error(source, local, exc, spec) from exc


def load_tokenizer(source: Any, kw: dict[str, Any], spec: str) -> Any:
    """The tokenizer object, or one loaded from a directory / Hub id.

    Models built from ``config=`` may lack one (``None``); ``prepare`` then says so.
    """
    if hasattr(source, "model_input_names") and callable(source):
        return source
    from transformers import AutoTokenizer

    local = resolve_local(str(source), spec)
    try:
        return AutoTokenizer.from_pretrained(
            str(local) if local else str(source),
            trust_remote_code=bool(kw.get("trust_remote_code", False)),
        )
    except (OSError, ValueError, TypeError) as exc:
        if kw.get("config") is not None:
            return None
        raise BackboneError(
            f"cannot load the tokenizer of {source} ({type(exc).__name__})",
            where=spec,
            fix="save the tokenizer next to the model (tokenizer.save_pretrained(dir)) or "
            "pass tokenizer=<directory>",
        ) from exc


def image_preprocess(source: str, config: Any, kw: dict[str, Any], spec: str) -> Preprocess:
    """Mean/std/size from the image processor config, else ``config.image_size`` and 0.5."""
    mean: Any = (0.5, 0.5, 0.5)
    std: Any = (0.5, 0.5, 0.5)
    size = getattr(config, "image_size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    try:
        from transformers import AutoImageProcessor

        local = resolve_local(source, spec)
        proc = AutoImageProcessor.from_pretrained(str(local) if local else source)
        mean, std = proc.image_mean, proc.image_std
        s = proc.size
        size = (s["height"], s["width"]) if "height" in s else (s["shortest_edge"],) * 2
    except (OSError, ValueError, KeyError, TypeError, AttributeError, BackboneError):
        pass
    if kw.get("input_size"):
        size = parse_size(kw["input_size"], spec)
    chans = int(getattr(config, "num_channels", 3))
    if len(mean) != chans:
        mean, std = [sum(mean) / len(mean)] * chans, [sum(std) / len(std)] * chans
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    return Preprocess(
        "image",
        mean=mean,
        std=std,
        input_size=(chans, int(size[0]), int(size[1])),
        interpolation="bilinear",
        extra={"crop_pct": 1.0},
    )


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' per-tensor "Loading weights" bar (ours reports progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
