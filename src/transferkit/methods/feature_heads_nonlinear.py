"""The non-linear heads of :mod:`transferkit.methods.feature_heads`: k-NN and a small MLP.

Both work on standardised features ``z = (f - mu) / sigma`` (training statistics) and end
as torch modules on raw features ``[B, D]``:

* ``mlp`` (:class:`MLPHead`): ``Linear(D, H) -> GELU -> Linear(H, K)`` trained full-batch
  with AdamW on the cross-entropy (classification) or the mean squared error of
  standardised targets (regression, de-standardised in the module), early stopped on the
  validation loss (the best state is kept); the weight decay is chosen on val.
* ``knn`` (:class:`KNNHead`): k nearest neighbours by cosine ``1 - <z, z_i> / (|z| |z_i|)``
  or euclidean distance; ``k`` is chosen on val. It cannot be folded: the standardised
  training set and labels live in buffers (torch prediction, saved with ``state_dict``).
  Classification outputs log vote fractions ``log(n_k / k)`` (``softmax`` gives the
  fractions back); regression the neighbours' mean target ``[B, 1]``.

Reference: Wu et al. 2018, https://arxiv.org/abs/1805.01978 (kNN on normalised features).
:func:`~transferkit.methods.feature_heads.fit_head` dispatches here; import the heads from
either module.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from torch import nn

from transferkit.errors import DataError

if TYPE_CHECKING:
    from transferkit.methods.feature_heads import FeatureHeadParams, FittedHead, HeadProblem

__all__ = ["KNNHead", "MLPHead", "fit_knn", "fit_mlp"]

Task = Literal["classification", "regression"]
_EPS = 1e-6


class MLPHead(nn.Module):
    """``net((f - mu) / sigma) * out_scale + out_shift`` with a one-hidden-layer ``net``."""

    def __init__(self, in_features: int, hidden: int, num_outputs: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, num_outputs)
        )
        self.register_buffer("mu", torch.zeros(in_features))
        self.register_buffer("sigma", torch.ones(in_features))
        self.register_buffer("out_scale", torch.ones(()))
        self.register_buffer("out_shift", torch.zeros(()))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net((f - self.mu) / self.sigma) * self.out_scale + self.out_shift


class KNNHead(nn.Module):
    """k-NN over buffers ``train_z`` ``[N, D]`` (standardised) and ``train_y`` ``[N]``.

    The buffers are empty until :meth:`set_data`; loading a ``state_dict`` resizes them,
    so a freshly built head loads a fitted one's state.
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        task: Task,
        metric: Literal["cosine", "euclidean"] = "cosine",
    ) -> None:
        super().__init__()
        self.task, self.metric, self.num_outputs = task, metric, num_outputs
        self.register_buffer("mu", torch.zeros(in_features))
        self.register_buffer("sigma", torch.ones(in_features))
        self.register_buffer("train_z", torch.zeros(0, in_features))
        ydtype = torch.long if task == "classification" else torch.float32
        self.register_buffer("train_y", torch.zeros(0, dtype=ydtype))
        self.register_buffer("k", torch.ones((), dtype=torch.long))

    def set_data(
        self, mu: np.ndarray, sigma: np.ndarray, z: np.ndarray, y: np.ndarray, k: int
    ) -> KNNHead:
        self.mu = torch.as_tensor(mu, dtype=torch.float32)
        self.sigma = torch.as_tensor(sigma, dtype=torch.float32)
        self.train_z = torch.as_tensor(z, dtype=torch.float32)
        self.train_y = torch.as_tensor(y, dtype=self.train_y.dtype)
        self.k = torch.tensor(int(k))
        return self

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        for name in ("train_z", "train_y"):
            incoming = state_dict.get(prefix + name)
            if incoming is not None and incoming.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(incoming, dtype=getattr(self, name).dtype))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Log vote fractions ``[B, K]`` (classification) or mean neighbour target ``[B, 1]``."""
        z = ((f - self.mu) / self.sigma).to(self.train_z.dtype)
        if self.metric == "cosine":
            dist = 1.0 - F.normalize(z, dim=-1) @ F.normalize(self.train_z, dim=-1).T
        else:
            dist = torch.cdist(z, self.train_z)
        k = min(int(self.k), self.train_z.shape[0])
        idx = dist.topk(k, dim=-1, largest=False).indices  # [B, k]
        neigh = self.train_y[idx]
        if self.task == "regression":
            return neigh.float().mean(-1, keepdim=True)
        votes = F.one_hot(neigh, self.num_outputs).float().mean(1)  # [B, K]
        return votes.clamp_min(1e-12).log()


def fit_knn(pb: HeadProblem) -> FittedHead:
    """k-NN: every ``k`` of ``params.ks`` (capped at ``N``) scored on val; the best (ties:
    the smaller ``k``) kept in a :class:`KNNHead`."""
    from transferkit.methods.feature_heads import FittedHead, val_metric  # (import cycle)

    z_tr, z_va, params = pb.z(pb.f_tr), pb.z(pb.f_va), pb.params
    ks = sorted({min(k, len(z_tr)) for k in params.ks if k > 0})
    if not ks:
        raise DataError("no valid k for knn", where="params.ks", fix="use positive integers")
    scores: dict[float, float] = {}
    best: tuple[float, int] | None = None
    cls = KNeighborsClassifier if pb.task == "classification" else KNeighborsRegressor
    for k in ks:
        model = cls(n_neighbors=k, metric=params.knn_metric, algorithm="brute")
        scores[float(k)] = val_metric(pb.task, pb.y_va, model.fit(z_tr, pb.y_tr).predict(z_va))
        if best is None or scores[float(k)] > best[0]:
            best = (scores[float(k)], k)
    assert best is not None
    head = KNNHead(z_tr.shape[1], pb.num_outputs, pb.task, params.knn_metric)
    head.set_data(pb.mu, pb.sigma, z_tr, pb.y_tr, best[1])
    return FittedHead(head, "k", float(best[1]), scores, best[0])


def fit_mlp(pb: HeadProblem) -> FittedHead:
    """MLP: one :class:`MLPHead` per weight decay of ``params.mlp_weight_decays`` (same
    initialisation, seeded by ``params.seed`` or one draw of torch's RNG), trained by
    :func:`_train_mlp`; the best on val is kept."""
    from transferkit.methods.feature_heads import FittedHead, val_metric  # (import cycle)

    params = pb.params
    seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31 - 1, ()))
    x_tr, x_va = torch.as_tensor(pb.f_tr), torch.as_tensor(pb.f_va)
    ydt = torch.long if pb.task == "classification" else torch.float32
    t_tr, t_va = torch.as_tensor(pb.y_tr, dtype=ydt), torch.as_tensor(pb.y_va, dtype=ydt)
    scores: dict[float, float] = {}
    best: tuple[float, float, MLPHead] | None = None
    for wd in params.mlp_weight_decays:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = MLPHead(x_tr.shape[1], params.mlp_hidden, pb.num_outputs)
        head.mu.copy_(torch.as_tensor(pb.mu))
        head.sigma.copy_(torch.as_tensor(pb.sigma))
        if pb.task == "regression":
            head.out_shift.fill_(float(np.mean(pb.y_tr)))
            head.out_scale.fill_(float(np.std(pb.y_tr)) + _EPS)
        _train_mlp(head, (x_tr, t_tr), (x_va, t_va), pb.task, wd, params)
        with torch.no_grad():
            scores[wd] = val_metric(pb.task, pb.y_va, head(x_va).numpy())
        if best is None or scores[wd] > best[0]:
            best = (scores[wd], wd, head)
    assert best is not None
    return FittedHead(best[2], "weight_decay", best[1], scores, best[0])


def _mlp_loss(head: MLPHead, x: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    out = head(x)
    if task == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out.squeeze(-1) / head.out_scale, y / head.out_scale)


def _train_mlp(
    head: MLPHead,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    task: str,
    wd: float,
    params: FeatureHeadParams,
) -> None:
    """Full-batch AdamW; keep the state with the lowest validation loss (early stopping)."""
    opt = torch.optim.AdamW(head.net.parameters(), lr=params.mlp_lr, weight_decay=wd)
    best_loss, best_state, waited = float("inf"), copy.deepcopy(head.state_dict()), 0
    for _ in range(params.mlp_max_epochs):
        head.train()
        opt.zero_grad()
        _mlp_loss(head, *train, task).backward()
        opt.step()
        head.eval()
        with torch.no_grad():
            loss = float(_mlp_loss(head, *val, task))
        if loss < best_loss - 1e-7:
            best_loss, best_state, waited = loss, copy.deepcopy(head.state_dict()), 0
        else:
            waited += 1
            if waited >= params.mlp_patience:
                break
    head.load_state_dict(best_state)
    head.eval()
