"""Domain-adaptation benchmark suite, every method through ``transferkit.run``.

Setups (``--setups``):

* ``image``: ``digits -> mnist5k`` and ``mnist5k -> digits``; both resized to 16x16 by
  ``tk:smallcnn`` (``input_size: 16``), trained from random initialisation;
* ``text``: the 12 ordered pairs of the four sentiment domains (tweets, movies, amazon,
  nyt) on *frozen* packaged MiniLM features (all-MiniLM-L6-v2, mean pooled, 384-d),
  extracted once per domain into ``OUT/features/<domain>.npz``; the adapted network is a
  ``tk:mlp`` (one hidden layer of 256) on those features;
* ``text-ft``: MiniLM itself fine-tuned (a reduced grid: see ``TEXT_FT``).

For each pair and method, one run directory holds all seeds and reports: target test
accuracy of the checkpoint chosen by the label-free criterion (DEV by default), the
oracle (best target test accuracy over epochs), source-only and target-only. The
"label-free best" method of a pair is the gradient-trained method with the lowest mean DEV
risk at its selected checkpoint (DEV estimates the target risk in the same units for every
model, so it compares methods too). Closed-form shallow baselines (CORAL, subspace
alignment) are reported for context, outside that choice.

Resumable: a run whose ``metrics.json`` exists is skipped. Results go to
``OUT/results.json``; ``--doc PATH`` writes the markdown tables.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/da_suite.py --setups image text \
        --seeds 0 1 2 --doc docs/da_benchmark.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import _runs
from transferkit.methods import METHODS
from transferkit.utils.io import atomic_write_json, atomic_write_text

#: method label -> (registered name, extra params)
METHOD_GRID: dict[str, tuple[str, dict[str, Any]]] = {
    "dan": ("dan", {}),
    "jan": ("jan", {}),
    "deep_coral": ("deep_coral", {}),
    "mcc": ("mcc", {}),
    "dann": ("dann", {}),
    "cdan": ("cdan", {}),
    "mdd": ("mdd", {}),
    "dann+mcc": ("dann", {"mcc_weight": 1.0}),
    "pseudo_label": ("pseudo_label", {}),
    "fixmatch": ("fixmatch", {}),
    "adda": ("adda", {}),
    "drcn": ("drcn", {}),
    "dsn": ("dsn", {}),
    "coral": ("coral", {}),
    "subspace_alignment": ("subspace_alignment", {}),
}
DOMAINS = ("tweets", "movies", "amazon", "nyt")
TEXT_FT = {
    "pairs": [("movies", "tweets"), ("amazon", "nyt")],
    "methods": ["dann", "mcc", "deep_coral"],
    "max_examples": 600,
}


def image_setup() -> dict[str, Any]:
    cnn = {"in_chans": 1, "input_size": 16, "width": 32, "depth": 3}
    return {
        "pairs": [("digits", "mnist5k"), ("mnist5k", "digits")],
        "data": lambda s, t: {"source": s, "target": t, "max_eval_examples": 500},
        "model": {"backbone": "tk:smallcnn", "pretrained": False, "backbone_options": cnn},
        "train": {
            "lr": 1e-3,
            "epochs": 12,
            "batch_size": 32,
            "log_every_steps": 20,
            "early_stopping": {"patience": 12},
        },
        "lr_mult": 1.0,
    }


def text_setup(out: Path) -> dict[str, Any]:
    files = {d: feature_file(out, d) for d in DOMAINS}
    return {
        "pairs": list(itertools.permutations(DOMAINS, 2)),
        "data": lambda s, t: {
            "source": str(files[s]),
            "target": str(files[t]),
            "max_eval_examples": 500,
        },
        "model": {
            "backbone": "tk:mlp",
            "pretrained": False,
            "backbone_options": {"in_features": 384, "hidden": [256]},
        },
        "train": {
            "lr": 1e-3,
            "epochs": 8,
            "batch_size": 32,
            "log_every_steps": 20,
            "early_stopping": {"patience": 8},
        },
        "lr_mult": 1.0,
    }


def text_ft_setup() -> dict[str, Any]:
    return {
        "pairs": TEXT_FT["pairs"],
        "data": lambda s, t: {
            "source": f"sentiment/{s}",
            "target": f"sentiment/{t}",
            "max_examples": TEXT_FT["max_examples"],
            "max_eval_examples": 200,
        },
        "model": {"backbone": "packaged:minilm-l6", "backbone_options": {"max_length": 64}},
        "train": {
            "lr": 1e-3,
            "epochs": 2,
            "batch_size": 16,
            "log_every_steps": 10,
            "early_stopping": {"patience": 2},
        },
        "lr_mult": 0.05,
        "methods": TEXT_FT["methods"],
    }


def feature_file(out: Path, domain: str) -> Path:
    """Frozen MiniLM features of every example of a sentiment domain, as an ``.npz``."""
    path = out / "features" / f"{domain}.npz"
    if path.is_file():
        return path
    from transferkit.backbones import create_backbone
    from transferkit.data import load_dataset
    from transferkit.engine.extract import extract_features
    from transferkit.utils.io import atomic_path

    sp = load_dataset(f"sentiment/{domain}", seed=0)
    x = list(sp.train.x) + list(sp.val.x) + list(sp.test.x)
    y = np.concatenate([sp.train.y, sp.val.y, sp.test.y])
    t0 = time.perf_counter()
    feats = extract_features(create_backbone("packaged:minilm-l6"), x, batch_size=128)
    print(f"  features {domain}: {len(x)} texts, {time.perf_counter() - t0:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x=np.asarray(feats, dtype=np.float32), y=y)
    return path


SHALLOW = ("linear_probe", "coral", "subspace_alignment")


def shallow_rows(out: Path, seeds: list[int], pairs: list[str] | None) -> list[dict[str, Any]]:
    """Closed-form methods on the frozen MiniLM features, fitted directly (no training).

    ``linear_probe`` fitted on the source is the shallow source-only reference; ``coral``
    and ``subspace_alignment`` are the registered methods' own ``fit_features`` (C chosen
    on source validation), given the unlabelled target training features.
    """
    import torch

    from transferkit.backbones import create_backbone
    from transferkit.data import load_dataset
    from transferkit.experiment.subsets import cap
    from transferkit.methods.heads import make_head

    rows = []
    files = {d: feature_file(out, d) for d in DOMAINS}
    for src, tgt in itertools.permutations(DOMAINS, 2):
        if pairs and f"{src}->{tgt}" not in pairs:
            continue
        acc: dict[str, list[float]] = {m: [] for m in SHALLOW}
        for seed in seeds:
            s = load_dataset(str(files[src]), seed=seed)
            t = load_dataset(str(files[tgt]), seed=seed)
            test = cap(t.test, 500, seed)
            for name in SHALLOW:
                cls = METHODS.get(name)
                bb = create_backbone("tk:mlp", in_features=384, hidden=[384])
                m = cls(bb, make_head(384, 2), "classification", cls.Params())
                kw = {} if name == "linear_probe" else {"f_target": t.train.x}
                m.fit_features(s.train.x, s.train.y, s.val.x, s.val.y, **kw)
                with torch.no_grad():
                    pred = m.head(torch.as_tensor(test.x)).argmax(-1).numpy()
                acc[name].append(float((pred == test.y).mean()))
        base = acc["linear_probe"]
        for name in SHALLOW:
            rows.append(
                {
                    "setup": "text-shallow",
                    "pair": f"{src}->{tgt}",
                    "method": name,
                    "selected": acc[name],
                    "oracle": [],
                    "criterion": [],
                    "source_only": base,
                    "target_only": [],
                    "verdict": None,
                    "seconds": None,
                }
            )
        print(
            f"  shallow {src}->{tgt}: "
            + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in acc.items()),
            flush=True,
        )
    return rows


def make_config(
    setup: dict[str, Any], src: str, tgt: str, label: str, seeds: list[int]
) -> dict[str, Any]:
    name, extra = METHOD_GRID[label]
    return {
        "name": f"{src}->{tgt}:{label}",
        "data": setup["data"](src, tgt),
        "model": setup["model"],
        "method": {
            "name": name,
            "params": {"backbone_lr_mult": setup["lr_mult"], **extra}
            if not METHODS.get(name).closed_form
            else extra,
        },
        "train": setup["train"],
        "seeds": seeds,
        "report": False,
    }


def run_one(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """:func:`_runs.run_one`, but a failure is printed and gives None (the suite goes on)."""
    try:
        return _runs.run_one(cfg, run_dir)
    except Exception as exc:
        print(f"  {cfg['name']}: FAILED {type(exc).__name__}: {exc}", flush=True)
        return None


def row(setup: str, src: str, tgt: str, label: str, m: dict[str, Any]) -> dict[str, Any]:
    lf = m.get("label_free_selection") or {}
    base = m["baselines"]
    per = lambda d: [s["accuracy"] for s in d]  # noqa: E731
    return {
        "setup": setup,
        "pair": f"{src}->{tgt}",
        "method": label,
        "selected": per(m["target_per_seed"]),
        "oracle": [p["oracle"] for p in lf.get("per_seed", [])],
        "criterion": [p.get("criterion") for p in lf.get("per_seed", [])],
        "collapsed": [bool(p.get("collapsed")) for p in lf.get("per_seed", [])],
        "source_only": per(base["source_only"]["per_seed"]) if "source_only" in base else [],
        "target_only": per(base["target_only"]["per_seed"]) if "target_only" in base else [],
        "verdict": (m.get("transfer_gain") or {}).get("verdict"),
        "seconds": m["timing"]["stages_s"].get("target"),
    }


def _ms(v: list[float]) -> str:
    if not v:
        return "—"
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def pair_table(rows: list[dict[str, Any]]) -> str:
    """One row per method: selected (label-free), oracle, gain vs source-only, verdict."""
    src = next((r["source_only"] for r in rows if r["source_only"]), [])
    tgt = next((r["target_only"] for r in rows if r["target_only"]), [])
    lines = [
        "| method | label-free selected | oracle | vs source-only | verdict |",
        "|---|---|---|---|---|",
        f"| source-only | {_ms(src)} | | | |",
        f"| target-only (labels) | {_ms(tgt)} | | | |",
    ]
    best = label_free_best(rows)
    for r in rows:
        d = np.mean(r["selected"]) - np.mean(src) if src else float("nan")
        mark = " **(label-free pick)**" if best and r["method"] == best["method"] else ""
        lines.append(
            f"| {r['method']}{mark} | {_ms(r['selected'])} | {_ms(r['oracle'])} | "
            f"{d:+.3f} | {r['verdict']} |"
        )
    return "\n".join(lines)


def label_free_best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The gradient-trained method with the lowest mean DEV risk at its selected epoch.

    A method whose selected checkpoint collapsed on any seed (target predictions nearly
    all one class; runs made with ``adaptation.collapse_guard``) is passed over while
    another method did not collapse.
    """
    scored = [r for r in rows if r["criterion"] and all(c is not None for c in r["criterion"])]
    healthy = [r for r in scored if not any(r.get("collapsed") or [])]
    pool = healthy or scored
    return min(pool, key=lambda r: float(np.mean(r["criterion"]))) if pool else None


