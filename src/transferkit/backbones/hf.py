"""``hf:<hub id or local directory>``: a Hugging Face transformers encoder as a Backbone.

Loads ``AutoModel.from_pretrained(source)`` (BERT, RoBERTa, DistilBERT, MiniLM, ViT, ...),
or builds a randomly initialised model from ``AutoConfig`` (``pretrained=False``) or from a
``config=`` keyword (a ``PretrainedConfig``). Text models prepare ``list[str]`` with the
tokenizer (padding, truncation at ``max_length``); vision models (``pixel_values`` input)
prepare images with the image processor's mean/std/size.

Pooling of a hidden state ``h`` ``[B, L, D]`` (kw ``pooling``):

* ``"mean"`` (default): text ``sum_l m_l h_l / sum_l m_l`` with the attention mask ``m``
  (Reimers & Gurevych 2019, https://arxiv.org/abs/1908.10084); vision: mean of the patch
  tokens (the class token excluded);
* ``"cls"``: ``h[:, 0]``; ``"pooler"``: the model's own pooler output (BERT: tanh(W h_0)).

An unused pooler is removed, so every parameter receives gradients. ``normalize=True``
divides the output by its L2 norm. Layer groups: ``embeddings``, one per encoder layer
(a trailing final norm joins the last one), then ``pooler`` when used.
``forward_intermediates`` pools ``output_hidden_states`` of the same single pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.backbones.base import Backbone, LayerGroup, Prepared, Preprocess
from transferkit.backbones.hf_load import image_preprocess, load_model, load_tokenizer
from transferkit.backbones.preprocess import check_texts, prepare_images
from transferkit.backbones.taps import normalize_indices
from transferkit.errors import BackboneError, DataError


def layer_list(model: nn.Module) -> tuple[str, int]:
    """Name and length of the model's longest ``ModuleList`` (its encoder layers)."""
    best = ("", 0)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > best[1]:
            best = (name, len(mod))
    return best


def hf_groups(model: nn.Module, use_pooler: bool) -> tuple[list[str], list[list[str]]]:
    """(names, parameter names): embeddings, each layer (+ trailing params), pooler."""
    layers, n = layer_list(model)
    if n == 0:
        return ["all"], [[p for p, _ in model.named_parameters()]]
    names = ["embeddings"] + [f"{layers}.{i}" for i in range(n)]
    groups: list[list[str]] = [[] for _ in range(n + 1)]
    pooler: list[str] = []
    seen_layer = False
    for p, _ in model.named_parameters():
        if p.startswith(layers + "."):
            groups[int(p[len(layers) + 1 :].split(".")[0]) + 1].append(p)
            seen_layer = True
        elif p.startswith("pooler."):
            pooler.append(p)
        else:
            groups[n if seen_layer else 0].append(p)
    if use_pooler:
        names.append("pooler")
        groups.append(pooler)
    return names, groups


