"""Thresholds of the advisor's decision table, the evidence they are applied to, and the
facts (small target, features better than random, far source) the rules are built from.

Every threshold is a named constant documented with the guideline or the measurement it
encodes; :mod:`transferkit.advisor.rules` combines the facts into decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

#: at most this many labels per class is a "small" target. Feature extraction beats
#: fine-tuning in this regime (Kornblith et al. 2019, https://arxiv.org/abs/1805.08974;
#: docs/data_efficiency.md: MiniLM linear probe 0.651 vs fine-tuning 0.613 at 16/class).
SMALL_LABELS_PER_CLASS = 50
#: above this many labels per class the target alone can train a network well; fine-tune
#: the whole model (Yosinski et al. 2014, https://arxiv.org/abs/1411.1792).
LARGE_LABELS_PER_CLASS = 1000
#: LogME gap (nats/example) at or below which pretrained features are "no better than
#: random". Measured: a tk:smallcnn trained on 8x8 digits scores +0.022 over its random copy
#: on MNIST (docs/data_efficiency.md shows that transfer is negative); random inits of the
#: same CNN spread by sd ~0.025 on digits.
NO_GAIN_LOGME = 0.03
#: LogME gap above which pretrained features are "clearly better". Measured: MiniLM vs
#: random MiniLM on tweets +0.20; a CNN trained on MNIST vs random on digits +0.055..0.09.
CLEAR_GAIN_LOGME = 0.08
#: a gap within this many sds of the random controls' spread is treated as noise.
NOISE_SIGMAS = 2.0
#: LogME needs at least this many scored rows per feature dimension before a small gap is
#: read as "no better than random". Measured (docs/transferability_validation.md): on 64
#: rows of 384-d MiniLM features (sentiment/amazon, /tweets at 32 labels per class) random
#: init outscored the packaged MiniLM, which probes 15-19 points better.
MIN_ROWS_PER_FEATURE = 1.0
#: backbones above this many parameters are fine-tuned through LoRA adapters (Hu et al.
#: 2021, https://arxiv.org/abs/2106.09685): full fine-tuning costs memory and overfits.
LARGE_MODEL_PARAMS = 50_000_000
#: proxy A-distance (0..2) at or above which the domains are "far apart": a linear
#: classifier tells them apart with <= 25% error (Ben-David et al. 2007/2010).
LARGE_DOMAIN_GAP_PAD = 1.0
#: with at least this many classes, MCC (Jin et al. 2020) is the DA method, DANN the
#: runner-up: MCC reduces pairwise class confusion on the target and plays no adversarial
#: game. It was 3 ("with 2 classes class confusion carries little signal": DANN for binary
#: tasks) until the DA suite measured the opposite (docs/da_benchmark.md, DEV-selected, 3
#: seeds): MCC beat DANN on 11 of the 12 two-class sentiment pairs (by +0.02 on average, up
#: to +0.07) and on 1 of the 2 ten-class digit pairs. Now 2: MCC for every classification.
MCC_MIN_CLASSES = 2
#: discriminative learning rates: group i of n trains at lr * decay^(n - i) (Howard & Ruder
#: 2018, https://arxiv.org/abs/1801.06146; BEiT/timm use 0.65-0.75).
LAYER_DECAY = 0.75


@dataclass(frozen=True)
class Evidence:
    """Everything the rules read. For regression, ``labels_per_class_*`` = labelled rows."""

    labels_per_class_median: float
    labels_per_class_min: float
    num_classes: int
    logme_pretrained: float
    logme_random: float
    logme_random_sd: float = 0.0
    n_params: int = 0
    task: str = "classification"
    n_unlabelled: int = 0
    has_source: bool = False
    pad: float | None = None
    probe_best_index: int | None = None
    probe_best_group: str = ""
    n_layer_groups: int = 0
    weights_random: bool = False
    logme_rows: int = 0
    feature_dim: int = 0

    @property
    def logme_gap(self) -> float:
        return self.logme_pretrained - self.logme_random


# ------------------------------------------------------------------------ measured facts


def small(e: Evidence) -> bool:
    """At most SMALL_LABELS_PER_CLASS labelled examples per class (median)."""
    return e.labels_per_class_median <= SMALL_LABELS_PER_CLASS


def large(e: Evidence) -> bool:
    """More than LARGE_LABELS_PER_CLASS labelled examples per class (median)."""
    return e.labels_per_class_median > LARGE_LABELS_PER_CLASS


def noise_floor(e: Evidence) -> float:
    """NOISE_SIGMAS x the spread of the random-init controls' LogME."""
    return NOISE_SIGMAS * e.logme_random_sd


def logme_unreliable(e: Evidence) -> bool:
    """LogME was computed on fewer than ``MIN_ROWS_PER_FEATURE x D`` rows (``D`` = feature
    dimension): too few to read a small gap as "no better than random"."""
    return 0 < e.logme_rows < MIN_ROWS_PER_FEATURE * e.feature_dim


def not_better(e: Evidence) -> bool:
    """Pretrained LogME within ``max(NO_GAIN_LOGME, 2 sd)`` of the random controls (and
    enough rows to trust that, see :func:`logme_unreliable`), or the model's weights are
    themselves a random initialisation (``tk:`` specs)."""
    if e.weights_random:
        return True
    return not logme_unreliable(e) and e.logme_gap <= max(NO_GAIN_LOGME, noise_floor(e))


def clearly_better(e: Evidence) -> bool:
    """Pretrained LogME above the random controls by more than ``max(CLEAR_GAIN, 2 sd)``."""
    return not e.weights_random and e.logme_gap > max(CLEAR_GAIN_LOGME, noise_floor(e))


def far_source(e: Evidence) -> bool:
    """A source was given and its proxy A-distance to the target is >= LARGE_DOMAIN_GAP_PAD."""
    return e.has_source and e.pad is not None and e.pad >= LARGE_DOMAIN_GAP_PAD


def thresholds() -> dict[str, float | int]:
    """Every named threshold, for advice.json."""
    return {
        "small_labels_per_class": SMALL_LABELS_PER_CLASS,
        "large_labels_per_class": LARGE_LABELS_PER_CLASS,
        "no_gain_logme": NO_GAIN_LOGME,
        "clear_gain_logme": CLEAR_GAIN_LOGME,
        "noise_sigmas": NOISE_SIGMAS,
        "min_rows_per_feature": MIN_ROWS_PER_FEATURE,
        "large_model_params": LARGE_MODEL_PARAMS,
        "large_domain_gap_pad": LARGE_DOMAIN_GAP_PAD,
        "mcc_min_classes": MCC_MIN_CLASSES,
        "layer_decay": LAYER_DECAY,
    }
