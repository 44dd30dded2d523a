"""The strategies the advisor recommends, as runnable (method, params) pairs, and the
plain-words reasons that cite the measured numbers behind a decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transferkit.advisor.thresholds import (
    CLEAR_GAIN_LOGME,
    LARGE_DOMAIN_GAP_PAD,
    LARGE_LABELS_PER_CLASS,
    LARGE_MODEL_PARAMS,
    LAYER_DECAY,
    MCC_MIN_CLASSES,
    NO_GAIN_LOGME,
    SMALL_LABELS_PER_CLASS,
    Evidence,
    clearly_better,
    far_source,
    logme_unreliable,
    not_better,
)

#: training from scratch: this many times the advised epochs, at this learning rate
SCRATCH_EPOCHS_MULT = 3
SCRATCH_LR = 3e-3
#: LoRA adapters for large backbones (Hu et al. 2021, https://arxiv.org/abs/2106.09685)
LORA = {"kind": "lora", "r": 8, "alpha": 16}


@dataclass(frozen=True)
class Strategy:
    """A runnable strategy: a registered method, its params, and whether weights are used.

    ``epochs_mult`` scales the advised epochs and ``train`` overrides keys of the config's
    ``train`` section (training from scratch needs a longer, hotter schedule).
    """

    key: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = True
    uses_source: bool = False
    summary: str = ""
    epochs_mult: int = 1
    train: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------- builders


def feature_extraction(e: Evidence) -> Strategy:
    """Frozen backbone + logistic regression; on the probe's best layer when it is not last."""
    params: dict[str, Any] = {}
    if e.probe_best_index is not None and e.probe_best_index < e.n_layer_groups - 1:
        params["layers"] = [int(e.probe_best_index)]
    return Strategy(
        "feature_extraction",
        "linear_probe",
        params,
        summary="feature extraction: frozen backbone + a linear head",
    )


def fine_tuning(e: Evidence) -> Strategy:
    """Fine-tuning with layer-wise lr decay, or LoRA adapters for a large backbone."""
    if e.n_params > LARGE_MODEL_PARAMS:
        return Strategy(
            "peft",
            "finetune",
            {"peft": dict(LORA), "backbone_lr_mult": 1.0},
            summary="parameter-efficient fine-tuning (LoRA adapters)",
        )
    return Strategy(
        "fine_tuning",
        "finetune",
        {"layer_decay": LAYER_DECAY},
        summary="fine-tuning with layer-wise learning-rate decay",
    )


def full_fine_tuning(e: Evidence) -> Strategy:
    """Every layer fine-tuned, no layer decay: with many labels all layers can move."""
    return Strategy(
        "full_fine_tuning",
        "finetune",
        {},
        summary="full fine-tuning (every layer, backbone lr = 0.1 x head lr)",
    )


def domain_adaptation(e: Evidence, *, other: bool = False) -> Strategy:
    """MCC with >= MCC_MIN_CLASSES classes, DANN otherwise (``other`` swaps them)."""
    use_mcc = (e.num_classes >= MCC_MIN_CLASSES) != other
    name = "mcc" if use_mcc else "dann"
    text = "minimum class confusion" if use_mcc else "domain-adversarial training"
    return Strategy(
        "domain_adaptation",
        name,
        {},
        uses_source=True,
        summary=f"domain adaptation ({name}: {text}) from the labelled source",
    )


def target_only(e: Evidence) -> Strategy:
    """No transfer: the same architecture trained from random initialisation on the target.

    A network trained from scratch needs more steps and a larger learning rate than one
    being fine-tuned (He et al. 2019, https://arxiv.org/abs/1811.08883): SCRATCH_EPOCHS_MULT
    times the epochs at SCRATCH_LR. Measured: digits-pretrained tk:smallcnn on mnist5k at
    16 labels/class, from scratch 0.301 (5 epochs, lr 1e-3) vs 0.664 (15 epochs, lr 3e-3).
    """
    return Strategy(
        "target_only",
        "finetune",
        {"backbone_lr_mult": 1.0},
        pretrained=False,
        summary="do not transfer: train on the target alone (random init)",
        epochs_mult=SCRATCH_EPOCHS_MULT,
        train={"lr": SCRATCH_LR},
    )


