"""SetFit: contrastive fine-tuning of a sentence encoder from few labels, then a head.

Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts",
https://arxiv.org/abs/2209.11055. Two phases, on any :class:`Backbone` (pooled embeddings
``e = f(x)`` ``[B, D]``):

1. **Body.** Pairs of labelled rows (:mod:`transferkit.methods.pairs`: per row ``R =
   pair_iterations`` positives and as many negatives) train the backbone so that
   ``cos(e_a, e_b)`` nears 1 for same-label pairs and 0 otherwise (``loss: cosine``,
   ``mean (cos - t)^2``; or ``cosent`` / ``contrastive``), with the usual Trainer (schedules,
   checkpoints, exact resume, early stopping, DDP). Batches are either pair batches from
   :meth:`SetFit.pair_dataset` (SetFit's schedule: ``2 R N / batch_size`` steps per epoch,
   fresh pairs each epoch) or the labelled batches ``{"x", "y"}`` every supervised stage
   feeds: rows are embedded once and paired by the same rule within the batch (from the torch
   RNG, which the trainer seeds and restores); with ``batch_size >= N`` that is SetFit's pair
   distribution, all ``2 R N`` pairs in one step.
2. **Head.** ``head: logreg`` (SetFit's default): L2 logistic regression on standardised
   embeddings of the frozen body, ``min_w sum_i CE(w z_i, y_i) + ||w||^2 / (2C)``, folded
   into an ``nn.Linear`` (logits ``[B, C]``). A callback refits it at every epoch end before
   validation, ``C`` in ``strengths`` chosen by the trainer's validation metric (ties keep the
   earlier value; ``C = 1`` without validation), so early stopping compares and restores body
   and head together. :func:`fit_head_on_embeddings` fits it on given train/val data with
   :func:`~transferkit.methods.feature_heads.fit_head`. ``head: differentiable``: the
   configured ``model.head`` trains end to end with the body, ``loss = pair + w * CE``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import broadcast_object_list, send_to_device
from pydantic import Field
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.data.loaders import stack_raw
from transferkit.data.types import Dataset
from transferkit.engine.callbacks import Callback
from transferkit.engine.evaluate import module_device
from transferkit.errors import ConfigError, DataError
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.feature_heads import FeatureHeadParams, FittedHead, fit_head, fold_linear
from transferkit.methods.pairs import (
    PairDataset,
    PairLoss,
    draw_pairs,
    generate_pairs,
    pair_loss,
    training_rows,
)
from transferkit.methods.supervised import SupervisedMethod, TaskKind

_EPS = 1e-6


class SetFitParams(MethodParams):
    pair_iterations: int = Field(
        20, ge=1, description="R: per labelled row, R positive (same label) + R negative pairs"
    )
    loss: PairLoss = Field(
        "cosine", description="cosine: mean (cos - t)^2 | cosent: CoSENT ranking | contrastive"
    )
    cosent_scale: float = Field(20.0, gt=0, description="cosent: scale s of the cosines")
    margin: float = Field(0.5, gt=0, le=2, description="contrastive: cosine-distance margin")
    head: Literal["logreg", "differentiable"] = Field(
        "logreg",
        description="logreg: logistic regression on the frozen fine-tuned body, C tuned on val "
        "(SetFit default) | differentiable: model.head trained end to end with the body",
    )
    strengths: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1.0, 0.1, 10.0, 0.01, 100.0],
        min_length=1,
        description="logreg: grid of C chosen on val (ties keep the earlier value)",
    )
    max_iter: int = Field(1000, gt=0, description="logreg: solver iterations")
    head_lr_mult: float = Field(10.0, gt=0, description="differentiable: head lr = lr * this")
    head_loss_weight: float = Field(
        1.0, gt=0, description="differentiable: weight of the head's cross-entropy"
    )


@dataclass
class HeadFit:
    """The fitted logreg head: chosen ``C``, score per ``C``, and what scored it."""

    C: float
    val_scores: dict[float, float] = field(default_factory=dict)
    metric: str | None = None


@register_method
class SetFit(SupervisedMethod):
    """Contrastive body training on sentence pairs, then a logistic-regression head.

    Fitted state: ``head_fit_`` (:class:`HeadFit`, logreg head only).
    """

    name: ClassVar[str] = "setfit"
    family: ClassVar[str] = "fine-tuning"
    paper: ClassVar[str] = (
        "Tunstall et al. 2022, Efficient Few-Shot Learning Without Prompts (SetFit), "
        "https://arxiv.org/abs/2209.11055"
    )
    Params: ClassVar[type[MethodParams]] = SetFitParams

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: SetFitParams
    ) -> None:
        if task != "classification":
            raise ConfigError(
                "setfit learns from same-label / different-label pairs: it needs a "
                f"classification task, not {task}",
                where="method.name",
                fix="use finetune for regression",
            )
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(
                "setfit needs a head ending in a Linear layer", where="model.head", fix="linear"
            )
        num_classes = linears[-1].out_features
        if params.head == "logreg":
            head = nn.Linear(backbone.num_features, num_classes)
            nn.init.zeros_(head.weight)  # uniform logits until the first fit
            nn.init.zeros_(head.bias)
            head.requires_grad_(False)
        super().__init__(backbone, head, task, params)
        self.num_classes = num_classes
        self.head_fit_: HeadFit | None = None
        self._memo: dict[bytes, torch.Tensor] | None = None

    # ----------------------------------------------------------------- data
    def pair_dataset(self, train: Dataset, seed: int) -> PairDataset:
        """SetFit's pair set over the labelled training split (redrawn every epoch)."""
        return PairDataset(train, self.hparams.pair_iterations, seed)

    # ----------------------------------------------------------------- training
    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"loss", "pair_loss", "pairs"}`` (+ ``"head_loss"`` with a differentiable head)."""
        if "x_a" in batch and "x_b" in batch and "target" in batch:
            e_a, e_b = self.backbone(batch["x_a"]), self.backbone(batch["x_b"])
            out = self._pair_terms(e_a, e_b, batch["target"])
            if self.hparams.head == "differentiable":
                ce = F.cross_entropy(self.head(e_a), batch["y_a"].long())
                ce = 0.5 * (ce + F.cross_entropy(self.head(e_b), batch["y_b"].long()))
                out = self._add_head_loss(out, ce)
            return out
        if "x" in batch and "y" in batch:
            return self._batch_step(batch["x"], batch["y"])
        raise DataError(
            f"setfit got a batch with keys {sorted(batch)}",
            where="SetFit.training_step",
            fix='feed labelled batches {"x", "y"} or pair batches from method.pair_dataset(...)',
        )

    def _batch_step(self, x: Any, y: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.backbone(x)
        seed = int(torch.randint(0, 2**62, (1,)).item())  # the trainer seeds/restores this RNG
        pairs = draw_pairs(y.detach().cpu().numpy(), self.hparams.pair_iterations, seed)
        if len(pairs) == 0:  # one class in this batch: nothing to contrast
            zero = e.sum() * 0.0
            out = {"loss": zero, "pair_loss": zero.detach(), "pairs": 0.0}
        else:
            a = torch.as_tensor(pairs.a, device=e.device)
            b = torch.as_tensor(pairs.b, device=e.device)
            target = torch.as_tensor(pairs.target, device=e.device)
            out = self._pair_terms(e[a], e[b], target)
        if self.hparams.head == "differentiable":
            out = self._add_head_loss(out, F.cross_entropy(self.head(e), y.long()))
        return out

    def _pair_terms(
        self, e_a: torch.Tensor, e_b: torch.Tensor, target: torch.Tensor
    ) -> dict[str, Any]:
        p = self.hparams
        loss = pair_loss(p.loss, e_a, e_b, target, scale=p.cosent_scale, margin=p.margin)
        return {"loss": loss, "pair_loss": loss.detach(), "pairs": float(len(target))}

    def _add_head_loss(self, out: dict[str, Any], ce: torch.Tensor) -> dict[str, Any]:
        return {**out, "loss": out["loss"] + self.hparams.head_loss_weight * ce, "head_loss": ce}

    def training_callbacks(self) -> list[Callback]:
        """The pair-set check and (logreg head) the per-epoch head refit."""
        return [SetFitHeadCallback(self)]

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """``backbone`` at ``base_lr``; a differentiable ``head`` at ``base_lr * head_lr_mult``."""
        groups = []
        body = [q for q in self.backbone.parameters() if q.requires_grad]
        if body:
            groups.append({"params": body, "lr": base_lr, "name": "backbone"})
        head = [q for q in self.head.parameters() if q.requires_grad]
        if head:
            lr = base_lr * self.hparams.head_lr_mult
            groups.append({"params": head, "lr": lr, "name": "head"})
        return groups

    # ----------------------------------------------------------------- inference
    def embed(self, x: Any) -> torch.Tensor:
        """Pooled embeddings ``[B, D]`` (memoised inside :meth:`reuse_embeddings`)."""
        if self._memo is None:
            return self.backbone(x)
        key = _digest(x)
        if key not in self._memo:
            self._memo[key] = self.backbone(x)
        return self._memo[key]

    def predict(self, x: Any) -> torch.Tensor:
        """Logits ``[B, C]``: ``head(embed(x))``."""
        return self.head(self.embed(x))

    @contextmanager
    def reuse_embeddings(self) -> Iterator[None]:
        """Within the block the body is frozen: ``embed`` computes each input batch once."""
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    def set_head_(self, linear: nn.Linear) -> None:
        """Copy a fitted ``nn.Linear`` ``[D] -> [C]`` into the logreg head (in place)."""
        if self.hparams.head != "logreg":
            raise ConfigError(
                "the head is trained by gradient (head: differentiable); only a logreg head "
                "is fitted on embeddings",
                where="method.params.head",
                fix="use head: logreg",
            )
        with torch.no_grad():
            self.head.weight.copy_(linear.weight)
            self.head.bias.copy_(linear.bias)


def _digest(x: Any) -> bytes:
    """Content hash of prepared inputs (a tensor or a mapping of tensors)."""
    h = hashlib.sha256()
    items = sorted(x.items()) if isinstance(x, Mapping) else [("", x)]
    for key, t in items:
        h.update(str(key).encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(str((tuple(t.shape), t.dtype)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(t).encode())
    return h.digest()


# --------------------------------------------------------------------- head fitting
def embed_rows(backbone: Backbone, x: Any, batch_size: int = 64) -> np.ndarray:
    """Pooled embeddings ``[N, D]`` (float32) of raw inputs, in eval mode, without grad."""
    device = module_device(backbone)
    was_training = backbone.training
    backbone.eval()
    chunks = []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                batch = backbone.prepare(stack_raw(list(x[start : start + batch_size])))
                chunks.append(backbone(send_to_device(batch, device)).float().cpu().numpy())
    finally:
        backbone.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, backbone.num_features), np.float32)


def logreg_candidates(
    f: np.ndarray, y: np.ndarray, strengths: Iterable[float], max_iter: int, num_classes: int
) -> Iterator[tuple[float, nn.Linear]]:
    """``(C, head)`` per ``C``: logistic regression on ``z = (f - mu) / sigma``, folded."""
    mu = f.astype(np.float64).mean(0)
    sigma = f.astype(np.float64).std(0) + _EPS
    z = ((f - mu) / sigma).astype(np.float32)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"training labels must lie in 0..{num_classes - 1}",
            where=f"train split labels (found {y.min()}..{y.max()})",
            fix="encode class labels as integers 0..num_classes-1",
        )
    for c in strengths:
        with warnings.catch_warnings():  # a grid end may not converge; val decides
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=max_iter).fit(z, y)
        yield float(c), fold_linear(model, mu, sigma, num_classes, "classification")


def select_logreg_head(
    method: SetFit, f: np.ndarray, y: np.ndarray, score: Callable[[], float] | None
) -> HeadFit:
    """Install the logreg head whose ``C`` maximises ``score()`` (``C = 1`` without one)."""
    p = method.hparams
    grid = p.strengths if score is not None else [1.0]
    best: tuple[float, float, nn.Linear] | None = None
    scores: dict[float, float] = {}
    for c, linear in logreg_candidates(f, y, grid, p.max_iter, method.num_classes):
        if score is None:
            best = (0.0, c, linear)
            break
        method.set_head_(linear)
        scores[c] = float(score())
        if best is None or scores[c] > best[0]:
            best = (scores[c], c, linear)
    assert best is not None
    method.set_head_(best[2])
    return HeadFit(best[1], scores)


class SetFitHeadCallback(Callback):
    """Checks the pair set at train start; refits the logreg head before each validation.

    The refit runs on the main process (train embeddings, one logistic regression per ``C``,
    each scored by ``trainer.val_fn`` with the validation embeddings computed once) and the
    head is broadcast to the other processes. It draws no random numbers, so exact resume
    holds; the head is part of the method's state, hence of checkpoints and of the best
    weights early stopping restores.
    """

    def __init__(self, method: SetFit) -> None:
        self.method = method
        self.rows: tuple[Any, np.ndarray] | None = None

    def on_train_start(self, trainer: Any) -> None:
        self.rows = training_rows(trainer.train_dataset)
        generate_pairs(self.rows[1], 1, 0)  # DataError when no pair can be formed
        paired = isinstance(trainer.train_dataset, PairDataset)
        if not paired and trainer.config.batch_size < 2:
            raise ConfigError(
                "setfit pairs rows within each labelled batch: batch_size must be >= 2",
                where="train.batch_size",
                fix="use a batch size of at least 8 (as large as fits)",
            )

    def on_step_end(self, trainer: Any) -> None:
        c = trainer.config
        epoch_end = trainer.step_in_epoch >= trainer.batches_per_epoch
        last = c.max_steps is not None and trainer.global_step >= c.max_steps
        if self.method.hparams.head == "logreg" and (
            epoch_end or last or trainer.stop_reason is not None
        ):
            self.refit(trainer)

    def refit(self, trainer: Any) -> None:
        """Fit the logreg head on the training rows (C chosen by ``trainer.val_fn``)."""
        m = self.method
        assert self.rows is not None
        state = None
        if trainer.is_main_process:
            was_training = m.training
            m.eval()
            try:
                f = embed_rows(m.backbone, self.rows[0], trainer.config.batch_size)
                score = _ValScore(trainer, m) if trainer.val_fn is not None else None
                with m.reuse_embeddings():
                    fit = select_logreg_head(m, f, self.rows[1], score)
                fit.metric = score.metric if score is not None else None
            finally:
                m.train(was_training)
            state = (m.head.weight.detach().cpu(), m.head.bias.detach().cpu(), fit)
        acc = trainer.accelerator
        if acc is not None and acc.num_processes > 1:
            state = broadcast_object_list([state])[0]
        assert state is not None
        with torch.no_grad():
            m.head.weight.copy_(state[0])
            m.head.bias.copy_(state[1])
        m.head_fit_ = state[2]


class _ValScore:
    """``score()`` = the trainer's monitored validation metric (negated for mode ``min``);
    ``val_accuracy`` when the validation function does not return the monitored name."""

    def __init__(self, trainer: Any, method: SetFit) -> None:
        self.val_fn, self.method = trainer.val_fn, method
        self.monitor, self.mode = trainer.config.monitor, trainer.config.mode
        self.metric: str | None = None
        self.sign = 1.0

    def __call__(self) -> float:
        with torch.inference_mode():
            raw = self.val_fn(self.method)
        metrics = {(k if k.startswith("val_") else f"val_{k}"): float(v) for k, v in raw.items()}
        if self.metric is None:
            if self.monitor in metrics:
                self.metric, self.sign = self.monitor, 1.0 if self.mode == "max" else -1.0
            elif "val_accuracy" in metrics:
                self.metric = "val_accuracy"
            else:
                raise ConfigError(
                    f"setfit chooses C by {self.monitor!r}, which the validation function "
                    "does not return",
                    where="TrainConfig.monitor",
                    fix=f"monitor one of {', '.join(sorted(metrics))}",
                )
        return self.sign * metrics[self.metric]


def fit_head_on_embeddings(
    method: SetFit,
    train: Dataset | tuple[Any, Any],
    val: Dataset | tuple[Any, Any],
    *,
    batch_size: int = 64,
) -> FittedHead:
    """Fit the logreg head on the body's embeddings; ``C`` by val accuracy (``fit_head``).

    ``train`` / ``val``: a labelled :class:`Dataset` or a ``(raw inputs, labels)`` tuple.
    Sets ``method.head_fit_``; returns the fitted head with its val score per ``C``.
    """
    f_tr, y_tr = _embeddings(method, train, batch_size)
    f_va, y_va = _embeddings(method, val, batch_size)
    p = method.hparams
    fitted = fit_head(
        f_tr,
        y_tr,
        f_va,
        y_va,
        task="classification",
        num_outputs=method.num_classes,
        params=FeatureHeadParams(head="logreg", strengths=p.strengths, max_iter=p.max_iter),
    )
    assert isinstance(fitted.module, nn.Linear)
    method.set_head_(fitted.module)
    method.head_fit_ = HeadFit(fitted.selected, dict(fitted.val_scores), "val_accuracy")
    return fitted


def _embeddings(method: SetFit, src: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(src, Dataset):
        x, y = training_rows(src)
    elif isinstance(src, tuple) and len(src) == 2:
        x, y = src
    else:
        raise DataError(
            f"cannot embed a {type(src).__name__}",
            where="fit_head_on_embeddings",
            fix="pass a labelled Dataset or a (raw inputs, labels) tuple",
        )
    return embed_rows(method.backbone, x, batch_size), np.asarray(y)
