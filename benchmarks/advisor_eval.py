"""Was the advisor right?  ``transferkit advise`` on every built-in target, checked against
the strategies this repository has actually trained there.

For each *cell* (target, model, labels per class, optional labelled source) the script
runs :func:`transferkit.advisor.advise` (cached in ``OUT/<cell>/advice.json``) and looks
the recommended strategy up in the measured results of the other benchmarks -- it trains
nothing itself, so every accuracy it quotes is one a benchmark page already reports:

* ``data_efficiency`` (``runs/data_efficiency``): MiniLM on ``sentiment/movies`` and the
  digits-pretrained ``tk:smallcnn`` on ``mnist5k`` at 4/16/64/256 labels per class;
* ``low_data`` (``runs/low_data``): MiniLM on tweets, amazon, nyt, bbc_news and sms_spam at
  4 and 16 labels per class;
* ``transferability`` (``runs/transferability_validation``): EfficientNet-Lite0 on
  ``digits`` and ``mnist5k`` at 32 labels per class (fine-tuning: one seed);
* ``da`` (``runs/da_suite`` text setup + ``runs/low_data``): the 12 ordered sentiment
  pairs, a labelled source and 4 labels per class on the target. Domain adaptation
  (label-free selected checkpoint, frozen MiniLM features + MLP, target labels unused)
  competes with feature extraction, fine-tuning and training from scratch on the target's
  4 labels per class (the low-data runs of that target).

Advisor strategy -> measured run: ``feature_extraction`` -> linear probe;
``fine_tuning`` (layer-wise lr decay) -> ``gradual_ld`` where measured, else full
fine-tuning (marked ``≈``); ``full_fine_tuning`` -> full fine-tuning; ``peft`` -> LoRA;
``target_only`` -> the same architecture from random initialisation;
``domain_adaptation`` -> the recommended DA method (dann or mcc).

A recommendation *hits* when its mean accuracy is the best of the advisor's strategies
measured in that cell, and is *within one sd* when ``best - rec <= sd`` (the sample
standard deviation over seeds of the best strategy, or of the recommended one when the
best has a single seed). Methods outside the advisor's vocabulary (SetFit, prototype
heads, TF-IDF, other DA methods) are shown as "best of everything measured" for context.

    .venv/bin/python benchmarks/advisor_eval.py --doc docs/advisor_eval.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from _runs import run_one, write_section
from transferkit.advisor.advise import advise
from transferkit.experiment.config import apply_overrides, read_yaml
from transferkit.utils.io import atomic_write_json

DOMAINS = ("tweets", "movies", "amazon", "nyt")
MINILM = "packaged:minilm-l6"
EFFNET = "packaged:efficientnet-lite0"
DIGITS_CNN = "runs/data_efficiency/image/pretrain-digits/checkpoints/target-seed0/model.safetensors"
CNN_OPTIONS = {"backbone_spec": "tk:smallcnn", "width": 16, "depth": 3, "input_size": 16}
ADVISOR_KEYS = ("feature_extraction", "fine_tuning", "full_fine_tuning", "peft", "target_only")


@dataclass
class Cell:
    """One advisor question and the measured answers to it."""

    key: str
    study: str
    target: str
    model: str
    budget: int
    source: str | None = None
    options: dict[str, Any] | None = None
    #: advisor strategy key (``domain_adaptation:<method>`` for DA) -> per-seed accuracy
    measured: dict[str, list[float]] = field(default_factory=dict)
    #: strategy key -> the run it was measured as, when not an exact match
    approx: dict[str, str] = field(default_factory=dict)
    #: everything else measured in the cell (context only)
    others: dict[str, list[float]] = field(default_factory=dict)


# --------------------------------------------------------------------- measured results


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def data_efficiency_cells(root: Path) -> list[Cell]:
    """Per task and budget: every method's and baseline's per-seed accuracy."""
    cells = []
    for task, target, model, opts in (
        ("text", "sentiment/movies", MINILM, None),
        ("image", "mnist5k", f"file:{DIGITS_CNN}", CNN_OPTIONS),
    ):
        for budget in (4, 16, 64, 256):
            runs: dict[str, list[float]] = {}
            for method in ("linear_probe", "finetune", "gradual_ld", "lora", "scratch"):
                f = root / task / method / f"b{budget}" / "metrics.json"
                if not f.is_file():
                    continue
                m = _load(f)
                runs[method] = [s["accuracy"] for s in m["target_per_seed"]]
                for name, b in (m.get("baselines") or {}).items():
                    runs[name] = [s["accuracy"] for s in b["per_seed"]]
            if not runs:
                continue
            c = Cell(
                f"{task}-{target.replace('/', '-')}-b{budget}",
                "data_efficiency",
                target,
                model,
                budget,
                options=opts,
            )
            pick = {
                "feature_extraction": "linear_probe",
                "fine_tuning": "gradual_ld",
                "full_fine_tuning": "finetune",
                "peft": "lora",
                "target_only": "scratch" if task == "image" else "random_init",
            }
            for key, run in pick.items():
                if run in runs:
                    c.measured[key] = runs[run]
            c.approx["fine_tuning"] = "gradual unfreezing + layer decay 0.7"
            c.others = {k: v for k, v in runs.items() if k not in pick.values()}
            cells.append(c)
    return cells


def low_data_rows(root: Path) -> dict[tuple[str, str, int], list[float]]:
    rows = _load(root / "results.json")["rows"]
    return {(r["target"], r["method"], int(r["budget"])): r["accuracy"] for r in rows}


def low_data_cells(rows: dict[tuple[str, str, int], list[float]]) -> list[Cell]:
    """Targets other than movies (the data-efficiency study covers movies with more
    strategies) at 4 and 16 labels per class."""
    cells = []
    targets = sorted({t for t, _, _ in rows} - {"sentiment/movies"})
    for target in targets:
        for budget in (4, 16):
            c = Cell(
                f"lowdata-{target.replace('/', '-')}-b{budget}", "low_data", target, MINILM, budget
            )
            c.options = {"max_length": 64}
            _fill_low_data(c, rows, target, budget)
            if c.measured:
                cells.append(c)
    return cells


def _fill_low_data(
    c: Cell, rows: dict[tuple[str, str, int], list[float]], target: str, budget: int
) -> None:
    pick = {
        "feature_extraction": "linear_probe",
        "fine_tuning": "finetune",
        "full_fine_tuning": "finetune",
        "target_only": "random_init",
    }
    for key, run in pick.items():
        if (target, run, budget) in rows:
            c.measured[key] = rows[(target, run, budget)]
    c.approx["fine_tuning"] = "full fine-tuning (no layer decay)"
    for (t, m, b), acc in rows.items():
        if t == target and b == budget and m not in pick.values():
            c.others[m] = acc


def transferability_cells(root: Path) -> list[Cell]:
    """EfficientNet-Lite0 on the two image targets at 32 labels per class."""
    f = root / "results-image.json"
    if not f.is_file():
        return []
    res = _load(f)
    cells = []
    for target in ("digits", "mnist5k"):
        acc = res.get(target, {}).get("acc", {})
        if not acc:
            continue
        c = Cell(f"transfer-{target}-b32", "transferability", target, EFFNET, 32)
        lp, ft = acc.get("linear_probe", {}), acc.get("finetune", {})
        if "efficientnet-lite0" in lp:
            c.measured["feature_extraction"] = lp["efficientnet-lite0"]
        if "efficientnet-lite0" in ft:
            c.measured["fine_tuning"] = ft["efficientnet-lite0"]
            c.measured["full_fine_tuning"] = ft["efficientnet-lite0"]
            c.approx["fine_tuning"] = "full fine-tuning (no layer decay), 1 seed"
            c.approx["full_fine_tuning"] = "1 seed"
        if "random efficientnet-lite0" in ft:
            c.measured["target_only"] = ft["random efficientnet-lite0"]
            c.approx["target_only"] = "1 seed"
        for name in ("efficientnet-lite1", "efficientnet-lite2"):
            if name in ft:
                c.others[f"fine-tune {name} (another model)"] = ft[name]
        cells.append(c)
    return cells


def da_cells(da_root: Path, rows: dict[tuple[str, str, int], list[float]]) -> list[Cell]:
    """The 12 sentiment pairs: DA (no target labels) vs the target's 4 labels per class."""
    f = da_root / "results.json"
    if not f.is_file():
        return []
    res = _load(f)
    da = [r for r in (res["rows"] if isinstance(res, dict) else res) if r["setup"] == "text"]
    cells = []
    for src in DOMAINS:
        for tgt in DOMAINS:
            if src == tgt:
                continue
            pair = [r for r in da if r["pair"] == f"{src}->{tgt}"]
            if not pair:
                continue
            c = Cell(
                f"da-{src}-{tgt}",
                "da",
                f"sentiment/{tgt}",
                MINILM,
                4,
                source=f"sentiment/{src}",
                options={"max_length": 64},
            )
            _fill_low_data(c, rows, f"sentiment/{tgt}", 4)
            for r in pair:
                key = f"domain_adaptation:{r['method']}"
                if r["method"] in ("dann", "mcc"):
                    c.measured[key] = r["selected"]
                    c.approx[key] = "frozen MiniLM features + MLP, no target labels"
                else:
                    c.others[f"DA {r['method']}"] = r["selected"]
            src_only = next((r["source_only"] for r in pair if r["source_only"]), None)
            if src_only:
                c.others["source-only"] = src_only
            cells.append(c)
    return cells


