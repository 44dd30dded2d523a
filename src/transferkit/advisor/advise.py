"""``advise``: measure a model on a target (and source), pick a strategy, write runnable configs.

Steps (each measurement is documented in :mod:`transferkit.advisor.measure`, the decision
table in :mod:`transferkit.advisor.rules`):

1. load the target splits (``label_budget`` labels per class, the rest unlabelled) and,
   when given, the labelled source (same modality, same classes);
2. extract the model's features on the target training split (at most ``max_examples``),
   every layer group in one pass, and fit one probe per group (``probe.json``/``.png``);
3. LogME of those features, and of ``n_controls`` random-init copies of the architecture;
4. with a source: proxy A-distance and MMD² between source and target features;
5. apply the decision table; write ``advice.json``, ``recommended.yaml`` and
   ``runner_up.yaml`` (both load with :func:`transferkit.experiment.load_config`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit.advisor.candidates import (
    Candidate,
    build_candidate,
    count_params,
    infer_backbone_options,
)
from transferkit.advisor.configs import BASELINE_NOTE, strategy_config, write_config
from transferkit.advisor.measure import (
    control_logme,
    domain_gap,
    final_and_probe,
    is_random_init,
    transferability,
)
from transferkit.advisor.rules import Decision, decide
from transferkit.advisor.strategies import Strategy
from transferkit.advisor.targets import (
    DataSpec,
    capped,
    data_label,
    labelled,
    load_splits,
    target_summary,
)
from transferkit.advisor.thresholds import Evidence, thresholds
from transferkit.backbones.base import Backbone
from transferkit.data.types import Dataset
from transferkit.errors import ConfigError, DataError
from transferkit.utils.io import atomic_write_json

if TYPE_CHECKING:
    from transferkit.diagnostics.probing import ProbeResult


def load_source(source: DataSpec | None, target: Dataset, seed: int) -> Dataset | None:
    """The labelled source training split, classes aligned to the target's; None if no source."""
    if source is None:
        return None
    from transferkit.experiment.domains import align_classes

    src = labelled(load_splits(source, seed=seed).train, "source")
    if src.modality != target.modality:
        raise DataError(
            f"source is {src.modality} data but target is {target.modality}",
            where=f"--source {data_label(source)} / --target {target.name}",
            fix="give a source of the same modality as the target",
        )
    return align_classes(src, target) if target.task == "classification" else src


def make_evidence(
    summary: dict[str, Any],
    tx: dict[str, Any],
    n_params: int,
    probe: ProbeResult | None,
    gap: dict[str, Any] | None,
) -> Evidence:
    """The rules' inputs from the measured records."""
    lpc = summary["labels_per_class"]
    median = float(lpc.get("median", lpc["n"]))
    return Evidence(
        labels_per_class_median=median,
        labels_per_class_min=float(lpc.get("min", lpc["n"])),
        num_classes=int(summary["num_classes"]),
        logme_pretrained=float(tx["pretrained"]),
        logme_random=float(tx["random_init"]),
        logme_random_sd=float(tx["random_init_sd"]),
        n_params=n_params,
        task=str(summary["task"]),
        n_unlabelled=int(summary["sizes"]["unlabelled"]),
        has_source=gap is not None,
        pad=None if gap is None else float(gap["proxy_a_distance"]),
        probe_best_index=None if probe is None else int(probe.best_index),
        probe_best_group="" if probe is None else probe.groups[probe.best_index],
        n_layer_groups=0 if probe is None else len(probe.groups),
        weights_random=bool(tx.get("weights_random", False)),
        logme_rows=int(tx.get("n_examples", 0)),
        feature_dim=int(tx.get("n_features", 0)),
    )


def _strategy_record(s: Strategy, config: str) -> dict[str, Any]:
    return {
        "strategy": s.key,
        "summary": s.summary,
        "method": s.method,
        "params": s.params,
        "pretrained": s.pretrained,
        "uses_source": s.uses_source,
        "config": config,
    }


