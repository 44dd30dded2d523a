"""The advisor's decision table: measured evidence -> a transfer strategy and a runner-up.

Each rule is a small pure function ``rule(e: Evidence) -> Decision | None``; :func:`decide`
tries them in the order of :data:`RULES` and returns the first decision. Thresholds are
named constants below, each with the guideline or measurement it comes from.

=====  ==============================================  ======================  ==============
 #     when (first match wins)                         recommended             runner-up
=====  ==============================================  ======================  ==============
 1     labelled source, target labels scarce           domain adaptation       the other DA
       (<= 50/class), domain gap PAD >= 1.0;           (mcc if >= 3 classes,   method
       classification                                  else dann)
 2     pretrained features not better than random      train on the target     fine-tuning
       (LogME gap <= max(0.03, 2 sd)), > 50/class      alone (no transfer)
 3     <= 50/class, features clearly better than       feature extraction      fine-tuning
       random (gap > max(0.08, 2 sd))                  (linear_probe)
 4     labelled source far away (PAD >= 1.0),          fine-tuning on target   domain
       > 50/class, features better than random;        labels                  adaptation
       classification
 5     50 < labels/class <= 1000, features better      fine-tuning (layer      feature
       than random (related domain)                    decay; LoRA if > 50M)   extraction
 6     > 1000/class, features better than random       full fine-tuning        target alone
 7     <= 50/class, features not clearly better        target alone if not     feature extr.
                                                       better, else feature    / fine-tuning
                                                       extraction
=====  ==============================================  ======================  ==============

The LogME gap is ``LogME(pretrained) - mean LogME(random-init copies)`` in nats per
example; ``sd`` is the spread of the random-init copies' LogME (negative controls). A model
whose weights equal a fresh random initialisation of its spec (``tk:`` architectures) is
never "better than random". For regression, "labels per class" is the number of labelled
examples. When a source was given but the decision does not use it, the measured gap is
added to the reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from transferkit.advisor.strategies import (
    Strategy,
    domain_adaptation,
    feature_extraction,
    fine_tuning,
    full_fine_tuning,
    target_only,
    why_da_choice,
    why_gap,
    why_logme,
    why_params,
    why_probe,
    why_size,
)
from transferkit.advisor.thresholds import (
    SMALL_LABELS_PER_CLASS,
    Evidence,
    clearly_better,
    far_source,
    large,
    not_better,
    small,
)

__all__ = ["RULES", "Decision", "Evidence", "Strategy", "decide"]


@dataclass(frozen=True)
class Decision:
    """The output of a rule: both strategies and the plain-words reasons."""

    rule: str
    recommended: Strategy
    runner_up: Strategy
    reasons: list[str]
    runner_up_reason: str


def rule_domain_adaptation(e: Evidence) -> Decision | None:
    """Labelled source + scarce target labels + domains far apart -> domain adaptation.

    Guideline: the target error is bounded by the source error plus the divergence between
    the domains (Ben-David et al. 2010, https://doi.org/10.1007/s10994-009-5152-4). With
    too few target labels to fine-tune on, a far source helps only if that divergence is
    reduced, which is what DA methods train for on the unlabelled target.
    """
    if e.task != "classification" or not far_source(e) or not small(e):
        return None
    rec, alt = domain_adaptation(e), domain_adaptation(e, other=True)
    reasons = [
        why_size(e) + f"; {e.n_unlabelled} more target examples are unlabelled",
        why_gap(e),
        why_da_choice(e),
        why_logme(e),
    ]
    alt_why = f"{alt.method}, the other DA family on the same data, to check the choice"
    return Decision("domain_adaptation", rec, alt, reasons, alt_why)


def rule_no_transfer(e: Evidence) -> Decision | None:
    """Pretrained features no better than random + enough labels -> train on the target alone.

    Guideline: transfer pays only when the source knowledge is relevant; otherwise it can
    hurt (negative transfer, Rosenstein et al. 2005; Wang et al. 2019,
    https://arxiv.org/abs/1811.09751), and a target with > 50 labels per class can train
    its own model.
    """
    if small(e) or not not_better(e):
        return None
    reasons = [
        why_logme(e),
        why_size(e) + f": more than {SMALL_LABELS_PER_CLASS} per class is enough to train "
        "on the target alone",
    ]
    alt_why = "fine-tuning the pretrained model, to confirm that transfer does not help"
    return Decision("no_transfer", target_only(e), fine_tuning(e), reasons, alt_why)


def rule_feature_extraction(e: Evidence) -> Decision | None:
    """Small target + pretrained features clearly better than random -> feature extraction.

    Guideline: with few labels, a linear head on frozen features cannot overfit the
    backbone and matches or beats fine-tuning (Kornblith et al. 2019,
    https://arxiv.org/abs/1805.08974; docs/data_efficiency.md).
    """
    if not small(e) or not clearly_better(e):
        return None
    rec = feature_extraction(e)
    reasons = [why_size(e), why_logme(e), *why_probe(e)]
    alt_why = "fine-tuning adapts the features too, but few labels make it overfit easily"
    return Decision("feature_extraction", rec, fine_tuning(e), reasons, alt_why)


def rule_far_source_enough_labels(e: Evidence) -> Decision | None:
    """A far source but enough target labels -> fine-tune on the target labels.

    Guideline: labelled target data beats adaptation from a distant source; DA is for the
    case where target labels are missing (Ben-David et al. 2010). Classification only:
    the DA runner-up needs classes shared by both domains.
    """
    if e.task != "classification" or not far_source(e) or small(e) or not_better(e):
        return None
    reasons = [why_size(e), why_gap(e), why_logme(e), why_params(e)]
    alt_why = "domain adaptation from the source, in case the source labels add to the target's"
    return Decision("far_source", fine_tuning(e), domain_adaptation(e), reasons, alt_why)


def rule_fine_tuning(e: Evidence) -> Decision | None:
    """Moderate target (50..1000 per class) + related domain -> fine-tuning.

    Guideline: with enough labels to adapt the features without overfitting, fine-tuning
    beats a frozen backbone (Yosinski et al. 2014, https://arxiv.org/abs/1411.1792);
    lower layers move less (layer-wise lr decay, Howard & Ruder 2018); large models train
    LoRA adapters (Hu et al. 2021).
    """
    if small(e) or large(e) or not_better(e):
        return None
    reasons = [why_size(e), why_logme(e), why_params(e), *why_probe(e)]
    alt_why = "feature extraction: far cheaper, and as good when the features already fit"
    return Decision("fine_tuning", fine_tuning(e), feature_extraction(e), reasons, alt_why)


def rule_large_target(e: Evidence) -> Decision | None:
    """Large target (> 1000 per class) + related domain -> full fine-tuning.

    Guideline: with many labels every layer can adapt; pretraining then mostly speeds up
    convergence (He et al. 2019, "Rethinking ImageNet Pre-training",
    https://arxiv.org/abs/1811.08883), so training from scratch is the natural runner-up.
    """
    if not large(e) or not_better(e):
        return None
    reasons = [why_size(e), why_logme(e)]
    alt_why = "training on the target alone: with this much data it may match transfer"
    return Decision("large_target", full_fine_tuning(e), target_only(e), reasons, alt_why)


def rule_small_uncertain(e: Evidence) -> Decision | None:
    """Small target, features not clearly better than random -> the cheapest honest option.

    Guideline: with few labels and weak evidence for the pretrained features, nothing is
    reliable; if the features are no better than random, train on the target alone (the
    classical baseline in every run is then likely the model to beat), otherwise use
    feature extraction, which cannot overfit the backbone.
    """
    if not small(e) or clearly_better(e):
        return None
    reasons = [why_size(e), why_logme(e)]
    if not_better(e):
        alt_why = "feature extraction, the cheapest use of the pretrained model"
        return Decision("small_no_gain", target_only(e), feature_extraction(e), reasons, alt_why)
    alt_why = "fine-tuning, in case adapting the features pays off despite few labels"
    return Decision("small_modest_gain", feature_extraction(e), fine_tuning(e), reasons, alt_why)


RuleFn = Callable[[Evidence], "Decision | None"]
#: the decision table, in order: the first rule that returns a Decision wins
RULES: tuple[RuleFn, ...] = (
    rule_domain_adaptation,
    rule_no_transfer,
    rule_feature_extraction,
    rule_far_source_enough_labels,
    rule_fine_tuning,
    rule_large_target,
    rule_small_uncertain,
)


def decide(e: Evidence) -> Decision:
    """Apply :data:`RULES` in order; the table covers every input (else a bug: RuntimeError).

    When a source was given but the chosen strategy does not use it, the domain gap that
    ruled adaptation out is added to the reasons.
    """
    for rule in RULES:
        d = rule(e)
        if d is None:
            continue
        gap = why_gap(e) if e.has_source and e.pad is not None else None
        if gap and not d.recommended.uses_source and gap not in d.reasons:
            note = gap + ": the recommended strategy does not use the source"
            d = replace(d, reasons=[*d.reasons, note])
        return d
    raise RuntimeError(f"no advisor rule matched {e}")  # unreachable: rule 7 is the fallback