class HFBackbone(Backbone):
    """A transformers encoder with pooling; see the module docstring."""

    def __init__(
        self, source: str, pretrained: bool = True, *, spec: str | None = None, **kw: Any
    ) -> None:
        super().__init__()
        self.spec = spec or f"hf:{source}"
        self.pooling = kw.get("pooling", "mean")
        if self.pooling not in ("mean", "cls", "pooler"):
            raise BackboneError(
                f"unknown pooling {self.pooling!r}",
                where=self.spec,
                fix="use pooling='mean', 'cls' or 'pooler'",
            )
        self.normalize = bool(kw.get("normalize", False))
        self.model = load_model(source, pretrained, kw, self.spec)
        self._setup_pooler()
        self.init_kwargs = _json_kwargs(kw)
        self.modality = "image" if self.model.main_input_name == "pixel_values" else "text"
        if self.modality == "image":
            self.preprocess = image_preprocess(source, self.model.config, kw, self.spec)
        else:
            tok = load_tokenizer(kw.get("tokenizer") or source, kw, self.spec)
            limit = min(
                getattr(self.model.config, "max_position_embeddings", None) or 10**6,
                getattr(tok, "model_max_length", None) or 10**6,
            )
            self.preprocess = Preprocess(
                "text", tokenizer=tok, max_length=min(int(kw.get("max_length", 128)), limit)
            )
        names, groups = hf_groups(self.model, self.pooling == "pooler")
        self._group_names = names
        self._group_params = [tuple(f"model.{p}" for p in g) for g in groups]
        self._has_cls = hasattr(getattr(self.model, "embeddings", None), "cls_token")
        self._probe_dims()

    def _setup_pooler(self) -> None:
        has = getattr(self.model, "pooler", None) is not None
        if self.pooling == "pooler" and not has:
            raise BackboneError(
                f"{type(self.model).__name__} has no pooler",
                where=self.spec,
                fix="use pooling='mean' or 'cls'",
            )
        if self.pooling != "pooler" and has:
            self.model.pooler = None  # unused: would hold parameters that get no gradient

    def _probe_dims(self) -> None:
        if self.modality == "image":
            c, h, w = self.preprocess.input_size or (3, 224, 224)
            x: Prepared = torch.zeros(1, c, h, w)
        else:
            x = {
                "input_ids": torch.ones(1, 4, dtype=torch.long),
                "attention_mask": torch.ones(1, 4, dtype=torch.long),
            }
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                outs = self.forward_intermediates(x, list(range(len(self._group_names))))
        finally:
            self.train(was)
        self._dims = [int(o.shape[-1]) for o in outs]
        self.num_features = self._dims[-1]

    def _run(self, x: Prepared, hidden: bool) -> Any:
        if self.modality == "text":
            if not isinstance(x, Mapping):
                raise DataError(
                    f"a text backbone's forward takes the dict from prepare(), got "
                    f"{type(x).__name__}",
                    where=self.spec,
                    fix="call backbone(backbone.prepare(list_of_strings))",
                )
            return self.model(**x, output_hidden_states=hidden)
        return self.model(pixel_values=x, output_hidden_states=hidden)

    def _pool(self, h: torch.Tensor, x: Prepared) -> torch.Tensor:
        if h.ndim == 4:
            return h.mean(dim=(2, 3))
        if self.pooling == "cls":
            return h[:, 0]
        if self.modality == "image":
            return (h[:, 1:] if self._has_cls and h.shape[1] > 1 else h).mean(dim=1)
        mask = x.get("attention_mask") if isinstance(x, Mapping) else None
        if mask is None:
            return h.mean(dim=1)
        m = mask.to(h.dtype).unsqueeze(-1)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def _final(self, out: Any, x: Prepared) -> torch.Tensor:
        if self.pooling == "pooler":
            f = out.pooler_output.flatten(1)
        else:
            f = self._pool(out.last_hidden_state, x)
        return F.normalize(f, dim=-1) if self.normalize else f

    def forward(self, x: Prepared) -> torch.Tensor:
        return self._final(self._run(x, hidden=False), x)

    def forward_intermediates(self, x: Prepared, indices: Sequence[int]) -> list[torch.Tensor]:
        n = len(self._group_names)
        idx = normalize_indices(indices, n, f"{self.spec}.forward_intermediates")
        early = any(i != n - 1 for i in idx)
        out = self._run(x, hidden=early)
        states = out.hidden_states
        n_states = n - 1 if self.pooling == "pooler" else n
        if early and (states is None or len(states) != n_states):
            raise BackboneError(
                f"{type(self.model).__name__} returned {0 if states is None else len(states)} "
                f"hidden states for {n_states} layer groups",
                where=self.spec,
            )
        return [self._final(out, x) if i == n - 1 else self._pool(states[i], x) for i in idx]

    def layer_groups(self) -> list[LayerGroup]:
        return [
            LayerGroup(n, p, d)
            for n, p, d in zip(self._group_names, self._group_params, self._dims, strict=True)
        ]

    def prepare(self, raw: Any) -> Prepared:
        if self.modality == "image":
            return prepare_images(raw, self.preprocess)
        if isinstance(raw, Mapping) and "input_ids" in raw:
            return dict(raw)
        texts = check_texts(raw)
        tok = self.preprocess.tokenizer
        if tok is None:
            raise BackboneError(
                f"{self.spec} has no tokenizer",
                where=self.spec,
                fix="pass tokenizer=<directory or hub id> when creating it",
            )
        enc = tok(
            texts,
            padding=True,
            truncation=True,
            max_length=self.preprocess.max_length,
            return_tensors="pt",
        )
        return {k: enc[k] for k in tok.model_input_names if k in enc}


def _json_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """``init_kwargs`` that survive JSON: a config becomes its dict, a tokenizer its path."""
    out = {}
    for k, v in kw.items():
        if k == "config" and hasattr(v, "to_dict"):
            out[k] = v.to_dict()
        elif k == "tokenizer" and not isinstance(v, str | Path):
            continue
        else:
            out[k] = str(v) if isinstance(v, Path) else v
    return out


def build_hf(name: str, pretrained: bool = True, **kw: Any) -> HFBackbone:
    """``hf:<hub id or directory>`` -> :class:`HFBackbone`."""
    return HFBackbone(name, pretrained, **kw)
