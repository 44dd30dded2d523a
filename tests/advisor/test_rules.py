"""The decision table: every rule and fact hand-tested at its thresholds, and full coverage."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

import pytest

from transferkit.advisor import rules as R
from transferkit.advisor import thresholds as T
from transferkit.advisor.rules import Evidence, decide


def ev(**kw: object) -> Evidence:
    """Moderate target (100/class, 4 classes), pretrained LogME 0.5 vs random 0.0."""
    base = {
        "labels_per_class_median": 100.0,
        "labels_per_class_min": 90.0,
        "num_classes": 4,
        "logme_pretrained": 0.5,
        "logme_random": 0.0,
        "n_params": 1000,
    }
    return Evidence(**{**base, **kw})  # type: ignore[arg-type]


def test_size_facts_at_thresholds() -> None:
    assert T.small(ev(labels_per_class_median=50)) and not T.small(ev(labels_per_class_median=51))
    assert not T.large(ev(labels_per_class_median=1000))
    assert T.large(ev(labels_per_class_median=1000.5))


def test_logme_gap_facts_at_thresholds() -> None:
    assert ev(logme_pretrained=0.25, logme_random=0.125).logme_gap == 0.125
    assert T.not_better(ev(logme_pretrained=0.03)) and not T.not_better(ev(logme_pretrained=0.031))
    assert not T.clearly_better(ev(logme_pretrained=0.08))
    assert T.clearly_better(ev(logme_pretrained=0.081))
    assert T.not_better(ev(logme_pretrained=-0.2))  # worse than random: no gain either
    # a noisy control raises both bars to 2 sd = 0.1
    noisy = {"logme_random_sd": 0.05}
    assert T.not_better(ev(logme_pretrained=0.1, **noisy))
    assert not T.not_better(ev(logme_pretrained=0.101, **noisy))
    assert not T.clearly_better(ev(logme_pretrained=0.1, **noisy))
    assert T.clearly_better(ev(logme_pretrained=0.101, **noisy))


def test_random_weights_are_never_better_than_random() -> None:
    e = ev(logme_pretrained=0.5, weights_random=True)  # a lucky seed, still no pretraining
    assert T.not_better(e) and not T.clearly_better(e)
    assert decide(e).rule == "no_transfer"
    assert "nothing pretrained to transfer" in decide(e).reasons[0]


def test_far_source_needs_a_source_and_a_large_pad() -> None:
    assert T.far_source(ev(has_source=True, pad=1.0))
    assert not T.far_source(ev(has_source=True, pad=0.99))
    assert not T.far_source(ev(has_source=True, pad=None))
    assert not T.far_source(ev(pad=1.5))  # a pad without a source is ignored


def test_domain_adaptation_rule_and_family_choice() -> None:
    e = ev(labels_per_class_median=10, has_source=True, pad=1.0, n_unlabelled=900)
    d = R.rule_domain_adaptation(e)
    assert d is not None and d.rule == "domain_adaptation"
    assert (d.recommended.method, d.runner_up.method) == ("mcc", "dann")
    assert d.recommended.uses_source and d.runner_up.uses_source
    assert any("900 more target examples are unlabelled" in r for r in d.reasons)
    assert any("proxy A-distance 1.00 >= 1.0" in r for r in d.reasons)
    binary = R.rule_domain_adaptation(replace(e, num_classes=2))
    assert binary is not None
    # two classes too: the DA suite measured MCC above DANN on 11 of 12 binary pairs
    assert (binary.recommended.method, binary.runner_up.method) == ("mcc", "dann")
    assert R.rule_domain_adaptation(replace(e, pad=0.99)) is None
    assert R.rule_domain_adaptation(replace(e, labels_per_class_median=51)) is None
    assert R.rule_domain_adaptation(replace(e, has_source=False)) is None
    assert R.rule_domain_adaptation(replace(e, task="regression")) is None


def test_no_transfer_rule() -> None:
    d = R.rule_no_transfer(ev(labels_per_class_median=51, logme_pretrained=0.03))
    assert d is not None and d.rule == "no_transfer"
    assert d.recommended.key == "target_only" and not d.recommended.pretrained
    assert d.recommended.method == "finetune" and d.runner_up.key == "fine_tuning"
    assert any("gap +0.030" in r and "not better than random" in r for r in d.reasons)
    assert R.rule_no_transfer(ev(labels_per_class_median=50, logme_pretrained=0.0)) is None
    assert R.rule_no_transfer(ev(labels_per_class_median=51, logme_pretrained=0.031)) is None


def test_feature_extraction_rule_and_probe_layer() -> None:
    e = ev(labels_per_class_median=50, logme_pretrained=0.081)
    d = R.rule_feature_extraction(e)
    assert d is not None and d.recommended.method == "linear_probe"
    assert d.recommended.params == {} and d.runner_up.method == "finetune"
    assert R.rule_feature_extraction(replace(e, logme_pretrained=0.08)) is None
    assert R.rule_feature_extraction(replace(e, labels_per_class_median=51)) is None
    probed = replace(e, probe_best_index=0, probe_best_group="block0", n_layer_groups=3)
    d = R.rule_feature_extraction(probed)
    assert d is not None and d.recommended.params == {"layers": [0]}
    assert any("group 0 (block0) of 3" in r for r in d.reasons)
    last = R.rule_feature_extraction(replace(probed, probe_best_index=2))
    assert last is not None and last.recommended.params == {}


def test_fine_tuning_rule_layer_decay_or_lora() -> None:
    e = ev(labels_per_class_median=51, logme_pretrained=0.031)
    d = R.rule_fine_tuning(e)
    assert d is not None and d.recommended.params == {"layer_decay": T.LAYER_DECAY}
    assert d.runner_up.method == "linear_probe"
    assert R.rule_fine_tuning(replace(e, labels_per_class_median=1000)) is not None
    assert R.rule_fine_tuning(replace(e, labels_per_class_median=1001)) is None
    assert R.rule_fine_tuning(replace(e, logme_pretrained=0.03)) is None
    at = R.rule_fine_tuning(replace(e, n_params=T.LARGE_MODEL_PARAMS))
    assert at is not None and at.recommended.key == "fine_tuning"
    big = R.rule_fine_tuning(replace(e, n_params=T.LARGE_MODEL_PARAMS + 1))
    assert big is not None and big.recommended.key == "peft"
    assert big.recommended.params["peft"]["kind"] == "lora"
    assert any("50,000,001 parameters > 50M" in r for r in big.reasons)


def test_far_source_with_enough_labels_fine_tunes_on_target() -> None:
    e = ev(labels_per_class_median=200, has_source=True, pad=1.5)
    d = R.rule_far_source_enough_labels(e)
    assert d is not None and d.recommended.method == "finetune"
    assert d.runner_up.key == "domain_adaptation"
    assert R.rule_far_source_enough_labels(replace(e, pad=0.5)) is None
    assert R.rule_far_source_enough_labels(replace(e, task="regression")) is None


def test_large_target_rule() -> None:
    d = R.rule_large_target(ev(labels_per_class_median=1001))
    assert d is not None and d.recommended.key == "full_fine_tuning"
    assert d.runner_up.key == "target_only"
    assert R.rule_large_target(ev(labels_per_class_median=1001, logme_pretrained=0.0)) is None


def test_small_uncertain_rule_splits_on_the_gap() -> None:
    none = R.rule_small_uncertain(ev(labels_per_class_median=8, logme_pretrained=0.0))
    assert none is not None and none.recommended.key == "target_only"
    assert none.runner_up.key == "feature_extraction"
    modest = R.rule_small_uncertain(ev(labels_per_class_median=8, logme_pretrained=0.05))
    assert modest is not None and modest.recommended.key == "feature_extraction"
    assert R.rule_small_uncertain(ev(labels_per_class_median=8, logme_pretrained=0.5)) is None


def test_unrelated_source_and_large_target_means_do_not_transfer() -> None:
    """The issue's requirement: features no better than random + many labels -> target alone."""
    e = ev(labels_per_class_median=400, logme_pretrained=-0.1, has_source=True, pad=1.9)
    d = decide(e)
    assert d.rule == "no_transfer" and d.recommended.key == "target_only"
    assert any("proxy A-distance 1.90" in r for r in d.reasons)  # the source is mentioned


