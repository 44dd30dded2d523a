"""``hf:<hub id or local directory>``: a Hugging Face transformers model as a Backbone.

Loads ``AutoModel.from_pretrained(source)`` (encoders: BERT, RoBERTa, DistilBERT, MiniLM,
ViT, ...; decoder-only causal LMs: GPT-2, GPT-Neo, OPT, Llama, ...), or builds a randomly
initialised model from ``AutoConfig`` (``pretrained=False``) or from a ``config=`` keyword
(a ``PretrainedConfig``). Text models prepare ``list[str]`` with the tokenizer (padding,
truncation at ``max_length``); vision models (``pixel_values`` input) prepare images with
the image processor's mean/std/size.

Pooling of a hidden state ``h`` ``[B, L, D]`` with attention mask ``m`` ``[B, L]``
(kw ``pooling``; default ``"last"`` for decoders, ``"mean"`` otherwise):

* ``"mean"``: text ``sum_l m_l h_l / sum_l m_l`` (Reimers & Gurevych 2019,
  https://arxiv.org/abs/1908.10084); vision: mean of the patch tokens (class token excluded);
* ``"last"``: ``h[b, l_b]`` with ``l_b = max{l : m_bl = 1}``, the last non-padding token,
  the only one a causal decoder lets see the whole text (as in GPT-2's sequence
  classification head; Radford et al. 2018, "Improving Language Understanding by
  Generative Pre-Training"); right or left padding alike;
* ``"cls"``: ``h[:, 0]`` (encoders only: a decoder's first token sees only itself);
  ``"pooler"``: the model's own pooler output (BERT: tanh(W h_0)).

An unused pooler is removed, so every parameter receives gradients. ``normalize=True``
divides the output by its L2 norm. Layer groups: ``embeddings``, one per layer of the
longest ``ModuleList``, then ``pooler`` when used. Parameters after the layers (a final
norm) join the last layer for encoders; for decoders they form their own group when they
belong to one module (GPT-2: ``embeddings`` = wte + wpe, ``h.0`` .. ``h.N-1``, ``ln_f``).
``forward_intermediates`` pools ``output_hidden_states`` of the same single pass with the
same pooling; the input of a decoder's final-norm group (the last layer's raw output,
which transformers does not return) is captured by a forward pre-hook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.backbones.base import Backbone, LayerGroup, Prepared, Preprocess
from transferkit.backbones.hf_load import (
    conv1d_to_linear,
    decoder_tokenizer,
    image_preprocess,
    is_causal_decoder,
    load_model,
    load_tokenizer,
)
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


def hf_groups(
    model: nn.Module, use_pooler: bool, split_final: bool = False
) -> tuple[list[str], list[list[str]], str | None]:
    """(names, parameter names, final module): embeddings, each layer, [final], [pooler].

    Parameters after the layers join the last layer, or, with ``split_final`` and when they
    all belong to one module, form a group named after that module (returned third).
    """
    layers, n = layer_list(model)
    if n == 0:
        return ["all"], [[p for p, _ in model.named_parameters()]], None
    names = ["embeddings"] + [f"{layers}.{i}" for i in range(n)]
    groups: list[list[str]] = [[] for _ in range(n + 1)]
    pooler: list[str] = []
    trailing: list[str] = []
    for p, _ in model.named_parameters():
        if p.startswith(layers + "."):
            groups[int(p[len(layers) + 1 :].split(".")[0]) + 1].append(p)
        elif p.startswith("pooler."):
            pooler.append(p)
        else:
            (trailing if any(groups[1:]) else groups[0]).append(p)
    owners = {p.rpartition(".")[0] for p in trailing}
    final = owners.pop() if split_final and len(owners) == 1 else None
    if final:
        names.append(final)
        groups.append(trailing)
    else:
        groups[n].extend(trailing)
    if use_pooler:
        names.append("pooler")
        groups.append(pooler)
    return names, groups, final


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of the last position with ``mask != 0`` per row (0 for an empty row)."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask != 0, pos, -1).amax(dim=1).clamp_min(0)


class HFBackbone(Backbone):
    """A transformers encoder or decoder with pooling; see the module docstring.

    Attributes:
        is_decoder: the model is a decoder-only causal LM (:func:`is_causal_decoder`).
        pooling: ``"mean"``, ``"last"``, ``"cls"`` or ``"pooler"``.
    """

    def __init__(
        self, source: str, pretrained: bool = True, *, spec: str | None = None, **kw: Any
    ) -> None:
        super().__init__()
        self.spec = spec or f"hf:{source}"
        self.normalize = bool(kw.get("normalize", False))
        _check_pooling_name(kw.get("pooling"), self.spec)  # before the (slow) model load
        self.model = load_model(source, pretrained, kw, self.spec)
        self.is_decoder = is_causal_decoder(self.model.config)
        self.modality = "image" if self.model.main_input_name == "pixel_values" else "text"
        self.pooling = kw.get("pooling") or ("last" if self.is_decoder else "mean")
        self._check_pooling()
        self._setup_pooler()
        if kw.get("conv1d_as_linear", True):
            conv1d_to_linear(self.model)
        self.init_kwargs = _json_kwargs(kw)
        if self.modality == "image":
            self.preprocess = image_preprocess(source, self.model.config, kw, self.spec)
        else:
            self.preprocess = self._text_preprocess(source, kw)
        names, groups, final = hf_groups(self.model, self.pooling == "pooler", self.is_decoder)
        self._group_names = names
        self._group_params = [tuple(f"model.{p}" for p in g) for g in groups]
        self._final_module = final
        self._has_cls = hasattr(getattr(self.model, "embeddings", None), "cls_token")
        self._probe_dims()

    def _check_pooling(self) -> None:
        if self.pooling == "cls" and self.is_decoder:
            raise BackboneError(
                "pooling='cls' on a causal decoder returns the first token, which sees only itself",
                where=self.spec,
                fix="use pooling='last' or 'mean'",
            )
        if self.pooling == "last" and self.modality == "image":
            raise BackboneError(
                "pooling='last' needs text: image patches have no last token",
                where=self.spec,
                fix="use pooling='mean' or 'cls'",
            )

    def _text_preprocess(self, source: str, kw: dict[str, Any]) -> Preprocess:
        given = kw.get("tokenizer")
        tok = load_tokenizer(given or source, kw, self.spec)
        if self.is_decoder:
            tok = decoder_tokenizer(tok, self.spec, owned=tok is not given)
        limit = min(
            getattr(self.model.config, "max_position_embeddings", None) or 10**6,
            getattr(tok, "model_max_length", None) or 10**6,
        )
        return Preprocess(
            "text", tokenizer=tok, max_length=min(int(kw.get("max_length", 128)), limit)
        )

    def _setup_pooler(self) -> None:
        has = getattr(self.model, "pooler", None) is not None
        if self.pooling == "pooler" and not has:
            raise BackboneError(
                f"{type(self.model).__name__} has no pooler",
                where=self.spec,
                fix=f"use pooling='{'last' if self.is_decoder else 'cls'}' or 'mean'",
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
            extra = {"use_cache": False} if self.is_decoder else {}
            return self.model(**x, output_hidden_states=hidden, **extra)
        return self.model(pixel_values=x, output_hidden_states=hidden)

    def _pool(self, h: torch.Tensor, x: Prepared) -> torch.Tensor:
        if h.ndim == 4:
            return h.mean(dim=(2, 3))
        if self.pooling == "cls":
            return h[:, 0]
        if self.modality == "image":
            return (h[:, 1:] if self._has_cls and h.shape[1] > 1 else h).mean(dim=1)
        mask = x.get("attention_mask") if isinstance(x, Mapping) else None
        if self.pooling == "last":
            if mask is None:
                return h[:, -1]
            rows = torch.arange(h.shape[0], device=h.device)
            return h[rows, last_token_index(mask.to(h.device))]
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
        n_states = n - 1 if self.pooling == "pooler" or self._final_module else n
        tapped = self._final_module is not None and n - 2 in idx
        early = any(i < n - 1 and not (tapped and i == n - 2) for i in idx)
        captured: list[torch.Tensor] = []
        handle = None
        if tapped:
            final = self.model.get_submodule(str(self._final_module))
            handle = final.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            out = self._run(x, hidden=early)
        finally:
            if handle is not None:
                handle.remove()
        states = out.hidden_states
        if early and (states is None or len(states) != n_states):
            raise BackboneError(
                f"{type(self.model).__name__} returned {0 if states is None else len(states)} "
                f"hidden states for {n_states} layer groups",
                where=self.spec,
            )

        def pick(i: int) -> torch.Tensor:
            if i == n - 1:
                return self._final(out, x)
            if tapped and i == n - 2:
                return self._pool(captured[0], x)
            return self._pool(states[i], x)

        return [pick(i) for i in idx]

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


def _check_pooling_name(pooling: Any, spec: str) -> None:
    if pooling not in (None, "mean", "last", "cls", "pooler"):
        raise BackboneError(
            f"unknown pooling {pooling!r}",
            where=spec,
            fix="use pooling='mean', 'last', 'cls' or 'pooler'",
        )


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