def _write_configs(
    out: Path, decision: Decision, name: str, common: dict[str, Any]
) -> dict[str, str]:
    paths = {}
    for role, strat, title in (
        ("recommended", decision.recommended, "recommended"),
        ("runner_up", decision.runner_up, "runner-up"),
    ):
        doc = strategy_config(strat, name=f"{name}-{role}", **common)
        paths[role] = str(write_config(out / f"{role}.yaml", doc, title, strat))
    return paths


def _probe_record(probe: ProbeResult | None, out: Path) -> dict[str, Any] | None:
    if probe is None:
        return None
    atomic_write_json(out / "probe.json", probe.to_dict())
    probe.plot(out / "probe.png")
    d = probe.to_dict()
    keep = ("head", "metric", "groups", "dims", "val_metric", "best_index", "best_group")
    return {**{k: d[k] for k in keep}, "freeze_to": d["freeze_to"], "file": "probe.json"}


@dataclass
class Measured:
    """What :func:`measure` found: data summary, backbone, probe, LogME record, domain gap."""

    summary: dict[str, Any]
    backbone: Backbone
    candidate: Candidate
    options: dict[str, Any]
    tx: dict[str, Any]
    probe: ProbeResult | None = None
    gap: dict[str, Any] | None = None
    source: Dataset | None = None
    timing: dict[str, float] = field(default_factory=dict)


def measure(
    model: str,
    target: DataSpec,
    source: DataSpec | None,
    *,
    max_examples: int,
    seed: int,
    label_budget: int | None,
    n_controls: int,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    say: Callable[[str], None] = lambda _m: None,
    backbone_options: dict[str, Any] | None = None,
) -> Measured:
    """Steps 1-4 of the module docstring."""
    t0 = time.perf_counter()
    splits = load_splits(target, seed=seed, label_budget=label_budget)
    train = labelled(splits.train, "target")
    src = load_source(source, train, seed)
    backbone, cand = build_candidate(model, train, seed=seed, options=backbone_options)
    options = {**infer_backbone_options(cand.spec, train), **(backbone_options or {})}
    tr, va = capped(train, max_examples, seed), capped(splits.val, max_examples, seed + 1)
    say(f"extracting {cand.label} features of {len(tr)} target examples, probing layers")
    final, probe = final_and_probe(
        backbone, tr, va, seed=seed, batch_size=batch_size, cache_dir=cache_dir
    )
    t1 = time.perf_counter()
    say(f"scoring {n_controls} random-init control(s) of {cand.spec}")
    controls = control_logme(
        cand.spec, tr, seed=seed, n_controls=n_controls, batch_size=batch_size, options=options
    )
    m = Measured(target_summary(splits), backbone, cand, options, {}, probe, None, src)
    m.tx = transferability(final, controls, tr.y)
    m.tx["weights_random"] = is_random_init(backbone, cand.spec, tr, seed=seed, options=options)
    t2 = time.perf_counter()
    if src is not None:
        say("measuring the domain gap between source and target")
        from transferkit.experiment.domains import adaptation_pool

        pool = adaptation_pool(splits)
        m.gap = domain_gap(backbone, src, pool, seed=seed, batch_size=batch_size)
    m.timing = {
        "features_and_probe_s": t1 - t0,
        "controls_s": t2 - t1,
        "domain_gap_s": time.perf_counter() - t2,
    }
    return m