# ------------------------------------------------------------------------------ reasons


def why_size(e: Evidence) -> str:
    if e.task != "classification":
        return f"the target has {e.labels_per_class_median:g} labelled examples (regression)"
    return (
        f"the target has {e.labels_per_class_median:g} labelled examples per class (median; "
        f"min {e.labels_per_class_min:g}); small <= {SMALL_LABELS_PER_CLASS}, large > "
        f"{LARGE_LABELS_PER_CLASS}"
    )


def why_logme(e: Evidence) -> str:
    if e.weights_random:
        return (
            f"the model's weights equal a fresh random initialisation of its spec (LogME "
            f"{e.logme_pretrained:.3f} vs {e.logme_random:.3f} for other random inits): there "
            "is nothing pretrained to transfer"
        )
    verdict = "somewhat better than random"
    if not_better(e):
        verdict = "not better than random"
    elif clearly_better(e):
        verdict = "clearly better than random"
    elif logme_unreliable(e):
        verdict = "not clearly better than random"
    text = (
        f"LogME of the pretrained features is {e.logme_pretrained:.3f} vs "
        f"{e.logme_random:.3f} for random-init copies (gap {e.logme_gap:+.3f} nats/example, "
        f"control sd {e.logme_random_sd:.3f}; thresholds: <= {NO_GAIN_LOGME} no gain, > "
        f"{CLEAR_GAIN_LOGME} clear): the pretrained weights are {verdict} for this task"
    )
    if logme_unreliable(e) and not clearly_better(e):
        text += (
            f"; but it was computed on {e.logme_rows} rows of {e.feature_dim}-d features "
            "(fewer rows than dimensions), where LogME cannot reliably tell pretrained from "
            "random features, so it is not used to rule transfer out"
        )
    return text


def why_gap(e: Evidence) -> str:
    side = ">=" if far_source(e) else "<"
    return (
        f"domain gap between source and target features: proxy A-distance {e.pad:.2f} "
        f"{side} {LARGE_DOMAIN_GAP_PAD} (0 = indistinguishable, 2 = perfectly separable)"
    )


def why_params(e: Evidence) -> str:
    if e.n_params > LARGE_MODEL_PARAMS:
        return (
            f"the backbone has {e.n_params:,} parameters > "
            f"{LARGE_MODEL_PARAMS / 1e6:.0f}M: train LoRA adapters instead of every weight"
        )
    return (
        f"the backbone has {e.n_params:,} parameters (<= "
        f"{LARGE_MODEL_PARAMS / 1e6:.0f}M): fine-tune every layer, lower layers at a lower "
        f"lr (layer_decay {LAYER_DECAY})"
    )


def why_da_choice(e: Evidence) -> str:
    if e.num_classes >= MCC_MIN_CLASSES:
        return (
            f"{e.num_classes} classes: MCC (minimum class confusion) sharpens target "
            "predictions class by class and plays no adversarial game; in this library's DA "
            "suite it beat DANN on 11 of 12 two-class text pairs and matched it on digits"
        )
    return (
        f"{e.num_classes} classes < {MCC_MIN_CLASSES}: class confusion is undefined, so "
        "DANN aligns the feature distributions adversarially"
    )


def why_probe(e: Evidence) -> list[str]:
    """The layer probe's finding, when it points below the last layer group."""
    if e.probe_best_index is None or e.probe_best_index >= e.n_layer_groups - 1:
        return []
    return [
        f"the layer probe found group {e.probe_best_index} ({e.probe_best_group}) of "
        f"{e.n_layer_groups} as good as the deepest: a linear probe reads that group's "
        "features, and the groups above it are the ones fine-tuning has to adapt"
    ]