# --------------------------------------------------------------------------- evaluation


def strategy_key(rec: dict[str, Any]) -> str:
    """An advice strategy record as a measured key (``domain_adaptation:<method>`` for DA)."""
    if rec["strategy"] == "domain_adaptation":
        return f"domain_adaptation:{rec['method']}"
    return str(rec["strategy"])


def rec_key(advice: dict[str, Any]) -> str:
    return strategy_key(advice["recommended"])


def _sd(v: list[float]) -> float:
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def judge(c: Cell, advice: dict[str, Any]) -> dict[str, Any]:
    """Hit / within one sd / miss of the recommendation among the measured strategies."""
    key = rec_key(advice)
    alt_key = strategy_key(advice["runner_up"])
    means = {k: float(np.mean(v)) for k, v in c.measured.items()}
    out: dict[str, Any] = {
        "cell": c.key,
        "study": c.study,
        "target": c.target,
        "source": c.source,
        "budget": c.budget,
        "model": c.model,
        "rule": advice["rule"],
        "recommended": key,
        "runner_up": alt_key,
        "measured": {k: [round(x, 4) for x in v] for k, v in c.measured.items()},
        "approx": c.approx,
        "others": {k: [round(x, 4) for x in v] for k, v in c.others.items()},
    }
    if key not in means:
        out["outcome"] = "not measured"
        return out
    best = max(means, key=lambda k: means[k])
    sd = _sd(c.measured[best]) if len(c.measured[best]) > 1 else _sd(c.measured[key])
    gap = means[best] - means[key]
    out.update(
        best=best,
        rec_mean=means[key],
        rec_sd=_sd(c.measured[key]),
        best_mean=means[best],
        best_sd=_sd(c.measured[best]),
        gap=gap,
        outcome="best" if key == best else ("within 1 sd" if gap <= sd + 1e-12 else "miss"),
    )
    if alt_key in means:
        out["runner_up_mean"] = means[alt_key]
        out["beats_runner_up"] = means[key] >= means[alt_key]
    everything = {**means, **{k: float(np.mean(v)) for k, v in c.others.items()}}
    top = max(everything, key=lambda k: everything[k])
    out["best_overall"], out["best_overall_mean"] = top, everything[top]
    return out


