"""How far apart two domains are in a feature space: proxy A-distance, MMD, 2-D embeddings.

All functions take pooled features ``f_s`` ``[N_s, D]`` (source) and ``f_t`` ``[N_t, D]``
(target) as numpy arrays or torch tensors, compute in float64 on the CPU, and are
deterministic for a given ``seed`` (subsampling, splits and the classifier all use it).

* :func:`proxy_a_distance` — Ben-David, Blitzer, Crammer & Pereira 2007, "Analysis of
  Representations for Domain Adaptation", NeurIPS,
  https://papers.nips.cc/paper/2983-analysis-of-representations-for-domain-adaptation;
  Ben-David et al. 2010, "A theory of learning from different domains", Machine Learning,
  https://doi.org/10.1007/s10994-009-5152-4. A linear classifier learns to tell the domains
  apart; with held-out error ``eps``, ``PAD = 2 (1 - 2 eps)``: 0 = indistinguishable,
  2 = perfectly separable.
* :func:`mmd_median` — unbiased squared maximum mean discrepancy (Gretton et al. 2012,
  "A Kernel Two-Sample Test", JMLR, https://jmlr.org/papers/v13/gretton12a.html) with a
  Gaussian kernel whose bandwidth is the median pooled pairwise distance.
* :func:`embedding_2d` / :func:`plot_domains` — PCA or t-SNE coordinates for a scatter plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from transferkit.errors import ConfigError, DataError
from transferkit.utils.io import atomic_path

__all__ = [
    "Embedding2D",
    "MMDResult",
    "PADResult",
    "domain_gap_report",
    "embedding_2d",
    "mmd_median",
    "plot_domains",
    "proxy_a_distance",
    "proxy_a_distance_details",
]

_MIN_PER_DOMAIN = 10


def as_feature_matrix(a: Any, name: str, where: str, min_rows: int = 1) -> np.ndarray:
    """float64 ``[N, D]`` from a numpy array or torch tensor (``[N]`` -> ``[N, 1]``).

    Raises :class:`DataError` on a scalar, too few rows or non-finite values.
    """
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch.Tensor without importing torch
        a = a.detach().cpu().double().numpy()
    x = np.asarray(a, dtype=np.float64)
    if x.ndim == 0:
        raise DataError(f"{name} is a scalar", where=where, fix=f"pass {name} as [N, D]")
    x = x.reshape(len(x), -1)
    if len(x) < min_rows:
        raise DataError(
            f"{name} has {len(x)} rows, at least {min_rows} are needed",
            where=f"{where}, {name} of shape {x.shape}",
            fix="pass more examples",
        )
    if not np.isfinite(x).all():
        raise DataError(
            f"{name} contains NaN or infinite values",
            where=f"{where}, {name} of shape {x.shape}",
            fix="check the model producing these features",
        )
    return x


def _pair(f_s: Any, f_t: Any, where: str, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    s = as_feature_matrix(f_s, "f_s", where, min_rows)
    t = as_feature_matrix(f_t, "f_t", where, min_rows)
    if s.shape[1] != t.shape[1]:
        raise DataError(
            f"source and target features differ in width ({s.shape[1]} vs {t.shape[1]})",
            where=f"{where}: f_s {s.shape}, f_t {t.shape}",
            fix="extract both with the same backbone and layer",
        )
    return s, t


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of ``n`` rows drawn without replacement (all rows if ``n >= N``)."""
    if n >= len(x):
        return np.arange(len(x))
    return np.sort(rng.choice(len(x), size=n, replace=False))


class PADResult(NamedTuple):
    """Proxy A-distance with the numbers behind it."""

    pad: float  # 2 (1 - 2 eps), clipped to [0, 2]
    error: float  # held-out error eps of the domain classifier
    C: float  # inverse regularisation strength picked by cross-validation
    n_per_domain: int  # examples per domain after balancing


