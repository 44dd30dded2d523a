"""Loading for ``hf:`` backbones: model, tokenizer and image preprocessing, with errors
that say what to do offline.

``source`` is a local directory (anything that exists, or starts with ``/``, ``.`` or
``~``) or a Hub id. Hub ids are resolved from the local Hugging Face cache when the hub is
unreachable; when that fails too, the error names the offline alternatives.

Decoder-only causal LMs (GPT-2 style, :func:`is_causal_decoder`) need two adjustments:

* their tokenizer usually has no pad token: the EOS token pads, on the right
  (:func:`decoder_tokenizer`), so position ids stay ``0..n-1`` for every row;
* GPT-2's projections are ``transformers.pytorch_utils.Conv1D`` (``y = x W + b`` with
  ``W`` ``[in, out]``), which PEFT's default targets and IA3's feed-forward detection do not
  recognise; :func:`conv1d_to_linear` swaps each for the equal ``nn.Linear`` (weight
  ``W^T``), so LoRA / IA3 / LoHa adapt them like any transformer's linears. Option
  ``conv1d_as_linear=False`` keeps the original modules.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
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
    "conv1d_as_linear",
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


def is_causal_decoder(config: Any) -> bool:
    """True for a decoder-only causal LM (GPT-2, GPT-Neo, OPT, Llama, ...).

    Its ``model_type`` has a causal-LM head in transformers but no masked-LM head (BERT-like
    encoders have both), and it is not an encoder-decoder (T5, BART).
    """
    from transformers.models.auto import modeling_auto as auto

    if getattr(config, "is_encoder_decoder", False):
        return False
    kind = getattr(config, "model_type", "")
    causal, masked = auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return kind in causal and kind not in masked


def decoder_tokenizer(tok: Any, spec: str, *, owned: bool) -> Any:
    """``tok`` padding on the right with its EOS token when it has no pad token.

    A tokenizer the caller passed in (``owned=False``) is copied before it is changed.
    """
    if tok is None or (tok.pad_token is not None and tok.padding_side == "right"):
        return tok
    if not owned:
        tok = copy.deepcopy(tok)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise BackboneError(
                "the decoder's tokenizer has neither a pad nor an EOS token, so batches "
                "cannot be padded",
                where=spec,
                fix="pass a tokenizer with a pad token (tokenizer.pad_token = ...)",
            )
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace every transformers ``Conv1D`` of ``model`` by the equal ``nn.Linear``.

    ``Conv1D(nf, nx)`` computes ``x W + b`` with ``W`` ``[nx, nf]``; the Linear gets weight
    ``W^T`` ``[nf, nx]``, the same bias and the same ``requires_grad`` flags. Returns the
    number of modules replaced.
    """
    from transformers.pytorch_utils import Conv1D

    found = [(n, m) for n, m in model.named_modules() if isinstance(m, Conv1D)]
    for name, conv in found:
        w, b = conv.weight, conv.bias
        lin = nn.Linear(w.shape[0], w.shape[1], bias=b is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.t())
            if b is not None:
                lin.bias.copy_(b)
                lin.bias.requires_grad_(b.requires_grad)
        lin.weight.requires_grad_(w.requires_grad)
        lin.train(conv.training)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, lin)
    return len(found)
