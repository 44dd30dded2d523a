"""Linear probe: a frozen pretrained backbone and a head fitted on its features.

Features ``F`` ``[N, D]`` are extracted once (the final pooled features, or the pooled
outputs of the layer groups ``layers`` concatenated, ``D = sum_i D_i``), standardised
(``z = (F - mu) / sigma``), and a head is fitted on them with its strength chosen on the
validation split (see :mod:`transferkit.methods.feature_heads`): by default L2-regularised
logistic regression (``min_w sum_i CE(w z_i, y_i) + ||w||^2 / (2C)``) for classification or
ridge regression (``min_w ||Z w - y||^2 + alpha ||w||^2``) for regression; ``head`` selects
a ridge classifier, a linear SVM, a small MLP, k-NN, or few-shot prototypes (nearest class
mean, optionally refined transductively with unlabelled target features; see
:mod:`transferkit.methods.prototypes`) instead. Linear heads are folded into a torch
``nn.Linear`` (``W' = W / sigma``, ``b' = b - W' mu``); the other heads are torch modules,
so ``predict(x) = head(features(x))`` needs no scikit-learn at inference time and the whole
method saves with ``state_dict``.

Reference: Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?",
https://arxiv.org/abs/1805.08974
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.errors import ConfigError
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.feature_heads import (
    LINEAR_HEADS,
    FeatureHeadParams,
    build_head,
    fit_head,
)
from transferkit.methods.supervised import SupervisedMethod, TaskKind


class LinearProbeParams(FeatureHeadParams):
    layers: list[int] | None = Field(
        None,
        min_length=1,
        description="layer groups whose pooled features are concatenated (None: final)",
    )


@register_method
class LinearProbe(SupervisedMethod):
    """Frozen backbone + a head on cached features, strength tuned on validation.

    Fitted state: ``selected_strength_`` (the chosen value of ``selected_param_``: ``C``,
    ``1/alpha``, ``k``, ``weight_decay`` or ``temperature``), ``val_scores_`` (grid value ->
    val metric) and ``head_info_`` (prototype heads: distance, temperatures, and which
    unlabelled rows refined the prototypes).
    """

    name: ClassVar[str] = "linear_probe"
    family: ClassVar[str] = "feature-extraction"
    paper: ClassVar[str] = (
        "Kornblith et al. 2019, Do Better ImageNet Models Transfer Better? "
        "https://arxiv.org/abs/1805.08974"
    )
    Params: ClassVar[type[MethodParams]] = LinearProbeParams
    closed_form: ClassVar[bool] = True

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: LinearProbeParams
    ) -> None:
        kind = params.head
        layers = _resolve_layers(backbone, params.layers)
        given = _find_linear(head) if kind in LINEAR_HEADS else None
        out = (given if given is not None else _last_linear(head)).out_features
        if layers is not None:
            in_features = sum(backbone.layer_groups()[i].dim for i in layers)
        else:
            in_features = given.in_features if given is not None else backbone.num_features
        if given is not None and layers is None:
            shell: nn.Module = given  # the configured head itself, as before
        else:
            shell = build_head(kind, in_features, out, task, params)
        super().__init__(backbone, shell, task, params)
        self.layers = layers
        self.in_features = in_features
        self.num_outputs = out
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.selected_strength_: float | None = None
        self.selected_param_: str | None = None
        self.val_scores_: dict[Any, float] = {}
        self.head_info_: dict[str, Any] = {}

    @property
    def uses_unlabelled(self) -> bool:
        """True when ``fit_features`` makes use of ``unlabelled`` target features."""
        return self.hparams.head == "prototype_transductive"

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # frozen: dropout off, BatchNorm statistics fixed
        return self

    def features(self, x: Any) -> torch.Tensor:
        """Features ``[B, D]`` of prepared inputs: final, or the ``layers`` concatenated."""
        if self.layers is None:
            return self.backbone(x)
        return torch.cat(self.backbone.forward_intermediates(x, self.layers), dim=-1)

    def predict(self, x: Any) -> torch.Tensor:
        """``head(features(x))``: logits ``[B, C]`` or regression outputs ``[B]``."""
        out = self.head(self.features(x))
        return out.squeeze(-1) if self.task == "regression" else out

    def extract(
        self, raw: Any, *, batch_size: int = 64, cache_dir: str | Path | None = None
    ) -> np.ndarray:
        """The features ``fit_features`` expects, ``[N, D]``, of raw inputs (one pass, cached)."""
        from transferkit.engine.extract import extract_features

        feats = extract_features(
            self.backbone, raw, batch_size=batch_size, layers=self.layers, cache_dir=cache_dir
        )
        return feats if self.layers is None else np.concatenate(feats, axis=1)

    def fit_features(
        self,
        f_train: np.ndarray,
        y_train: np.ndarray,
        f_val: np.ndarray,
        y_val: np.ndarray,
        *,
        unlabelled: np.ndarray | None = None,
        unlabelled_from: str = "unlabelled features passed to fit_features",
    ) -> LinearProbe:
        """Fit the head on features ``[N, D]``; choose the strength on ``(f_val, y_val)``.

        ``unlabelled`` ``[M, D]``: target features without labels (the label-budget pool, or
        val + test inputs), used by ``head: prototype_transductive`` only (see
        :attr:`uses_unlabelled`); without them it uses the val inputs. ``unlabelled_from``
        names those rows in ``head_info_``.
        """
        named = [("train", f_train), ("val", f_val)]
        if unlabelled is not None and self.uses_unlabelled:
            named.append(("unlabelled", unlabelled))
        for name, f in named:
            if np.ndim(f) != 2 or np.shape(f)[1] != self.in_features:
                raise ConfigError(
                    f"{name} features have shape {np.shape(f)}, the head expects "
                    f"[N, {self.in_features}]",
                    where="linear_probe.fit_features",
                    fix="extract them with method.extract(x) (it honours params.layers)",
                )
        fitted = fit_head(
            f_train,
            y_train,
            f_val,
            y_val,
            task=self.task,
            num_outputs=self.num_outputs,
            params=self.hparams,
            unlabelled=unlabelled,
            unlabelled_from=unlabelled_from,
        )
        self.head = fitted.module
        self.selected_strength_ = fitted.selected
        self.selected_param_ = fitted.param
        self.val_scores_ = dict(fitted.val_scores)
        self.head_info_ = dict(fitted.info)
        return self


def _resolve_layers(backbone: Backbone, layers: list[int] | None) -> list[int] | None:
    """Layer indices made non-negative; out-of-range ones are a ConfigError."""
    if layers is None:
        return None
    n = len(backbone.layer_groups())
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ConfigError(
            f"layers {bad} out of range: the backbone has {n} layer groups",
            where="method.params.layers",
            fix=f"use indices in -{n}..{n - 1} (0 = nearest the input)",
        )
    return [i % n for i in layers]


def _last_linear(head: nn.Module) -> nn.Linear:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            "linear_probe needs a head ending in a Linear layer",
            where="model.head",
            fix="set model.head: linear",
        )
    return linears[-1]


def _find_linear(head: nn.Module) -> nn.Linear:
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ConfigError(
            "linear_probe needs a linear head",
            where="model.head",
            fix="set model.head: linear (or method.params.head: mlp for an MLP on frozen "
            "features; finetune with freeze: all_but_head trains a model.head: mlp)",
        )
    return linears[0]