def proxy_a_distance_details(
    f_s: Any,
    f_t: Any,
    *,
    seed: int = 0,
    cv: int = 3,
    Cs: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
    test_size: float = 0.5,
    max_samples: int = 2000,
) -> PADResult:
    """Proxy A-distance ``2 (1 - 2 eps)`` from a linear source-vs-target classifier.

    Both domains are subsampled to the same size ``n = min(N_s, N_t, max_samples)`` (so a
    constant guess has error 0.5), split into train / held-out with stratification, and a
    standardised L2 logistic regression is fitted on the train part with ``C`` chosen from
    ``Cs`` by stratified ``cv``-fold cross-validation. ``eps`` is its held-out error.

    Args:
        f_s: source features ``[N_s, D]``.
        f_t: target features ``[N_t, D]``.
        seed: seeds the subsampling, split and CV folds.
        cv: folds for choosing ``C``.
        Cs: candidate values of ``C``.
        test_size: held-out fraction.
        max_samples: cap on examples per domain.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    where = "proxy_a_distance"
    if cv < 2 or not 0.0 < test_size < 1.0 or not Cs:
        raise ConfigError(
            f"invalid settings cv={cv}, test_size={test_size}, Cs={list(Cs)}",
            where=where,
            fix="use cv >= 2, 0 < test_size < 1 and at least one C",
        )
    s, t = _pair(f_s, f_t, where, max(_MIN_PER_DOMAIN, 2 * cv))
    rng = np.random.default_rng(seed)
    n = min(len(s), len(t), max_samples)
    x = np.vstack([s[_subsample(s, n, rng)], t[_subsample(t, n, rng)]])
    y = np.repeat([0, 1], n)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    search = GridSearchCV(pipe, {"logisticregression__C": list(Cs)}, cv=folds)
    search.fit(x_tr, y_tr)
    error = float(1.0 - search.score(x_te, y_te))
    pad = float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0))
    return PADResult(pad, error, float(search.best_params_["logisticregression__C"]), n)


def proxy_a_distance(f_s: Any, f_t: Any, *, seed: int = 0, cv: int = 3, **kwargs: Any) -> float:
    """Proxy A-distance in [0, 2]; see :func:`proxy_a_distance_details` for the arguments."""
    return proxy_a_distance_details(f_s, f_t, seed=seed, cv=cv, **kwargs).pad


class MMDResult(NamedTuple):
    """Unbiased MMD² and the Gaussian bandwidth used."""

    mmd2: float
    bandwidth: float
    n_source: int
    n_target: int


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` squared Euclidean distances, clipped at 0."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def mmd_median(
    f_s: Any,
    f_t: Any,
    *,
    max_samples: int = 2000,
    seed: int = 0,
    bandwidth: float | None = None,
) -> MMDResult:
    """Unbiased MMD² with a Gaussian kernel and the median-distance bandwidth.

    With ``k(x, y) = exp(-||x - y||² / (2 sigma²))``, ``m`` source and ``n`` target rows:

    .. math::

        \\widehat{\\mathrm{MMD}}^2_u = \\frac{1}{m(m-1)} \\sum_{i \\ne j} k(s_i, s_j)
            + \\frac{1}{n(n-1)} \\sum_{i \\ne j} k(t_i, t_j)
            - \\frac{2}{mn} \\sum_{i, j} k(s_i, t_j)

    ``sigma`` is the median of the pairwise distances ``||z_i - z_j||, i < j`` over the pooled
    sample ``z`` (the median heuristic; Gretton et al. 2012, section 8). The estimate is
    unbiased, so it can be slightly negative when the domains match. Each domain is
    subsampled (seeded) to at most ``max_samples`` rows; the result is invariant to a common
    translation, rotation of both samples, and to a common rescaling (which the bandwidth
    absorbs).

    Args:
        f_s: source features ``[N_s, D]``; f_t: target features ``[N_t, D]``.
        max_samples: cap on rows per domain (cost is ``O((m + n)² D)``).
        seed: seeds the subsampling.
        bandwidth: a fixed ``sigma`` instead of the median heuristic.
    """
    s, t = _pair(f_s, f_t, "mmd_median", 2)
    rng = np.random.default_rng(seed)
    s, t = s[_subsample(s, max_samples, rng)], t[_subsample(t, max_samples, rng)]
    mu = np.vstack([s, t]).mean(0)  # centring keeps the distances exact under translation
    s, t = s - mu, t - mu
    d_ss, d_tt, d_st = _sq_dists(s, s), _sq_dists(t, t), _sq_dists(s, t)
    if bandwidth is None:
        pooled = np.concatenate(
            [d_ss[np.triu_indices(len(s), 1)], d_tt[np.triu_indices(len(t), 1)], d_st.ravel()]
        )
        positive = pooled[pooled > 0]
        bandwidth = float(np.median(np.sqrt(positive))) if positive.size else 1.0
    elif not bandwidth > 0:
        raise ConfigError(f"bandwidth must be > 0, got {bandwidth}", where="mmd_median")
    gamma = 1.0 / (2.0 * bandwidth**2)
    m, n = len(s), len(t)
    k_ss = (np.exp(-gamma * d_ss).sum() - m) / (m * (m - 1))  # diagonal terms are exp(0) = 1
    k_tt = (np.exp(-gamma * d_tt).sum() - n) / (n * (n - 1))
    k_st = np.exp(-gamma * d_st).mean()
    return MMDResult(float(k_ss + k_tt - 2.0 * k_st), float(bandwidth), m, n)


class Embedding2D(NamedTuple):
    """2-D coordinates of the pooled subsample, for plotting."""

    coords: np.ndarray  # [M, 2], source rows first
    domain: np.ndarray  # [M] int: 0 = source, 1 = target
    index: np.ndarray  # [M] row index of each point within its own domain (to align labels)


def embedding_2d(
    f_s: Any,
    f_t: Any,
    method: Literal["pca", "tsne"] = "pca",
    seed: int = 0,
    max_points: int = 1000,
) -> Embedding2D:
    """Project up to ``max_points`` rows per domain to 2-D with PCA or t-SNE (seeded).

    PCA is fitted on the pooled, centred subsample. t-SNE (van der Maaten & Hinton 2008,
    https://jmlr.org/papers/v9/vandermaaten08a.html) uses PCA initialisation and perplexity
    ``min(30, (M - 1) / 3)``, exact gradients up to 500 points and Barnes-Hut above. Use
    ``index`` to pick the matching labels: ``labels_s[index[domain == 0]]``.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in ("pca", "tsne"):
        raise ConfigError(
            f"unknown embedding method {method!r}", where="embedding_2d", fix="use 'pca' or 'tsne'"
        )
    s, t = _pair(f_s, f_t, "embedding_2d", 2)
    rng = np.random.default_rng(seed)
    i_s, i_t = _subsample(s, max_points, rng), _subsample(t, max_points, rng)
    x = np.vstack([s[i_s], t[i_t]])
    if x.shape[1] < 2:
        x = np.hstack([x, np.zeros((len(x), 2 - x.shape[1]))])
    if method == "pca":
        coords = PCA(n_components=2, random_state=seed).fit_transform(x)
    else:
        perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3.0)))
        method_ = "exact" if len(x) <= 500 else "barnes_hut"  # exact is faster when small
        tsne = TSNE(
            n_components=2, init="pca", perplexity=perplexity, method=method_, random_state=seed
        )
        coords = tsne.fit_transform(x)
    domain = np.repeat([0, 1], [len(i_s), len(i_t)])
    return Embedding2D(np.asarray(coords, dtype=np.float64), domain, np.concatenate([i_s, i_t]))


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def plot_domains(
    coords: Any,
    domain: Any,
    labels: Any | None,
    path: str | Path,
    *,
    domain_names: Sequence[str] = ("source", "target"),
    class_names: Sequence[str] | None = None,
    title: str = "domains in feature space",
) -> Path:
    """Write a PNG scatter of ``coords`` ``[M, 2]``: colour = domain, marker = class.

    ``domain`` ``[M]`` holds 0 (source) / 1 (target); ``labels`` ``[M]`` holds class ids
    (or ``None`` for unlabelled points, drawn as circles). The file is written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xy = np.asarray(coords, dtype=np.float64)
    dom = np.asarray(domain).astype(int)
    lab = np.zeros(len(xy), dtype=int) if labels is None else np.asarray(labels)
    if xy.ndim != 2 or xy.shape[1] != 2 or not len(dom) == len(lab) == len(xy):
        raise DataError(
            "coords, domain and labels do not line up",
            where=f"plot_domains: coords {xy.shape}, domain {dom.shape}, labels {lab.shape}",
            fix="pass coords [M, 2] and domain / labels of length M (see embedding_2d)",
        )
    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    classes = np.unique(lab)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for d in np.unique(dom):
        for k, c in enumerate(classes):
            sel = (dom == d) & (lab == c)
            if not sel.any():
                continue
            name = domain_names[d] if d < len(domain_names) else f"domain {d}"
            cls = "" if labels is None else f", {class_names[int(c)] if class_names else c}"
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=12,
                alpha=0.6,
                color=colours[d % len(colours)],
                marker=_MARKERS[k % len(_MARKERS)],
                label=f"{name}{cls}",
            )
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5, loc="best", ncols=2 if len(classes) > 4 else 1)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def domain_gap_report(f_s: Any, f_t: Any, *, seed: int = 0) -> dict[str, float | int]:
    """Proxy A-distance and median-heuristic MMD² as a JSON-able dict for metrics.json."""
    pad = proxy_a_distance_details(f_s, f_t, seed=seed)
    mmd = mmd_median(f_s, f_t, seed=seed)
    return {
        "proxy_a_distance": pad.pad,
        "domain_classifier_error": pad.error,
        "mmd2": mmd.mmd2,
        "mmd_bandwidth": mmd.bandwidth,
        "n_source": len(f_s),
        "n_target": len(f_t),
    }
