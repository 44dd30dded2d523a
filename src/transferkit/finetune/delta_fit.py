"""DELTA's supervised channel attention, fitted once when training starts.

DELTA (Li et al. 2019, https://arxiv.org/abs/1901.09229) weighs each channel ``i`` of layer
``j`` by how much the *source* model's target loss rises when the channel is removed,
``W_j = softmax(dL_j / tau)``. That needs a head on the frozen start model's features that
already fits the target labels; the new head is random at that point, so a linear head is
fitted here in closed form on ``samples`` training examples (multinomial logistic
regression for classification, ridge regression for regression, both on standardised
features, scikit-learn), folded back into an ``nn.Linear`` and handed to
:meth:`~transferkit.losses.delta.DELTA.fit_attention`.

The examples are spread evenly over the training set (indices ``linspace(0, n-1, m)``: no
random draw, so exact resume is unaffected, and class-sorted data sets are covered). The
fitted weights are buffers of the DELTA module, so a resumed run loads them and skips this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch import Tensor, nn
from torch.utils.data import default_collate

from transferkit.engine.callbacks import Callback
from transferkit.errors import DataError
from transferkit.losses.delta import DELTA

if TYPE_CHECKING:
    from transferkit.engine.trainer import Trainer

LossFn = Callable[[Tensor, Tensor], Tensor]


def _standardise(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, sd = f.mean(0), f.std(0) + 1e-6
    return (f - mu) / sd, mu, sd


def _linear(
    w: np.ndarray, b: np.ndarray, mu: np.ndarray, sd: np.ndarray, like: Tensor
) -> nn.Linear:
    """``nn.Linear`` computing ``w @ ((f - mu) / sd) + b`` (``w`` ``[C, D]``, ``b`` ``[C]``)."""
    w_raw = w / sd
    lin = nn.Linear(w.shape[1], w.shape[0]).to(device=like.device, dtype=like.dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w_raw))
        lin.bias.copy_(torch.as_tensor(b - w_raw @ mu))
    return lin


def fit_probe_head(features: Tensor, y: Tensor, task: str) -> tuple[nn.Linear, Tensor, LossFn]:
    """A closed-form linear head on ``features`` ``[B, D]``: ``(head, targets, loss_fn)``.

    For classification the targets are ``y`` re-indexed to the classes present (the head
    has one logit per present class; a binary problem gets logits ``[0, z]``) and the loss
    is per-example cross-entropy; for regression the loss is the squared error.
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    f, mu, sd = _standardise(features.detach().double().cpu().numpy())
    y_np = y.detach().cpu().numpy()
    if task == "regression":
        reg = Ridge(alpha=1.0).fit(f, y_np.astype(np.float64))
        head = _linear(reg.coef_[None, :], np.atleast_1d(reg.intercept_), mu, sd, features)

        def sq(p: Tensor, t: Tensor) -> Tensor:
            return (p.squeeze(-1) - t.to(p.dtype)).pow(2)

        return head, y.to(features.dtype), sq
    classes = np.unique(y_np)
    if len(classes) < 2:
        raise DataError(
            "DELTA's supervised attention needs examples of at least two classes; the "
            f"sampled training examples all have label {classes.tolist()}",
            where="method.params.delta.attention",
            fix='use attention: "none", or a training set with several classes',
        )
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(f, y_np)
    w, b = clf.coef_, clf.intercept_
    if len(classes) == 2:
        w, b = np.vstack([np.zeros_like(w), w]), np.concatenate([[0.0], b])
    head = _linear(w, b, mu, sd, features)
    targets = torch.as_tensor(np.searchsorted(classes, y_np), device=y.device)

    def ce(p: Tensor, t: Tensor) -> Tensor:
        return nn.functional.cross_entropy(p, t, reduction="none")

    return head, targets, ce


def fit_delta_attention(
    delta: DELTA, x: Any, y: Tensor, task: str, temperature: float = 1.0
) -> list[Tensor]:
    """Fit a probe head on the frozen start model's features of ``(x, y)``, then ``W_j``."""
    with torch.no_grad():
        features = delta.source(x)
    head, targets, loss_fn = fit_probe_head(features, y, task)
    return delta.fit_attention(x, targets, head, loss_fn=loss_fn, temperature=temperature)


def sample_batch(dataset: Any, collate_fn: Callable | None, samples: int) -> Any:
    """``min(samples, n)`` examples at evenly spaced indices, collated into one batch."""
    n = len(dataset)
    idx = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
    items = [dataset[int(i)] for i in idx]
    return (collate_fn or default_collate)(items)


class DeltaAttentionFit(Callback):
    """Fits DELTA's supervised attention at ``on_train_start`` unless it is already fitted."""

    def __init__(self, delta: DELTA, task: str, samples: int, temperature: float = 1.0) -> None:
        self.delta, self.task = delta, task
        self.samples, self.temperature = samples, temperature

    def on_train_start(self, trainer: Trainer) -> None:
        if self.delta.attention_fitted:
            return
        batch = sample_batch(trainer.train_dataset, trainer.collate_fn, self.samples)
        batch = send_to_device(batch, trainer.device)
        fit_delta_attention(self.delta, batch["x"], batch["y"], self.task, self.temperature)
