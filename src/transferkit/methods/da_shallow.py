"""Shallow domain adaptation on frozen features: CORAL and subspace alignment.

Both are closed-form (``closed_form = True``): the runner extracts frozen features of the
labelled source (train, val) and of the unlabelled target, and calls
``fit_features(f_tr, y_tr, f_va, y_va, f_target=f_t)``. A linear map learnt without target
labels moves the *source* features towards the target domain; the head (any
:mod:`~transferkit.methods.feature_heads` head, strength tuned on the mapped source
validation features) is fitted on the mapped source, and ``head(f_target)`` gives target
logits ``[B, C]`` from raw target features ``[B, D]``.

With ``standardize`` every domain is z-scored per feature first, ``z = (f - mu) / sigma``
(CORAL's default, as in its paper: ``eps`` is then in units of feature variance, whatever
the backbone's scale; subspace alignment defaults to plain centred PCA).

**CORAL** (Sun, Feng & Saenko 2016): with covariances ``C_s, C_t`` ``[D, D]`` (of the
z-scored features), whiten the source and re-colour it with the target covariance,

.. math::

    f_s' = \\mu_t + \\big((f_s - \\mu_s) S_s^{-1} (C_s + \\epsilon I)^{-1/2}
           (C_t + \\epsilon I)^{1/2}\\big) S_t

(row vectors, ``S = diag(sigma)``; without ``standardize`` ``S = I``). With ``eps = 0``
and full-rank data ``cov(f_s') = C_t`` exactly; identical domains give the identity. The
paper z-scores both domains, which centres them; here the map also moves the source mean
onto the target mean, so the head applies to raw target features unchanged. Matrix powers
use a symmetric eigendecomposition in float64 (``eps = 0`` on a singular ``C_s``: the
pseudo-inverse root, zero on the null space). On few z-scored features ``eps = 1`` shrinks
the alignment strongly (the correlation matrix has trace ``D``); lower it there.

**Subspace alignment** (Fernando et al. 2013): PCA bases ``X_s, X_t`` ``[D, d]`` of each
(z-scored) domain, alignment ``M = X_s^T X_t`` ``[d, d]``; the source is represented as
``z_s X_s M`` and the target as ``z_t X_t`` (``[N, d]``). Folding ``S^{-1}`` into the bases
gives ``proj_s = S_s^{-1} X_s M`` and ``proj_t = S_t^{-1} X_t``, so a representation is
``(f - mu) proj``. With ``d = D``, ``X_s M = X_t`` and SA reduces to centring each domain
(plus a shared rotation): the alignment acts through ``d < D``. A linear head ``W r + b``
(``W`` ``[C, d]``) on the target representation folds into ONE ``nn.Linear`` on raw target
features:

.. math::

    W\\, proj_t^T (f - \\mu_t) + b = (W\\, proj_t^T) f + (b - W\\, proj_t^T \\mu_t),

i.e. ``weight = W proj_t^T`` ``[C, D]``, ``bias = b - weight mu_t``; other heads are kept as
``nn.Sequential(AlignedProjection(mu_t, proj_t), head)``. ``prototype_transductive`` refines
its prototypes with the target in the head's space (CORAL ``f_t``, SA ``(f_t - mu_t) proj_t``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import scipy.linalg
import torch
from pydantic import Field
from sklearn.decomposition import PCA
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.errors import ConfigError, DataError
from transferkit.methods.base import MethodParams, register_method
from transferkit.methods.domain_adaptation import DAParams
from transferkit.methods.feature_heads import LINEAR_HEADS, build_head, fit_head
from transferkit.methods.linear_probe import LinearProbe, LinearProbeParams
from transferkit.methods.supervised import TaskKind

__all__ = [
    "CORAL",
    "AlignedProjection",
    "CoralParams",
    "ShallowDAParams",
    "SubspaceAlignment",
    "SubspaceAlignmentParams",
    "coral_map",
    "coral_transform",
    "fold_projection",
    "pca_basis",
    "subspace_alignment_maps",
]

_TINY = 1e-12  # relative floor below which a std or an eigenvalue counts as zero


def _features(f: object, name: str, dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """``f`` as a finite float64 ``[N, D]`` array, else a DataError naming ``name``."""
    arr = np.asarray(f, dtype=np.float64)
    fix = "pass features [N, D] extracted with the same backbone (method.extract)"
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        want = f"[N, {dim or 'D'}]"
        raise DataError(f"{name} have shape {arr.shape}, expected {want}", where=name, fix=fix)
    if arr.shape[0] < min_rows:
        raise DataError(
            f"{name} hold {arr.shape[0]} examples, at least {min_rows} are needed",
            where=name,
            fix="give more examples of this domain (a covariance needs 2 or more)",
        )
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        raise DataError(
            f"{name} contain {len(bad)} non-finite values",
            where=f"{name}, row {bad[0][0]}, column {bad[0][1]}",
            fix="remove or impute NaN / inf features",
        )
    return arr


def _pair(f_s: object, f_t: object) -> tuple[np.ndarray, np.ndarray]:
    """Source and target features, each ``[N >= 2, D]`` with the same ``D``."""
    s = _features(f_s, "source features", min_rows=2)
    return s, _features(f_t, "target features", s.shape[1], min_rows=2)


def _moments(f: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean ``[D]`` and std ``[D]`` (ones when not standardising)."""
    std = f.std(0, ddof=1) if standardize else np.ones(f.shape[1])
    return f.mean(0), std