def test_domain_adaptation_comes_first_in_the_table() -> None:
    e = ev(labels_per_class_median=5, logme_pretrained=0.0, has_source=True, pad=2.0)
    assert decide(e).rule == "domain_adaptation"


def test_near_source_is_explained_when_not_used() -> None:
    d = decide(ev(labels_per_class_median=20, has_source=True, pad=0.4))
    assert d.rule == "feature_extraction"
    assert any(
        "proxy A-distance 0.40 < 1.0" in r and "does not use the source" in r for r in d.reasons
    )


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_table_covers_every_input_and_reasons_cite_numbers(task: str) -> None:
    medians = [1, 50, 51, 500, 1000, 5000]
    gaps = [-0.5, 0.0, 0.03, 0.05, 0.08, 0.5]
    sources = [(False, None), (True, 0.2), (True, 1.8)]
    for m, g, (src, pad), k in itertools.product(medians, gaps, sources, [2, 10]):
        e = ev(
            labels_per_class_median=m,
            logme_pretrained=g,
            has_source=src,
            pad=pad,
            num_classes=k,
            task=task,
        )
        d = decide(e)
        assert d.recommended != d.runner_up, e
        assert d.reasons and all(re.search(r"\d", r) for r in d.reasons), d.reasons
        if task == "regression" or not src:
            assert not d.recommended.uses_source and not d.runner_up.uses_source


def test_logme_on_fewer_rows_than_dimensions_does_not_rule_transfer_out() -> None:
    # sentiment/tweets at 32 labels/class: 64 rows of 384-d MiniLM features, gap +0.027
    # (docs/transferability_validation.md): the pretrained model probes 19 points better
    weak = ev(
        labels_per_class_median=32,
        logme_pretrained=-0.738,
        logme_random=-0.765,
        logme_rows=64,
        feature_dim=384,
    )
    assert T.logme_unreliable(weak) and not T.not_better(weak)
    d = decide(weak)
    assert d.recommended.key == "feature_extraction"
    assert any("64 rows of 384-d features" in r for r in d.reasons)
    # a gap LogME cannot read is not called "somewhat better" (it may even be negative)
    neg = decide(replace(weak, logme_pretrained=-0.772))
    assert any("not clearly better than random" in r for r in neg.reasons)
    assert not any("somewhat better" in r for r in neg.reasons)
    # the same gap on enough rows is read as "no better than random": target alone
    enough = replace(weak, logme_rows=1000)
    assert not T.logme_unreliable(enough) and T.not_better(enough)
    assert decide(enough).recommended.key == "target_only"
    # a random-weights model stays "not better" however few the rows
    assert T.not_better(replace(weak, weights_random=True))
    # unknown row counts (0) keep the previous behaviour
    assert not T.logme_unreliable(replace(weak, logme_rows=0))
