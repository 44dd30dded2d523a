"""Low-data toolkit study: few-shot heads, SetFit-style training and augmentation at 4 and
16 labels per class, against the honest target-only baselines.

Every run goes through ``transferkit.run`` with packaged MiniLM (all-MiniLM-L6-v2,
``max_length: 64``) on the four sentiment domains and ``bbc_news``; all seeds of one
(target, budget, method) live in one run directory. Methods (``METHODS``):

* ``linear_probe``: logistic regression on frozen mean-pooled features (C chosen on val);
* ``prototype``: nearest class mean (Snell et al. 2017), distance/temperature chosen on val;
* ``prototype_transductive``: prototypes refined on the unlabelled rows the label budget
  left over (soft k-means, labels unused);
* ``finetune``: full fine-tuning (backbone lr x 0.05); its run also trains the baselines
  (TF-IDF + logistic regression, random-init MiniLM);
* ``finetune_aug``: the same with text augmentation (token dropout 0.1, neighbour swaps
  0.1, one deleted span of <= 10% of the tokens);
* ``setfit``: pair-contrastive body training (R = 20 pair iterations, cosine loss), then
  a logistic-regression head (Tunstall et al. 2022).

Resumable: a run whose ``metrics.json`` exists is reused.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/low_data.py --budgets 4 16 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from _runs import run_one
from transferkit.utils.io import atomic_write_json, atomic_write_text

TARGETS = ("sentiment/tweets", "sentiment/movies", "sentiment/amazon", "sentiment/nyt", "bbc_news")
AUG = {"text": {"token_dropout": 0.1, "swap_prob": 0.1, "span_delete": 0.1}}
METHODS: dict[str, dict[str, Any]] = {
    "linear_probe": {"name": "linear_probe", "params": {}},
    "prototype": {"name": "linear_probe", "params": {"head": "prototype"}},
    "prototype_transductive": {
        "name": "linear_probe",
        "params": {"head": "prototype_transductive"},
    },
    "finetune": {"name": "finetune", "params": {"freeze": "none", "backbone_lr_mult": 0.05}},
    "finetune_aug": {
        "name": "finetune",
        "params": {"freeze": "none", "backbone_lr_mult": 0.05, "augment": AUG},
    },
    "setfit": {"name": "setfit", "params": {"pair_iterations": 20, "loss": "cosine"}},
}
TRAIN = {
    "lr": 1e-3,
    "epochs": 6,
    "batch_size": 16,
    "log_every_steps": 4,
    "early_stopping": {"patience": 3},
}
SETFIT_TRAIN = {**TRAIN, "lr": 1e-4, "epochs": 4}


def config(
    target: str, method: str, budget: int, seeds: list[int], max_eval: int
) -> dict[str, Any]:
    baselines = method == "finetune"
    return {
        "name": f"{target.replace('/', '-')}-{method}-b{budget}",
        "data": {"target": target, "label_budget": budget, "max_eval_examples": max_eval},
        "model": {"backbone": "packaged:minilm-l6", "backbone_options": {"max_length": 64}},
        "method": METHODS[method],
        "train": SETFIT_TRAIN if method == "setfit" else TRAIN,
        "baselines": {"enabled": baselines, "random_init_lr": 3e-4},
        "seeds": seeds,
        "report": False,
    }


def rows_of(target: str, method: str, budget: int, m: dict[str, Any]) -> list[dict[str, Any]]:
    out = [
        {
            "target": target,
            "method": method,
            "budget": budget,
            "accuracy": [s["accuracy"] for s in m["target_per_seed"]],
        }
    ]
    for name, b in (m.get("baselines") or {}).items():
        out.append(
            {
                "target": target,
                "method": name,
                "budget": budget,
                "accuracy": [s["accuracy"] for s in b["per_seed"]],
            }
        )
    return out


def table(rows: list[dict[str, Any]], budgets: list[int]) -> str:
    """One row per method, one column per (target, budget): mean ± sample std."""
    cols = sorted(
        {(r["target"], r["budget"]) for r in rows},
        key=lambda c: (TARGETS.index(c[0]) if c[0] in TARGETS else 99, c[1]),
    )
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["target"], r["budget"]): r["accuracy"] for r in rows}
    head = "| method | " + " | ".join(f"{t.split('/')[-1]} {b}/cl" for t, b in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for m in methods:
        vals = []
        for t, b in cols:
            a = cell.get((m, t, b))
            vals.append(
                "" if not a else f"{np.mean(a):.3f} ± {np.std(a, ddof=1) if len(a) > 1 else 0:.3f}"
            )
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", default=list(TARGETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--budgets", nargs="+", type=int, default=[4, 16])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-eval", type=int, default=500)
    p.add_argument("--out", type=Path, default=Path("runs/low_data"))
    p.add_argument("--report-only", action="store_true", help="collect finished runs only")
    p.add_argument("--doc", type=Path, default=None, help="write the table here")
    a = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for budget in a.budgets:
        for target in a.targets:
            for method in a.methods:
                cfg = config(target, method, budget, a.seeds, a.max_eval)
                run_dir = a.out / cfg["name"]
                if a.report_only and not (run_dir / "metrics.json").is_file():
                    continue
                rows += rows_of(target, method, budget, run_one(cfg, run_dir))
    atomic_write_json(a.out / "results.json", {"rows": rows})
    text = table(rows, a.budgets)
    print(text)
    if a.doc is not None:
        atomic_write_text(a.doc, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
