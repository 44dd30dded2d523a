"""Label-free model selection for domain adaptation: pick checkpoints without target labels.

Choosing a DA checkpoint or hyper-parameter on target labels is cheating (the target has
none in deployment). These criteria use only unlabelled target outputs, or labelled
*source* validation data re-weighted towards the target:

* :func:`prediction_entropy` — mean prediction entropy on the target (lower is better).
  Rewards confidence, so it also rewards confidently wrong, collapsed models.
* :func:`snd_score` — Soft Neighborhood Density, Saito, Kim, Teterwak, Sclaroff, Darrell &
  Saenko 2021, "Tune it the Right Way: Unsupervised Validation of Domain Adaptation via Soft
  Neighborhood Density", ICCV, https://arxiv.org/abs/2108.10860 (higher is better).
* :func:`dev_risk` — Deep Embedded Validation, You, Wang, Chen, Long & Jordan 2019,
  "Towards Accurate Model Selection in Deep Unsupervised Domain Adaptation", ICML,
  https://proceedings.mlr.press/v97/you19a.html (lower is better).

All three can prefer a *collapsed* model, one that puts (nearly) every target example in
one class: its predictions are confident (low entropy), its neighbourhoods dense (high
SND), and when source and target are almost separable DEV's importance weights vanish and
the weighted source risk goes to 0 with them (measured: mnist5k -> digits, MDD and ADDA,
DEV picked checkpoints at chance accuracy over checkpoints above 0.25).
:func:`prediction_diversity` measures collapse and :func:`select_best`'s
``collapse_guard`` ranks every collapsed candidate below every other one.

:func:`select_best` scores a list of candidates with one registered :class:`Selector` and
returns the index of the best, honouring each criterion's direction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax

from transferkit.diagnostics.domain_gap import as_feature_matrix
from transferkit.errors import ConfigError, DataError
from transferkit.registry import Registry

__all__ = [
    "SELECTORS",
    "Selector",
    "below_guard",
    "density_ratio_weights",
    "dev_risk",
    "dev_risk_from_weights",
    "is_collapsed",
    "prediction_diversity",
    "prediction_entropy",
    "score_candidates",
    "select_best",
    "snd_score",
]


def _probabilities(probs: Any, where: str, atol: float = 1e-3) -> np.ndarray:
    p = as_feature_matrix(probs, "probs_t", where)
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=atol):
        bad = int(np.argmax((p < 0).any(1) | ~np.isclose(p.sum(1), 1.0, atol=atol)))
        raise DataError(
            "probs_t rows are not probability vectors (negative entries or sum != 1)",
            where=f"{where}, row {bad}",
            fix="apply softmax to the logits first",
        )
    return p


def prediction_entropy(probs_t: Any) -> float:
    """Mean Shannon entropy ``mean_i -sum_c p_ic log p_ic`` (nats) of ``probs_t`` ``[N, C]``.

    0 for one-hot predictions, ``log C`` for uniform ones. As a selector, lower is better.
    """
    p = _probabilities(probs_t, "prediction_entropy")
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(-plogp.sum(1).mean())


def prediction_diversity(probs_t: Any) -> float:
    """Normalised entropy of the predicted-class histogram of ``probs_t`` ``[N, C]``.

    With ``q_c = #{i : argmax_k p_ik = c} / N``, diversity ``= -sum_c q_c log q_c / log C``:
    0 when every example is predicted as one class, 1 when the predicted classes are
    uniform. Hard predictions, not the mean of the soft ones: a collapsed but uncertain
    model has a near-uniform mean prediction and would look diverse. ``C < 2`` gives 1.
    Reference values: a 90/10 split of 2 classes is 0.469, 97/3 is 0.194.
    """
    p = _probabilities(probs_t, "prediction_diversity")
    k = p.shape[1]
    if k < 2 or len(p) == 0:
        return 1.0
    q = np.bincount(p.argmax(1), minlength=k) / len(p)
    q = q[q > 0]
    return float(max(0.0, -(q * np.log(q)).sum() / np.log(k)))


def below_guard(diversity: float, threshold: float) -> bool:
    """A diversity counts as collapsed: ``diversity < threshold`` (``threshold`` 0: never)."""
    return bool(threshold > 0 and diversity < threshold)


def is_collapsed(probs_t: Any, threshold: float) -> bool:
    """``below_guard(prediction_diversity(probs_t), threshold)``."""
    return below_guard(prediction_diversity(probs_t), threshold)


def snd_score(
    outputs_t: Any,
    temperature: float = 0.05,
    *,
    apply_softmax: bool = False,
    chunk: int = 1024,
) -> float:
    """Soft Neighborhood Density of target outputs ``[N, C]`` (probabilities or features).

    Rows are L2-normalised, ``z_i = x_i / ||x_i||``; similarities ``s_ij = z_i . z_j`` with
    self-similarity excluded (``s_ii = -inf``); neighbourhood distributions
    ``P_ij = softmax_j(s_ij / tau)``; and

    .. math:: \\mathrm{SND} = \\frac{1}{N} \\sum_i -\\sum_{j \\ne i} P_{ij} \\log P_{ij}

    High when each target point has many close neighbours (dense, well-clustered
    predictions); low when outputs are scattered. Higher is better. A model that collapses
    every input to one output also scores high: pair it with another check. Cost is
    ``O(N² C)`` time and ``O(chunk N)`` memory.

    Args:
        outputs_t: softmax probabilities (the paper's choice) or features, ``[N, C]``.
        temperature: ``tau``; the paper uses 0.05.
        apply_softmax: treat ``outputs_t`` as logits and apply a row softmax first.
        chunk: rows of the similarity matrix computed at a time.
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}", where="snd_score")
    x = as_feature_matrix(outputs_t, "outputs_t", "snd_score", min_rows=3)
    if apply_softmax:
        x = softmax(x, axis=1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    z = x / np.maximum(norms, 1e-12)
    total = 0.0
    for start in range(0, len(z), chunk):
        logits = z[start : start + chunk] @ z.T / temperature
        rows = np.arange(len(logits))
        logits[rows, start + rows] = -np.inf
        log_p = logits - logsumexp(logits, axis=1, keepdims=True)
        p = np.exp(log_p)
        total += float(-(p * np.where(np.isfinite(log_p), log_p, 0.0)).sum())
    return total / len(z)


def density_ratio_weights(
    source_train_feats: Any,
    target_feats: Any,
    source_val_feats: Any,
    *,
    seed: int = 0,
    Cs: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
    cv: int = 3,
    clip: float = 1e-4,
) -> np.ndarray:
    """Importance weights ``w(x) = p_t(x) / p_s(x)`` ``[N_val]`` for the source validation rows.

    A standardised logistic regression (``C`` from ``Cs`` by stratified ``cv``-fold CV on
    log-loss, since calibrated probabilities matter here, not accuracy) learns
    ``d(x) = P(target | x)`` on source-train (label 0) vs target (label 1) features. By Bayes'
    rule ``p_t(x) / p_s(x) = (N_s / N_t) * d(x) / (1 - d(x))``, with ``N_s``, ``N_t`` the
    classifier's training counts and ``d`` clipped to ``[clip, 1 - clip]``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    where = "dev_risk"
    s = as_feature_matrix(source_train_feats, "source_train_feats", where, min_rows=2 * cv)
    t = as_feature_matrix(target_feats, "target_feats", where, min_rows=2 * cv)
    v = as_feature_matrix(source_val_feats, "source_val_feats", where)
    if not s.shape[1] == t.shape[1] == v.shape[1]:
        raise DataError(
            "feature widths differ between source-train, target and source-val",
            where=f"{where}: {s.shape}, {t.shape}, {v.shape}",
            fix="extract all three with the same backbone and layer",
        )
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    grid = {"logisticregression__C": list(Cs)}
    clf = GridSearchCV(pipe, grid, cv=folds, scoring="neg_log_loss")
    clf.fit(np.vstack([s, t]), np.repeat([0, 1], [len(s), len(t)]))
    d = np.clip(clf.predict_proba(v)[:, 1], clip, 1.0 - clip)
    return (len(s) / len(t)) * d / (1.0 - d)


def dev_risk_from_weights(losses: Any, weights: Any) -> float:
    """DEV's control-variate estimate of the target risk from per-example source-val losses.

    With losses ``L_i`` and importance weights ``W_i`` (``E_s[W] = 1``):

    .. math::

        \\eta = -\\frac{\\mathrm{Cov}(L W, W)}{\\mathrm{Var}(W)}, \\qquad
        R_{\\mathrm{DEV}} = \\overline{L W} + \\eta\\, \\overline{W} - \\eta

    The covariance is taken with the weighted loss ``L W`` as in You et al. 2019 (Alg. 1),
    which makes this the optimal control variate for ``mean(L W)``; sample (co)variances use
    ``ddof=1``. ``eta = 0`` when all weights are equal.
    """
    loss = np.asarray(losses, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(loss) != len(w) or len(loss) < 2:
        raise DataError(
            f"need one weight per loss and at least 2 examples, got {len(loss)} and {len(w)}",
            where="dev_risk",
            fix="pass per-example validation losses (reduction='none')",
        )
    if not (np.isfinite(loss).all() and np.isfinite(w).all()):
        raise DataError("losses or weights contain NaN/inf", where="dev_risk")
    weighted = loss * w
    var_w = float(np.var(w, ddof=1))
    eta = 0.0 if var_w <= 1e-12 else -float(np.cov(weighted, w, ddof=1)[0, 1]) / var_w
    return float(weighted.mean() + eta * w.mean() - eta)


def dev_risk(
    source_train_feats: Any,
    source_val_feats: Any,
    val_losses: Any,
    target_feats: Any,
    *,
    seed: int = 0,
) -> float:
    """Deep Embedded Validation risk (lower is better); see You et al. 2019.

    Args:
        source_train_feats: features ``[N_s, D]`` of the source training set.
        source_val_feats: features ``[N_v, D]`` of the labelled source validation set.
        val_losses: per-example loss ``[N_v]`` of the candidate model on source validation.
        target_feats: features ``[N_t, D]`` of unlabelled target data.
        seed: seeds the domain classifier's CV folds.
    """
    w = density_ratio_weights(source_train_feats, target_feats, source_val_feats, seed=seed)
    return dev_risk_from_weights(val_losses, w)


@dataclass(frozen=True)
class Selector:
    """A label-free selection criterion over one candidate (a dict of its outputs).

    ``score(candidate)`` returns a float; ``higher_is_better`` gives its direction;
    ``needs`` lists the candidate keys it reads (any one of a ``|``-joined group).
    """

    name: str
    score: Callable[[Mapping[str, Any]], float]
    higher_is_better: bool
    needs: tuple[str, ...]


SELECTORS: Registry[Selector] = Registry("selection criterion", ConfigError)


def _entropy_score(c: Mapping[str, Any]) -> float:
    return prediction_entropy(c["probs_t"])


def _snd(c: Mapping[str, Any]) -> float:
    return snd_score(c["probs_t"] if "probs_t" in c else c["feats_t"])


def _dev(c: Mapping[str, Any]) -> float:
    return dev_risk(
        c["source_train_feats"],
        c["source_val_feats"],
        c["val_losses"],
        c["target_feats"],
        seed=int(c.get("seed", 0)),
    )


for _sel in (
    Selector("entropy", _entropy_score, False, ("probs_t",)),
    Selector("snd", _snd, True, ("probs_t|feats_t",)),
    Selector(
        "dev", _dev, False, ("source_train_feats", "source_val_feats", "val_losses", "target_feats")
    ),
):
    SELECTORS.register(_sel.name)(_sel)


def _check_keys(candidate: Mapping[str, Any], selector: Selector, i: int) -> None:
    missing = [g for g in selector.needs if not any(k in candidate for k in g.split("|"))]
    if missing:
        raise DataError(
            f"candidate lacks {', '.join(missing)} needed by criterion {selector.name!r}",
            where=f"candidates[{i}] with keys {sorted(candidate)}",
            fix=f"give every candidate the keys {', '.join(selector.needs)}",
        )


def score_candidates(
    candidates: Sequence[Mapping[str, Any]], criterion: str = "dev"
) -> list[float]:
    """The raw score of each candidate under ``criterion`` (its own direction)."""
    selector = SELECTORS.get(criterion)
    for i, c in enumerate(candidates):
        _check_keys(c, selector, i)
    return [float(selector.score(c)) for c in candidates]


def select_best(
    candidates: Sequence[Mapping[str, Any]], criterion: str = "dev", collapse_guard: float = 0.0
) -> int:
    """Index of the best candidate under ``criterion`` ("dev", "snd", "entropy", ...).

    Lower is better for "dev" and "entropy", higher for "snd". A NaN score ranks last;
    ties go to the earliest candidate. With ``collapse_guard > 0`` a candidate whose
    ``probs_t`` has :func:`prediction_diversity` below it ranks below every candidate that
    is not collapsed (among collapsed ones the criterion still decides).
    """
    if not candidates:
        raise DataError(
            "no candidates to select from",
            where="select_best",
            fix="pass a non-empty list of candidate dicts",
        )
    selector = SELECTORS.get(criterion)
    scores = np.asarray(score_candidates(candidates, criterion), dtype=np.float64)
    signed = scores if selector.higher_is_better else -scores
    signed = np.where(np.isnan(signed), -np.inf, signed)
    if collapse_guard > 0:
        collapsed = np.array(
            [
                is_collapsed(c["probs_t"], collapse_guard) if "probs_t" in c else False
                for c in candidates
            ]
        )
        if not collapsed.all():
            signed = np.where(collapsed, -np.inf, signed)
    return int(np.argmax(signed))
