"""Sentence pairs from labelled rows, and the pair losses of contrastive fine-tuning.

Pair generation (SetFit, Tunstall et al. 2022, https://arxiv.org/abs/2209.11055, sec. 3.1).
From labelled rows ``(x_i, y_i)``, each of ``R`` *pair iterations* gives every eligible
anchor ``i`` one positive pair ``(i, j, 1)`` with ``y_j = y_i, j != i`` and one negative pair
``(i, k, 0)`` with ``y_k != y_i``; partners are drawn uniformly with replacement. A row is an
eligible anchor when its class has another labelled row (and some other class exists), so
there are exactly ``R * n_anchors`` positives and as many negatives. A label ``< 0`` marks an
unlabelled row (scikit-learn's convention): it takes part in no pair. The draw is a pure
function of the labels, ``R`` and the random generator.

Losses on the cosine similarity ``c_p = cos(e_a, e_b)`` of pair ``p``'s pooled embeddings
``[P, D]`` and its target ``t_p`` (1 = same label, 0 = different):

* ``cosine`` (SetFit's default, Sentence-BERT's ``CosineSimilarityLoss``, Reimers & Gurevych
  2019, https://arxiv.org/abs/1908.10084): ``L = 1/P sum_p (c_p - t_p)^2``;
* ``cosent`` (CoSENT, Su 2022, https://kexue.fm/archives/8847): only the order matters,
  ``L = log(1 + sum_{t_p > t_q} exp(s (c_q - c_p)))`` with scale ``s``;
* ``contrastive`` (Hadsell et al. 2006, on the cosine distance ``d_p = 1 - c_p``):
  ``L = 1/(2P) sum_p [t_p d_p^2 + (1 - t_p) max(0, m - d_p)^2]`` with margin ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from transferkit.data.loaders import ExampleDataset
from transferkit.data.types import Dataset
from transferkit.errors import ConfigError, DataError

PairLoss = Literal["cosine", "cosent", "contrastive"]


@dataclass(frozen=True)
class Pairs:
    """Row indices ``a``, ``b`` (int64 ``[P]``) and targets (float32 ``[P]``: 1 / 0)."""

    a: np.ndarray
    b: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def _class_labels(labels: Any) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DataError(
            f"pair generation needs one label per row, got an array of shape {y.shape}",
            where="labels",
            fix="pass class ids as a 1-D integer array",
        )
    if y.size and not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(
            f"pair generation needs integer class labels, got dtype {y.dtype}",
            where="labels",
            fix="contrastive pairs are defined for classification: encode classes as 0..C-1",
        )
    return y.astype(np.int64)


def draw_pairs(labels: Any, pair_iterations: int, rng: np.random.Generator | int) -> Pairs:
    """Positive/negative pairs of the labelled rows; empty when no row can anchor a pair.

    Order: iteration by iteration, anchors in row order, each anchor's positive then its
    negative pair.
    """
    if int(pair_iterations) < 1:
        raise ConfigError(
            f"pair_iterations must be >= 1, got {pair_iterations}",
            where="method.params.pair_iterations",
            fix="use a positive integer (SetFit uses 20)",
        )
    rng = np.random.default_rng(rng)
    y = _class_labels(labels)
    rows = np.flatnonzero(y >= 0)
    by_class = rows[np.argsort(y[rows], kind="stable")]  # labelled rows grouped by class
    classes, start, count = np.unique(y[by_class], return_index=True, return_counts=True)
    if len(classes) < 2:
        return Pairs(*(np.zeros(0, np.int64),) * 2, np.zeros(0, np.float32))
    slot = np.searchsorted(classes, y[by_class])  # class slot of each grouped row
    ok = count[slot] >= 2
    anchors, c = by_class[ok], slot[ok]
    pos_in_class = (np.arange(len(by_class)) - start[slot])[ok]
    n_rows, r = len(by_class), int(pair_iterations)
    # positive: one of the n_c - 1 other rows of the class (skip the anchor's own position)
    u = rng.integers(0, count[c] - 1, size=(r, len(anchors)))
    pos = by_class[start[c] + u + (u >= pos_in_class)]
    # negative: one of the n_rows - n_c rows outside the class block
    v = rng.integers(0, n_rows - count[c], size=(r, len(anchors)))
    neg = by_class[v + count[c] * (v >= start[c])]
    a = np.repeat(np.tile(anchors, r), 2)
    b = np.stack([pos, neg], axis=-1).reshape(-1)
    target = np.tile(np.array([1.0, 0.0], np.float32), r * len(anchors))
    return Pairs(a.astype(np.int64), b.astype(np.int64), target)


def generate_pairs(labels: Any, pair_iterations: int, rng: np.random.Generator | int) -> Pairs:
    """:func:`draw_pairs` over a whole labelled set; an error when it yields no pair.

    Raises:
        DataError: fewer than two labelled classes, or no class with two labelled rows.
    """
    pairs = draw_pairs(labels, pair_iterations, rng)
    if len(pairs) == 0:
        y = _class_labels(labels)
        classes, counts = np.unique(y[y >= 0], return_counts=True)
        found = dict(zip(classes.tolist(), counts.tolist(), strict=True))
        raise DataError(
            "contrastive pairs need two labelled classes and a class with two labelled rows",
            where=f"training labels (class: count = {found})",
            fix="label at least two examples of one class and one example of another",
        )
    return pairs


class PairDataset(torch.utils.data.Dataset):
    """SetFit's pair set over a labelled :class:`Dataset`, redrawn each epoch.

    Epoch ``e`` draws its pairs from ``numpy.random.default_rng([seed, e])``, so the pairs
    depend only on (labels, ``pair_iterations``, seed, epoch) and a resumed run sees the same
    ones. The length ``2 * pair_iterations * n_anchors`` is the same every epoch. Items are
    ``{"x_a", "x_b": raw inputs, "y_a", "y_b": labels, "target": 1.0 | 0.0}``, which
    :class:`~transferkit.data.loaders.collate_with` turns into a batch.
    """

    def __init__(self, dataset: Dataset, pair_iterations: int, seed: int = 0) -> None:
        if dataset.y is None:
            raise DataError(
                "contrastive pairs need labels, but the training split is unlabelled",
                where=f"dataset {dataset.name}",
                fix="give labelled training rows",
            )
        self.dataset = dataset
        self.pair_iterations = int(pair_iterations)
        self.seed = int(seed)
        self.labels = _class_labels(dataset.y)
        self.pairs = generate_pairs(self.labels, self.pair_iterations, [self.seed, 0])

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s pairs (the trainer calls this at every epoch start)."""
        self.pairs = generate_pairs(self.labels, self.pair_iterations, [self.seed, int(epoch)])

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b = int(self.pairs.a[i]), int(self.pairs.b[i])
        x = self.dataset.x
        return {
            "x_a": x[a],
            "x_b": x[b],
            "y_a": self.labels[a],
            "y_b": self.labels[b],
            "target": self.pairs.target[i],
        }