def _advice_record(
    m: Measured, decision: Decision, target: DataSpec, source: DataSpec | None
) -> dict[str, Any]:
    return {
        "model": m.candidate.label,
        "target": data_label(target),
        "source": None if source is None else data_label(source),
        "target_info": m.summary,
        "source_info": None
        if m.source is None
        else {"name": m.source.name, "n_train": len(m.source)},
        "backbone": {
            "spec": m.candidate.spec,
            "params": count_params(m.backbone),
            "num_features": int(m.backbone.num_features),
            "layer_groups": [g.name for g in m.backbone.layer_groups()],
        },
        "transferability": m.tx,
        "domain_gap": m.gap,
        "rule": decision.rule,
        "recommended": {
            **_strategy_record(decision.recommended, "recommended.yaml"),
            "reasons": decision.reasons,
        },
        "runner_up": {
            **_strategy_record(decision.runner_up, "runner_up.yaml"),
            "reason": decision.runner_up_reason,
        },
        "baselines": BASELINE_NOTE,
        "thresholds": thresholds(),
    }


def _check_settings(n_controls: int, max_examples: int, epochs: int, seeds: Sequence[int]) -> None:
    if n_controls < 1 or max_examples < 10 or epochs < 1 or not seeds:
        raise ConfigError(
            f"invalid settings n_controls={n_controls}, max_examples={max_examples}, "
            f"epochs={epochs}, seeds={list(seeds)}",
            where="advise",
            fix="use n_controls >= 1, max_examples >= 10, epochs >= 1 and at least one seed",
        )


def advise(
    model: str,
    target: DataSpec,
    source: DataSpec | None = None,
    *,
    max_examples: int = 2000,
    seed: int = 0,
    label_budget: int | None = None,
    out: str | Path = "runs/advise",
    n_controls: int = 3,
    epochs: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    backbone_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure ``model`` on ``target`` (and ``source``), decide, write the advice; return it.

    Args:
        model: backbone spec (``packaged:minilm-l6``, ``file:<path>``, ``tk:smallcnn``, ...).
        target: target dataset (name, path or mapping spec).
        source: optional labelled source dataset (enables domain-gap and DA advice).
        max_examples: cap on target examples measured (seeded random subset).
        seed: split seed and measurement seed.
        label_budget: labelled target examples per class (the rest is unlabelled).
        out: folder for advice.json, recommended.yaml, runner_up.yaml, probe.json/png.
        n_controls: random-init copies of the architecture scored as negative controls.
        epochs, seeds: training length and seeds written into the configs.
        backbone_options: keyword options for the backbone (``max_length``,
            ``input_size``, or ``backbone_spec`` for a ``file:`` checkpoint that does not
            record its architecture); written into the configs too.

    Raises:
        ConfigError: a model that cannot read the data, bad settings.
        DataError: unreadable or unlabelled data, source/target class or modality mismatch.
    """
    _check_settings(n_controls, max_examples, epochs, seeds)
    t0 = time.perf_counter()
    m = measure(
        model,
        target,
        source,
        max_examples=max_examples,
        seed=seed,
        label_budget=label_budget,
        n_controls=n_controls,
        batch_size=batch_size,
        cache_dir=cache_dir,
        say=log or (lambda _m: None),
        backbone_options=backbone_options,
    )
    decision = decide(make_evidence(m.summary, m.tx, count_params(m.backbone), m.probe, m.gap))
    outp = Path(out)
    common = dict(
        model=m.candidate.spec,
        target=target,
        source=source,
        backbone_options=m.options,
        model_pretrained=m.candidate.pretrained,
        label_budget=label_budget,
        epochs=epochs,
        seeds=seeds,
    )
    name = Path(data_label(target)).stem.replace("/", "-") or "target"
    advice = _advice_record(m, decision, target, source)
    advice["configs"] = _write_configs(outp, decision, f"advise-{name}", common)
    advice["probe"] = _probe_record(m.probe, outp)
    advice["settings"] = {
        "max_examples": max_examples,
        "seed": seed,
        "label_budget": label_budget,
        "n_controls": n_controls,
        "epochs": epochs,
        "seeds": list(seeds),
    }
    advice["timing"] = {**m.timing, "total_s": time.perf_counter() - t0}
    atomic_write_json(outp / "advice.json", advice)
    (outp / "advice_check.json").unlink(missing_ok=True)  # it checked an earlier advice
    return advice