#: settings of the benchmark runs, put into a recommended.yaml before it is run here
RUN_OVERRIDES = ["data.max_eval_examples=500", "baselines.enabled=false", "report=false"]


def needs_run(c: Cell, advice: dict[str, Any]) -> bool:
    """The recommendation was only measured approximately (or on another layer)."""
    key, rec = rec_key(advice), advice["recommended"]
    return not rec["uses_source"] and (
        key in c.approx or key not in c.measured or bool(rec["params"].get("layers"))
    )


def run_recommended(c: Cell, advice: dict[str, Any], out: Path) -> list[float]:
    """Train the advisor's own recommended.yaml (3 seeds); per-seed test accuracy."""
    folder = out / c.key
    doc = apply_overrides(read_yaml(folder / advice["recommended"]["config"]), RUN_OVERRIDES)
    m = run_one(doc, folder / "recommended-run")
    return [s["accuracy"] for s in m["target_per_seed"]]


def run_advice(c: Cell, out: Path) -> dict[str, Any]:
    folder = out / c.key
    f = folder / "advice.json"
    if f.is_file():
        a = _load(f)
        if a["settings"]["label_budget"] == c.budget:
            return a
    print(f"  advise {c.key}: {c.model} on {c.target} ({c.budget}/class)", flush=True)
    return advise(
        c.model,
        c.target,
        c.source,
        label_budget=c.budget,
        out=folder,
        seed=0,
        backbone_options=c.options,
    )


