"""Transferability scores: how well a source model's features (or predictions) suit a target.

Each score is a pure, deterministic function of target-set features ``[N, D]`` and target
labels ``[N]`` (plus source-model probabilities ``[N, Z]`` where it needs them), computed
in float64 on the CPU; every one is "higher is better". They are cheap proxies, computed
without fine-tuning, for ranking candidate backbones or layers before training:

============================  ============================================  ==============
name                          paper                                         needs
============================  ============================================  ==============
``logme``                     You et al. 2021, ICML                         features
``leep``                      Nguyen et al. 2020, ICML                      source_probs
``nleep``                     Li et al. 2021, CVPR                          features
``hscore``                    Bao et al. 2019, ICIP                         features
``hscore_shrinkage``          Ibrahim et al. 2022, ECML-PKDD                features
``nce``                       Tran et al. 2019, ICCV                        source_probs
``gbc``                       Pándy et al. 2022, CVPR                       features
============================  ============================================  ==============

The formulas are in the docstrings of :mod:`.transferability_logme`,
:mod:`.transferability_leep` and :mod:`.transferability_separability`. :data:`SCORES`
maps each name to a :class:`TransferabilityScore` with the common call signature
``score(features, labels, *, source_probs=None) -> float``; :func:`compute_scores` runs
several at once. Scores are comparable across candidate models on the same target set,
not across target sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.diagnostics.transferability_common import as_labels, as_probs
from transferkit.diagnostics.transferability_leep import leep, nce, nleep
from transferkit.diagnostics.transferability_logme import logme
from transferkit.diagnostics.transferability_separability import gbc, hscore, hscore_shrinkage
from transferkit.errors import ConfigError, DataError
from transferkit.registry import Registry

__all__ = [
    "SCORES",
    "TransferabilityScore",
    "compute_scores",
    "gbc",
    "hscore",
    "hscore_shrinkage",
    "leep",
    "logme",
    "nce",
    "nleep",
]


@dataclass(frozen=True)
class TransferabilityScore:
    """A registered score: ``fn(features, labels, source_probs) -> float`` plus metadata.

    ``higher_is_better`` gives the direction (True for every built-in score);
    ``needs_source_probs`` says the score reads the source model's class probabilities
    ``[N, Z]`` (LEEP, NCE) and ignores ``features``, which may then be None.
    """

    name: str
    fn: Callable[[Any, Any, Any], float]
    higher_is_better: bool
    needs_source_probs: bool
    paper: str

    def __call__(self, features: Any, labels: Any, *, source_probs: Any = None) -> float:
        if self.needs_source_probs and source_probs is None:
            raise DataError(
                f"score {self.name!r} needs the source model's class probabilities",
                where=f"transferability score {self.name!r}",
                fix="pass source_probs=softmax(source_logits) of shape [N, Z]",
            )
        return float(self.fn(features, labels, source_probs))


SCORES: Registry[TransferabilityScore] = Registry("transferability score", ConfigError)


def _nce_from_probs(source_probs: Any, labels: Any) -> float:
    n = len(as_labels(labels, None, "nce").codes)
    return nce(np.argmax(as_probs(source_probs, n, "nce"), axis=1), labels)


for _score in (
    TransferabilityScore(
        "logme", lambda f, y, p: logme(f, y), True, False, "https://arxiv.org/abs/2102.11005"
    ),
    TransferabilityScore(
        "leep", lambda f, y, p: leep(p, y), True, True, "https://arxiv.org/abs/2002.12462"
    ),
    TransferabilityScore(
        "nleep", lambda f, y, p: nleep(f, y), True, False, "https://arxiv.org/abs/2011.11200"
    ),
    TransferabilityScore(
        "hscore",
        lambda f, y, p: hscore(f, y),
        True,
        False,
        "https://doi.org/10.1109/ICIP.2019.8803726",
    ),
    TransferabilityScore(
        "hscore_shrinkage",
        lambda f, y, p: hscore_shrinkage(f, y),
        True,
        False,
        "https://arxiv.org/abs/2110.06893",
    ),
    TransferabilityScore(
        "nce", lambda f, y, p: _nce_from_probs(p, y), True, True, "https://arxiv.org/abs/1908.08142"
    ),
    TransferabilityScore(
        "gbc", lambda f, y, p: gbc(f, y), True, False, "https://arxiv.org/abs/2111.12780"
    ),
):
    SCORES.register(_score.name)(_score)


def compute_scores(
    features: Any,
    labels: Any,
    *,
    source_probs: Any = None,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Several scores at once: ``{name: value}`` in the order of ``names``.

    ``names=None`` runs every registered score that the inputs allow: those needing
    ``source_probs`` only when they are given. Naming such a score without
    ``source_probs`` raises :class:`DataError`; an unknown name raises
    :class:`ConfigError` listing the known ones.
    """
    if names is None:
        chosen = [
            s for _, s in SCORES.items() if source_probs is not None or not s.needs_source_probs
        ]
    else:
        chosen = [SCORES.get(n) for n in names]
    return {s.name: s(features, labels, source_probs=source_probs) for s in chosen}