def training_rows(dataset: Any) -> tuple[Any, np.ndarray]:
    """The labelled rows ``(raw x, y)`` behind a trainer's dataset (labels ``< 0`` dropped)."""
    if isinstance(dataset, PairDataset | ExampleDataset):
        dataset = dataset.dataset
    if isinstance(dataset, Dataset):
        if dataset.y is None:
            raise DataError("setfit needs labelled training rows", where=f"dataset {dataset.name}")
        x, y = dataset.x, np.asarray(dataset.y)
    else:
        items = [dataset[i] for i in range(len(dataset))]
        if not items or not all(isinstance(it, tuple) and len(it) == 2 for it in items):
            raise DataError(
                "setfit cannot find the labelled rows of this training dataset",
                where=type(dataset).__name__,
                fix="train on an ExampleDataset, a PairDataset or items (raw_x, label)",
            )
        x, y = [it[0] for it in items], np.asarray([it[1] for it in items])
    keep = np.flatnonzero(y >= 0)
    x = x[keep] if isinstance(x, np.ndarray) else [x[i] for i in keep]
    return x, y[keep].astype(np.int64)


def cosine_similarity_loss(cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/P sum_p (c_p - t_p)^2`` for cosines and targets ``[P]``."""
    return F.mse_loss(cos, target.to(cos.dtype))


def cosent_loss(cos: torch.Tensor, target: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """``log(1 + sum_{t_p > t_q} exp(scale (c_q - c_p)))`` for cosines and targets ``[P]``.

    0 terms (no pair ranked above another) give ``log 1 = 0``.
    """
    t = target.to(cos.dtype)
    diff = scale * (cos[None, :] - cos[:, None])  # [p, q] = s (c_q - c_p)
    ranked = t[:, None] > t[None, :]  # pairs where p should score above q
    terms = torch.cat([diff.new_zeros(1), diff[ranked]])
    return torch.logsumexp(terms, dim=0)


def contrastive_loss(cos: torch.Tensor, target: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """``1/(2P) sum_p [t_p d_p^2 + (1 - t_p) max(0, m - d_p)^2]`` with ``d_p = 1 - c_p``."""
    t = target.to(cos.dtype)
    d = 1.0 - cos
    return 0.5 * (t * d.pow(2) + (1.0 - t) * F.relu(margin - d).pow(2)).mean()


def pair_loss(
    kind: PairLoss,
    e_a: torch.Tensor,
    e_b: torch.Tensor,
    target: torch.Tensor,
    *,
    scale: float = 20.0,
    margin: float = 0.5,
) -> torch.Tensor:
    """The ``kind`` loss of embeddings ``e_a``, ``e_b`` ``[P, D]`` (cosine in float32)."""
    cos = F.cosine_similarity(e_a.float(), e_b.float(), dim=-1)
    if kind == "cosine":
        return cosine_similarity_loss(cos, target)
    if kind == "cosent":
        return cosent_loss(cos, target, scale)
    if kind == "contrastive":
        return contrastive_loss(cos, target, margin)
    raise ConfigError(
        f"unknown pair loss {kind!r}",
        where="method.params.loss",
        fix="use cosine, cosent or contrastive",
    )
