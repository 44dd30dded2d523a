"""Linear probe: a frozen pretrained backbone and a linear model fitted on its features.

Features ``F = backbone(X)`` ``[N, D]`` are extracted once, standardised
(``z = (F - mu) / sigma``), and a scikit-learn model is fitted on them:
L2-regularised logistic regression for classification (``min_w sum_i CE(w z_i, y_i) +
||w||^2 / (2C)``) or ridge regression (``min_w ||Z w - y||^2 + alpha ||w||^2``). The
strength (``C`` or ``alpha``) is chosen on the validation split. The fitted model is folded
into a torch ``nn.Linear`` head, ``W' = W / sigma``, ``b' = b - W' mu``, so that
``predict(x) = head(backbone(x))`` needs no scikit-learn at inference time.

Reference: Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?",
https://arxiv.org/abs/1805.08974
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.supervised import SupervisedMethod, TaskKind


class LinearProbeParams(MethodParams):
    strengths: list[float] = Field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0],
        min_length=1,
        description="grid of C (classification) or 1/alpha (regression), chosen on val",
    )
    max_iter: int = Field(2000, gt=0, description="solver iterations")


@register_method
class LinearProbe(SupervisedMethod):
    """Frozen backbone + linear model on cached features, strength tuned on validation."""

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
        linear = _find_linear(head)
        super().__init__(backbone, linear, task, params)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.selected_strength_: float | None = None
        self.val_scores_: dict[float, float] = {}

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # frozen: dropout off, BatchNorm statistics fixed
        return self

    def fit_features(
        self, f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray
    ) -> LinearProbe:
        """Fit the head on features ``[N, D]``; choose the strength on ``(f_val, y_val)``."""
        mu = f_train.mean(0)
        sigma = f_train.std(0) + 1e-6
        z_train, z_val = (f_train - mu) / sigma, (f_val - mu) / sigma
        best = None
        for s in self.hparams.strengths:
            model = self._model(s).fit(z_train, y_train)
            pred = model.predict(z_val)
            score = (
                accuracy_score(y_val, pred)
                if self.task == "classification"
                else r2_score(y_val, pred)
            )
            self.val_scores_[s] = float(score)
            if best is None or score > best[0]:
                best = (score, s, model)
        assert best is not None
        self.selected_strength_ = best[1]
        self._load_into_head(best[2], mu, sigma)
        return self

    def _model(self, strength: float) -> Any:
        if self.task == "classification":
            return LogisticRegression(C=strength, max_iter=self.hparams.max_iter)
        return Ridge(alpha=1.0 / strength)

    def _load_into_head(self, model: Any, mu: np.ndarray, sigma: np.ndarray) -> None:
        coef = np.atleast_2d(model.coef_).astype(np.float64)
        intercept = np.atleast_1d(model.intercept_).astype(np.float64)
        out_features = self.head.out_features
        if self.task == "classification" and coef.shape[0] == 1 and out_features == 2:
            # binary logistic regression: p(1) = sigmoid(z) = softmax([0, z])[1]
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, intercept[0]])
        w = coef / sigma
        b = intercept - w @ mu
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(w, dtype=self.head.weight.dtype))
            self.head.bias.copy_(torch.as_tensor(b, dtype=self.head.bias.dtype))


def _find_linear(head: nn.Module) -> nn.Linear:
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        from transferkit.errors import ConfigError

        raise ConfigError(
            "linear_probe needs a linear head",
            where="model.head",
            fix="set model.head: linear (use finetune with freeze: all_but_head for an MLP)",
        )
    return linears[0]