# ----------------------------------------------------------------------------- report


def _ms(v: float | None, sd: float | None = None) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if not sd else f"{v:.3f} ± {sd:.3f}"


def short_model(spec: str) -> str:
    if spec == MINILM:
        return "MiniLM"
    if spec == EFFNET:
        return "EffNet-Lite0"
    return "smallcnn (digits)" if "pretrain-digits" in spec else spec


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| target ← source | model | labels/class | recommended | its accuracy | "
        "best advisor strategy | outcome | runner-up (acc) | best of everything measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        src = f" ← {r['source'].split('/')[-1]}" if r["source"] else ""
        rec = r["recommended"] + (" ≈" if r["recommended"] in r["approx"] else "")
        if r["outcome"] == "not measured":
            lines.append(f"| {r['target']}{src} | {r['budget']} | {rec} | not measured | | | | |")
            continue
        alt = r["runner_up"]
        alt_txt = f"{alt} ({r['runner_up_mean']:.3f})" if "runner_up_mean" in r else alt
        lines.append(
            f"| {r['target']}{src} | {short_model(r['model'])} | {r['budget']} | {rec} | "
            f"{_ms(r['rec_mean'], r['rec_sd'])} "
            f"| {r['best']} {_ms(r['best_mean'], r['best_sd'])} | **{r['outcome']}** | "
            f"{alt_txt} | {r['best_overall']} ({r['best_overall_mean']:.3f}) |"
        )
    return "\n".join(lines)


def tally(results: list[dict[str, Any]]) -> str:
    lines = [
        "| study | cells | best | within 1 sd | miss | not measured |",
        "|---|---|---|---|---|---|",
    ]
    groups = {
        s: [r for r in results if r["study"] == s]
        for s in dict.fromkeys(r["study"] for r in results)
    }
    groups["all"] = results
    for name, rs in groups.items():
        n = {
            o: sum(r["outcome"] == o for r in rs)
            for o in ("best", "within 1 sd", "miss", "not measured")
        }
        lines.append(
            f"| {name} | {len(rs)} | {n['best']} | {n['within 1 sd']} | {n['miss']} | "
            f"{n['not measured']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/advisor_eval"))
    p.add_argument("--data-efficiency", type=Path, default=Path("runs/data_efficiency"))
    p.add_argument("--low-data", type=Path, default=Path("runs/low_data"))
    p.add_argument("--da", type=Path, default=Path("runs/da_suite"))
    p.add_argument("--transferability", type=Path, default=Path("runs/transferability_validation"))
    p.add_argument(
        "--studies", nargs="+", default=["data_efficiency", "low_data", "transferability", "da"]
    )
    p.add_argument(
        "--run-recommended",
        action="store_true",
        help="train recommended.yaml where the recommendation was measured only "
        "approximately (domain adaptation excepted) and use that measurement",
    )
    p.add_argument("--doc", type=Path, default=None, help="write the markdown tables here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    rows = low_data_rows(a.low_data)
    cells: list[Cell] = []
    if "data_efficiency" in a.studies:
        cells += data_efficiency_cells(a.data_efficiency)
    if "low_data" in a.studies:
        cells += low_data_cells(rows)
    if "transferability" in a.studies:
        cells += transferability_cells(a.transferability)
    if "da" in a.studies:
        cells += da_cells(a.da, rows)
    results = []
    for c in cells:
        advice = run_advice(c, a.out)
        ran = a.out / c.key / "recommended-run" / "metrics.json"
        if needs_run(c, advice) and (a.run_recommended or ran.is_file()):
            c.measured[rec_key(advice)] = run_recommended(c, advice, a.out)
            c.approx[rec_key(advice)] = "recommended.yaml run as written"
        results.append(judge(c, advice))
        r = results[-1]
        print(f"  {c.key}: {r['recommended']} -> {r['outcome']}", flush=True)
    atomic_write_json(a.out / "results.json", {"results": results})
    text = "## Every cell\n\n" + table(results) + "\n\n## Tally\n\n" + tally(results) + "\n"
    print(text)
    if a.doc:
        write_section(a.doc, text, "advisor-eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
