"""``DomainAdaptationClassifier``: unsupervised domain adaptation, skada's way.

``fit(X, y, sample_domain)`` takes both domains in one array (skada's convention,
https://scikit-adaptation.github.io): rows with ``sample_domain > 0`` are the labelled
source, rows with ``sample_domain < 0`` the target, whose labels are never read (skada
marks them ``-1``). Several source (or target) domain ids are merged into one source
(target). Without ``sample_domain`` the rows labelled ``-1`` are the target and all
others the source. ``predict`` / ``predict_proba`` / ``score`` / ``transform`` then work
on any rows (normally the target's).

Training pairs every labelled source batch with an unlabelled target batch and runs the
registered domain-adaptation method (``dann``, ``cdan``, ``mdd``, ``dan``, ``jan``,
``deep_coral``, ``mcc``, ``adda``, ``drcn``, ``dsn``, ``pseudo_label``, ``fixmatch``, or the
closed-form ``coral`` / ``subspace_alignment`` on frozen features), exactly as a
``transferkit run`` with a ``data.source`` does. With ``validation_fraction`` the
checkpoint is selected on held-out *source* accuracy (target labels stay unused).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score

from transferkit.data.types import Dataset
from transferkit.sklearn._fit import subset
from transferkit.sklearn._inputs import EstimatorInputError, encode_classes
from transferkit.sklearn.base import TransferEstimatorBase
from transferkit.sklearn.estimators import softmax

UNLABELLED = -1


def _is_unlabelled(y: np.ndarray) -> np.ndarray:
    """Rows whose label is skada's ``-1`` (only numeric labels can carry it)."""
    if y.dtype.kind in "iuf":
        return y == UNLABELLED
    return np.array([isinstance(v, int | float | np.number) and v == -1 for v in y], bool)


def read_sample_domain(sample_domain: Any, y: np.ndarray) -> np.ndarray:
    """Integer domain ids ``[n]`` (inferred from ``y == -1`` when None); 0 is refused."""
    n = len(y)
    if sample_domain is None:
        return np.where(_is_unlabelled(y), -1, 1).astype(np.int64)
    sd = np.asarray(sample_domain)
    if sd.ndim != 1 or len(sd) != n:
        raise EstimatorInputError(
            f"sample_domain has shape {sd.shape} but X has {n} rows",
            where="sample_domain",
            fix="pass one domain id per row: > 0 source, < 0 target",
        )
    if sd.dtype.kind not in "iu" and not (sd.dtype.kind == "f" and np.all(sd == np.round(sd))):
        raise EstimatorInputError(
            f"sample_domain must hold integers, got dtype {sd.dtype}",
            where="sample_domain",
            fix="use positive ints for source domains, negative ints for target domains",
        )
    sd = sd.astype(np.int64)
    if (sd == 0).any():
        raise EstimatorInputError(
            "sample_domain 0 is neither source nor target",
            where=f"sample_domain[{int(np.flatnonzero(sd == 0)[0])}]",
            fix="use ids > 0 for source rows and < 0 for target rows (skada's convention)",
        )
    return sd


def _missing_domain(side: str) -> EstimatorInputError:
    return EstimatorInputError(
        f"domain adaptation needs both source and target rows, but no {side} rows were given",
        where="sample_domain",
        fix="pass sample_domain with > 0 for labelled source and < 0 for target rows "
        "(or label the target rows -1 and leave sample_domain out)",
    )


def source_classes(sd: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes_, codes of the source rows)``; then checks that target rows exist.

    The source labels are checked first, so a continuous or single-class ``y`` gets the
    same error as from any classifier.
    """
    if not (sd > 0).any():
        raise _missing_domain("source (sample_domain > 0)")
    bad = np.flatnonzero((sd > 0) & _is_unlabelled(y))
    if len(bad):
        raise EstimatorInputError(
            f"{len(bad)} source row(s) are labelled -1 (unlabelled)",
            where=f"y[{int(bad[0])}] with sample_domain[{int(bad[0])}] = {int(sd[bad[0]])}",
            fix="source rows need labels; give unlabelled rows a negative sample_domain",
        )
    classes, codes = encode_classes(y[sd > 0], where="y[sample_domain > 0]")
    if not (sd < 0).any():
        raise _missing_domain("target (sample_domain < 0)")
    return classes, codes


class DomainAdaptationClassifier(ClassifierMixin, TransferEstimatorBase):
    """Adapt a classifier from a labelled source domain to an unlabelled target domain.

    Parameters as for :class:`~transferkit.sklearn.TransferClassifier`; ``method`` is a
    registered domain-adaptation method (default ``"dann"``, Ganin et al. 2016,
    https://arxiv.org/abs/1505.07818) and ``method_params`` its parameters (``trade_off``,
    ...). Learned: ``classes_`` (source labels), ``n_source_`` / ``n_target_`` and the
    attributes of :mod:`transferkit.sklearn.base`.
    """

    _families = ("domain-adaptation",)

    def __init__(
        self,
        backbone: str = "auto",
        method: str = "dann",
        method_params: dict[str, Any] | None = None,
        *,
        backbone_options: dict[str, Any] | None = None,
        pretrained: bool = True,
        head: str = "linear",
        lr: float = 1e-3,
        epochs: int = 10,
        batch_size: int = 32,
        validation_fraction: float | None = None,
        train_params: dict[str, Any] | None = None,
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
        verbose: bool = False,
    ) -> None:
        super().__init__(
            backbone,
            method,
            method_params,
            backbone_options=backbone_options,
            pretrained=pretrained,
            head=head,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            validation_fraction=validation_fraction,
            train_params=train_params,
            random_state=random_state,
            device=device,
            verbose=verbose,
        )

    def fit(self, X: Any, y: Any, sample_domain: Any = None) -> DomainAdaptationClassifier:
        """Adapt on source rows (``sample_domain > 0``, labelled) and target rows (``< 0``)."""
        raw, modality, y_arr = self._read_fit_inputs(X, y, numeric=False)
        sd = read_sample_domain(sample_domain, y_arr)
        self.classes_, codes = source_classes(sd, y_arr)
        src, tgt = np.flatnonzero(sd > 0), np.flatnonzero(sd < 0)
        names = [str(c) for c in self.classes_]
        source = Dataset("source", modality, subset(raw, src), codes, names, domain=1)  # type: ignore[arg-type]
        target = Dataset("target", modality, subset(raw, tgt), None, names, domain=-1)  # type: ignore[arg-type]
        self._fit_dataset(source, target=target)
        self.n_source_, self.n_target_ = len(src), len(tgt)
        return self

    def predict_proba(self, X: Any, sample_domain: Any = None) -> np.ndarray:
        """Class probabilities ``[n_samples, n_classes]`` (``sample_domain`` is ignored)."""
        return softmax(self._outputs(X))

    def predict(self, X: Any, sample_domain: Any = None) -> np.ndarray:
        """Predicted classes ``[n_samples]`` (``sample_domain`` is accepted and ignored)."""
        logits = self._outputs(X)  # raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None, sample_domain: Any = None) -> float:
        """Accuracy on the rows whose label is known (rows labelled ``-1`` are skipped)."""
        y_arr = np.asarray(y)
        keep = ~_is_unlabelled(y_arr)
        if not keep.any():
            raise EstimatorInputError(
                "every row of y is -1 (unlabelled): there is nothing to score",
                where="y",
                fix="score on labelled target rows",
            )
        pred = self.predict(X)
        w = None if sample_weight is None else np.asarray(sample_weight)[keep]
        return float(accuracy_score(y_arr[keep], pred[keep], sample_weight=w))