def _safe(std: np.ndarray) -> np.ndarray:
    """A divisor: constant features (std ~ 0) are divided by 1 (their z is 0)."""
    return np.where(std > _TINY * max(1.0, float(std.max(initial=0.0))), std, 1.0)


def _sym_power(c: np.ndarray, power: float) -> np.ndarray:
    """``C^power`` of a symmetric PSD matrix; negative powers act on the range only."""
    w, v = scipy.linalg.eigh(c)
    w = np.clip(w, 0.0, None)
    keep = w > max(w.max(initial=0.0), _TINY) * c.shape[0] * np.finfo(np.float64).eps
    wp = np.zeros_like(w)
    wp[keep] = w[keep] ** power
    return (v * wp) @ v.T


def coral_map(
    f_s: np.ndarray, f_t: np.ndarray, eps: float = 1.0, *, standardize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """CORAL's affine map ``f -> f A + b`` (``A`` ``[D, D]``, ``b`` ``[D]``) from ``f_s`` ``[N_s,
    D]`` to ``f_t`` ``[N_t, D]``: ``A = S_s^-1 (C_s + eps I)^-1/2 (C_t + eps I)^1/2 S_t``,
    ``b = mu_t - mu_s A``.

    Raises:
        DataError: mismatched ``D``, fewer than 2 examples in a domain, non-finite values,
            or ``eps < 0``.
    """
    if eps < 0:
        raise DataError(f"eps must be >= 0, got {eps}", where="coral eps", fix="use eps >= 0")
    s, t = _pair(f_s, f_t)
    (mu_s, sd_s), (mu_t, sd_t) = _moments(s, standardize), _moments(t, standardize)
    eye = np.eye(s.shape[1])
    cov_s = np.atleast_2d(np.cov((s - mu_s) / _safe(sd_s), rowvar=False)) + eps * eye
    cov_t = np.atleast_2d(np.cov((t - mu_t) / _safe(sd_t), rowvar=False)) + eps * eye
    core = _sym_power(cov_s, -0.5) @ _sym_power(cov_t, 0.5)
    a = (core / _safe(sd_s)[:, None]) * sd_t[None, :]  # a constant target feature stays one
    return a, mu_t - mu_s @ a


def coral_transform(
    f_s: np.ndarray, f_t: np.ndarray, eps: float = 1.0, *, standardize: bool = True
) -> np.ndarray:
    """Source features ``[N_s, D]`` re-coloured with the target covariance (float64)."""
    a, b = coral_map(f_s, f_t, eps, standardize=standardize)
    return np.asarray(f_s, np.float64) @ a + b


def pca_basis(
    f: np.ndarray, d: int, *, standardize: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean [D], std [D], basis [D, d])``: the top-``d`` principal directions (orthonormal
    columns, sign fixed by scikit-learn) of ``(f - mean) / std`` (``std = 1`` if not
    ``standardize``)."""
    f = np.asarray(f, np.float64)
    mean, std = _moments(f, standardize)
    pca = PCA(n_components=d, svd_solver="full").fit((f - mean) / _safe(std))
    return mean, std, pca.components_.T.copy()


def _check_d(d: int | None, n_s: int, n_t: int, dim: int) -> int:
    limit = min(dim, n_s - 1, n_t - 1)
    if d is None:
        return min(50, limit)
    if not 1 <= d <= limit:
        raise DataError(
            f"subspace dimension d={d} is out of range: at most min(D={dim}, N_s-1={n_s - 1}, "
            f"N_t-1={n_t - 1}) = {limit} components exist",
            where="method.params.d",
            fix=f"set d between 1 and {limit}, or leave it unset (min(50, D, N-1))",
        )
    return d


def subspace_alignment_maps(
    f_s: np.ndarray, f_t: np.ndarray, d: int | None = None, *, standardize: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(proj_s [D, d], proj_t [D, d], mean_s [D], mean_t [D])``: the source is represented
    as ``(f_s - mean_s) @ proj_s`` (``= z_s X_s M``), the target as ``(f_t - mean_t) @ proj_t``
    (``= z_t X_t``). ``d = None``: ``min(50, D, N_s - 1, N_t - 1)``.

    Raises:
        DataError: mismatched ``D``, fewer than 2 examples, non-finite values, ``d`` too big.
    """
    s, t = _pair(f_s, f_t)
    d = _check_d(d, len(s), len(t), s.shape[1])
    mean_s, sd_s, x_s = pca_basis(s, d, standardize=standardize)
    mean_t, sd_t, x_t = pca_basis(t, d, standardize=standardize)
    m = x_s.T @ x_t  # [d, d]
    return (x_s @ m) / _safe(sd_s)[:, None], x_t / _safe(sd_t)[:, None], mean_s, mean_t


class AlignedProjection(nn.Module):
    """``(f - mean) @ proj``: raw features ``[B, D]`` -> aligned representation ``[B, d]``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("proj", torch.zeros(in_features, out_features))

    @classmethod
    def from_arrays(cls, mean: np.ndarray, proj: np.ndarray) -> AlignedProjection:
        module = cls(*proj.shape)
        module.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        module.proj.copy_(torch.as_tensor(proj, dtype=torch.float32))
        return module

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.mean) @ self.proj


def fold_projection(linear: nn.Linear, mean: np.ndarray, proj: np.ndarray) -> nn.Linear:
    """One ``nn.Linear(D, C)`` equal to ``linear((f - mean) @ proj)`` (folded in float64)."""
    w, b = linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()
    weight = w @ np.asarray(proj, np.float64).T  # [C, d] @ [d, D]
    out = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        out.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        out.bias.copy_(torch.as_tensor(b - weight @ np.asarray(mean, np.float64)))
    return out


class ShallowDAParams(LinearProbeParams, DAParams):
    """Head choice and grids of the linear probe; ``trade_off`` / ``backbone_lr_mult`` are
    unused by the fit (the latter sets the source-only baseline's backbone rate)."""


class ShallowDA(LinearProbe):
    """Frozen backbone; the head is fitted on source features mapped towards the target."""

    family: ClassVar[str] = "domain-adaptation"
    closed_form: ClassVar[bool] = True

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: ShallowDAParams
    ) -> None:
        if task != "classification":
            raise ConfigError(
                f"{self.name} supports classification only, got task={task!r}",
                where="method",
                fix="use a classification dataset, or linear_probe for regression",
            )
        super().__init__(backbone, head, task, params)

    def _fit_alignment(
        self, f_s: np.ndarray, f_t: np.ndarray
    ) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
        """Learn the alignment: ``(map of source features, target features in head space)``."""
        raise NotImplementedError

    def _target_head(self, head: nn.Module) -> nn.Module:
        """The fitted head as a module on raw target features ``[B, D]``."""
        return head

    def fit_features(
        self,
        f_train: np.ndarray,
        y_train: np.ndarray,
        f_val: np.ndarray,
        y_val: np.ndarray,
        *,
        f_target: np.ndarray | None = None,
    ) -> ShallowDA:
        """Align source -> target with ``f_target`` ``[N_t, D]`` (unlabelled); fit the head on
        the mapped source train ``[N, D]``, tuned on the equally mapped source val
        (``head_info_``: prototype facts, e.g. the target rows that refined them).

        Raises:
            DataError: ``f_target`` missing, shapes not ``[N, D]`` with the backbone's ``D``,
                labels not matching the rows, too few examples, non-finite values.
        """
        if f_target is None:
            raise DataError(
                f"{self.name} needs unlabelled target features, got f_target=None",
                where=f"{self.name}.fit_features(f_target=...)",
                fix="pass f_target=method.extract(target inputs) (a DA run gives data.target)",
            )
        dim = self.in_features
        f_tr = _features(f_train, "source train features", dim, min_rows=2)
        f_va = _features(f_val, "source val features", dim)
        f_t = _features(f_target, "target features", dim, min_rows=2)
        for name, f, y in (("train", f_tr, y_train), ("val", f_va, y_val)):
            if len(np.asarray(y)) != len(f):
                raise DataError(
                    f"source {name} has {len(f)} feature rows but {len(np.asarray(y))} labels",
                    where=f"{self.name}.fit_features, source {name} split",
                    fix="pass the labels of exactly the rows whose features were extracted",
                )
        to_target, f_t_head = self._fit_alignment(f_tr, f_t)
        fitted = fit_head(
            to_target(f_tr),
            y_train,
            to_target(f_va),
            y_val,
            task=self.task,
            num_outputs=self.num_outputs,
            params=self.hparams,
            unlabelled=f_t_head,
            unlabelled_from=f"target features ({len(f_t)} rows, unlabelled)",
        )
        self.head = self._target_head(fitted.module)
        self.selected_strength_, self.selected_param_ = fitted.selected, fitted.param
        self.val_scores_, self.head_info_ = dict(fitted.val_scores), dict(fitted.info)
        return self


class CoralParams(ShallowDAParams):
    eps: float = Field(1.0, ge=0, description="ridge eps added to both covariances")
    standardize: bool = Field(
        True, description="z-score each domain per feature first (eps is then scale-free)"
    )


@register_method
class CORAL(ShallowDA):
    """Shallow CORAL: head fitted on source features re-coloured with the target covariance.

    Fitted state: ``coral_weight_`` ``[D, D]`` and ``coral_bias_`` ``[D]`` (``f_s A + b``).
    """

    name: ClassVar[str] = "coral"
    paper: ClassVar[str] = (
        "Sun, Feng & Saenko 2016, Return of Frustratingly Easy Domain Adaptation, AAAI, "
        "https://arxiv.org/abs/1511.05547"
    )
    Params: ClassVar[type[MethodParams]] = CoralParams

    def _fit_alignment(
        self, f_s: np.ndarray, f_t: np.ndarray
    ) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
        p = self.hparams
        a, b = coral_map(f_s, f_t, p.eps, standardize=p.standardize)
        self.coral_weight_, self.coral_bias_ = a, b
        return (lambda f: f @ a + b), f_t  # the head reads raw target features


class SubspaceAlignmentParams(ShallowDAParams):
    d: int | None = Field(
        None, ge=1, description="PCA components per domain (None: min(50, D, N - 1))"
    )
    standardize: bool = Field(False, description="z-score each domain per feature before PCA")


@register_method
class SubspaceAlignment(ShallowDA):
    """Subspace alignment: head fitted on the source PCA coordinates aligned to the target's.

    Fitted state: ``proj_s_``, ``proj_t_`` ``[D, d]``, ``mean_s_``, ``mean_t_`` ``[D]``,
    ``n_components_`` (= d). A linear head is folded into one ``nn.Linear(D, C)``.
    """

    name: ClassVar[str] = "subspace_alignment"
    paper: ClassVar[str] = (
        "Fernando et al. 2013, Unsupervised Visual Domain Adaptation Using Subspace "
        "Alignment, ICCV, https://arxiv.org/abs/1409.5241"
    )
    Params: ClassVar[type[MethodParams]] = SubspaceAlignmentParams

    def __init__(
        self, backbone: Backbone, head: nn.Module, task: TaskKind, params: ShallowDAParams
    ) -> None:
        super().__init__(backbone, head, task, params)
        d = params.d
        if params.head not in LINEAR_HEADS and d is not None:  # shell that loads a fitted head
            inner = build_head(params.head, d, self.num_outputs, task, params)
            self.head = nn.Sequential(AlignedProjection(self.in_features, d), inner)

    def _fit_alignment(
        self, f_s: np.ndarray, f_t: np.ndarray
    ) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
        p = self.hparams
        proj_s, proj_t, mean_s, mean_t = subspace_alignment_maps(
            f_s, f_t, p.d, standardize=p.standardize
        )
        self.proj_s_, self.proj_t_, self.mean_s_, self.mean_t_ = proj_s, proj_t, mean_s, mean_t
        self.n_components_ = proj_s.shape[1]
        return (lambda f: (f - mean_s) @ proj_s), (f_t - mean_t) @ proj_t

    def _target_head(self, head: nn.Module) -> nn.Module:
        if isinstance(head, nn.Linear):
            return fold_projection(head, self.mean_t_, self.proj_t_)
        return nn.Sequential(AlignedProjection.from_arrays(self.mean_t_, self.proj_t_), head)