def summary(rows: list[dict[str, Any]]) -> str:
    """Per pair: best method by oracle-free choice vs source-only, and whether any beat it."""
    lines = [
        "| pair | source-only | label-free pick | its accuracy | best method (hindsight) "
        "| any beats source-only? | pick beats source-only? |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair in dict.fromkeys(r["pair"] for r in rows):
        rs = [r for r in rows if r["pair"] == pair]
        src = np.mean(next((r["source_only"] for r in rs if r["source_only"]), [np.nan]))
        pick = label_free_best(rs)
        top = max(rs, key=lambda r: np.mean(r["selected"]))
        any_beats = any(np.mean(r["selected"]) > src for r in rs)
        pick_acc = np.mean(pick["selected"]) if pick else float("nan")
        lines.append(
            f"| {pair} | {src:.3f} | {pick['method'] if pick else '—'} | {pick_acc:.3f}"
            f" | {top['method']} ({np.mean(top['selected']):.3f}) | "
            f"{'yes' if any_beats else 'no'} | {'yes' if pick_acc > src else 'no'} |"
        )
    return "\n".join(lines)


def merged_results(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` plus the rows of an earlier ``results.json`` this invocation did not redo
    (keyed by setup, pair and method), so a partial run never drops finished results."""
    key = lambda r: (r["setup"], r["pair"], r["method"])  # noqa: E731
    mine = {key(r) for r in rows}
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    return [r for r in old if key(r) not in mine] + rows


def guard_table(out: Path) -> str:
    """Each run's own epochs re-selected with and without the collapse guard.

    Training does not depend on the guard (patience >= epochs here), so the two picks of a
    seed come from the same trajectory: ``argmin val_dev_risk`` (no guard) vs ``argmin
    val_selection`` (guard), each scored by the target test accuracy logged at that epoch.
    """
    lines = [
        "| setup | pair | method | DEV, no guard | DEV + collapse guard | oracle |",
        "|---|---|---|---|---|---|",
    ]
    for log in sorted(out.glob("*/*/*/log.jsonl")):
        setup, pair, method = log.parts[-4:-1]
        runs: dict[str, list[dict[str, Any]]] = {}
        for line in log.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("type") == "epoch" and "val_selection" in r:
                runs.setdefault(r["run"], []).append(r)
        if not runs:
            continue
        acc = "val_oracle_test_accuracy"
        plain = [min(rs, key=lambda r: r["val_dev_risk"])[acc] for rs in runs.values()]
        guard = [min(rs, key=lambda r: r["val_selection"])[acc] for rs in runs.values()]
        oracle = [max(r[acc] for r in rs) for rs in runs.values()]
        lines.append(
            f"| {setup} | {pair.replace('-', '->')} | {method} | {_ms(plain)} | {_ms(guard)} "
            f"| {_ms(oracle)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--setups",
        nargs="+",
        default=["image", "text"],
        choices=["image", "text", "text-ft", "text-shallow"],
    )
    p.add_argument("--methods", nargs="+", default=list(METHOD_GRID))
    p.add_argument("--pairs", nargs="+", default=None, help="only these SRC->TGT pairs")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/da_suite"))
    p.add_argument("--doc", type=Path, default=None)
    p.add_argument(
        "--report-only", action="store_true", help="collect finished runs only; train nothing"
    )
    p.add_argument(
        "--guard-report",
        type=Path,
        default=None,
        help="print the with/without collapse-guard table of the runs under this folder",
    )
    a = p.parse_args(argv)
    if a.guard_report:
        print(guard_table(a.guard_report))
        return 0
    rows: list[dict[str, Any]] = []
    if "text-shallow" in a.setups:
        cached = a.out / "text-shallow.json"
        if not cached.is_file() and not a.report_only:
            atomic_write_json(cached, shallow_rows(a.out, a.seeds, a.pairs))
        if cached.is_file():
            rows += json.loads(cached.read_text(encoding="utf-8"))
    for name in [n for n in a.setups if n != "text-shallow"]:
        setup = {"image": image_setup, "text": lambda: text_setup(a.out), "text-ft": text_ft_setup}[
            name
        ]()
        methods = [m for m in setup.get("methods", a.methods) if m in a.methods]
        for (src, tgt), label in itertools.product(setup["pairs"], methods):
            if a.pairs and f"{src}->{tgt}" not in a.pairs:
                continue
            if METHOD_GRID[label][0] not in METHODS:
                print(f"  {label}: not registered in this version, skipped", flush=True)
                continue
            cfg = make_config(setup, src, tgt, label, a.seeds)
            run_dir = a.out / name / f"{src}-{tgt}" / label
            if a.report_only and not (run_dir / "metrics.json").is_file():
                continue
            m = run_one(cfg, run_dir)
            if m is not None:
                rows.append(row(name, src, tgt, label, m))
    atomic_write_json(a.out / "results.json", merged_results(a.out / "results.json", rows))
    parts = []
    for name in a.setups:
        rs = [r for r in rows if r["setup"] == name]
        if not rs:
            continue
        parts.append(f"## {name}: summary\n\n{summary(rs)}")
        for pair in dict.fromkeys(r["pair"] for r in rs):
            parts.append(
                f"### {name}: {pair}\n\n{pair_table([r for r in rs if r['pair'] == pair])}"
            )
    text = "\n\n".join(parts) + "\n"
    print(text)
    if a.doc:
        atomic_write_text(a.out / "tables.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
