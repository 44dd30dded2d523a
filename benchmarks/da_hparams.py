"""Hyper-parameters chosen without target labels: a DEV-selected grid vs the oracle's pick.

For each sentiment pair (frozen MiniLM features, the ``text`` setup of ``da_suite.py``)
and method, every point of a small grid (learning rate x transfer-loss weight
``trade_off``) is trained for 3 seeds with label-free checkpoint selection. The grid
point with the lowest mean DEV risk at its selected checkpoints is the label-free choice
(DEV is an estimate of the target risk, so it compares configurations as it compares
epochs); the oracle choice is the grid point with the best mean target test accuracy.
Both are compared with the suite's default configuration and its source-only baseline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/da_hparams.py --doc docs/da_benchmark.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _runs import write_section
from da_suite import _ms, make_config, run_one, text_setup
from transferkit.utils.io import atomic_write_json

LRS = (3e-4, 1e-3, 3e-3)
TRADE_OFFS = (0.3, 1.0, 3.0)
#: the pairs where the suite's label-free method pick lost to source-only
PAIRS = ("tweets->movies", "amazon->nyt", "nyt->tweets", "nyt->movies")


def grid_point(lr: float, trade_off: float) -> str:
    return f"lr{lr:g}-t{trade_off:g}"


def run_grid(
    out: Path, suite: Path, pair: str, method: str, seeds: list[int]
) -> list[dict[str, Any]]:
    src, tgt = pair.split("->")
    setup = text_setup(suite)
    rows = []
    for lr, t in itertools.product(LRS, TRADE_OFFS):
        cfg = make_config(setup, src, tgt, method, seeds)
        cfg["name"] = f"{pair}:{method}:{grid_point(lr, t)}"
        cfg["train"] = {**cfg["train"], "lr": lr}
        cfg["method"]["params"] = {**cfg["method"]["params"], "trade_off": t}
        cfg["baselines"] = {"enabled": False}
        cfg["adaptation"] = {"domain_gap": False}
        m = run_one(cfg, out / f"{src}-{tgt}" / method / grid_point(lr, t))
        if m is None:
            continue
        lf = m["label_free_selection"]
        rows.append(
            {
                "pair": pair,
                "method": method,
                "lr": lr,
                "trade_off": t,
                "selected": [p["selected"] for p in lf["per_seed"]],
                "dev": [p["criterion"] for p in lf["per_seed"]],
            }
        )
    return rows


def suite_row(suite: Path, pair: str, method: str) -> dict[str, Any] | None:
    src, tgt = pair.split("->")
    f = suite / "text" / f"{src}-{tgt}" / method / "metrics.json"
    if not f.is_file():
        return None
    m = json.loads(f.read_text(encoding="utf-8"))
    base = m["baselines"].get("source_only", {}).get("per_seed", [])
    return {
        "default": [s["accuracy"] for s in m["target_per_seed"]],
        "source_only": [s["accuracy"] for s in base],
    }


def table(rows: list[dict[str, Any]], suite: Path) -> str:
    lines = [
        "| pair | method | source-only | default config | DEV-chosen grid point | its accuracy "
        "| oracle grid point | its accuracy | DEV choice vs source-only |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (pair, method), rs in itertools.groupby(rows, key=lambda r: (r["pair"], r["method"])):
        rs = list(rs)
        pick = min(rs, key=lambda r: float(np.mean(r["dev"])))
        best = max(rs, key=lambda r: float(np.mean(r["selected"])))
        ref = suite_row(suite, pair, method) or {"default": [], "source_only": []}
        delta = (
            f"{np.mean(pick['selected']) - np.mean(ref['source_only']):+.3f}"
            if ref["source_only"]
            else "—"
        )
        lines.append(
            f"| {pair} | {method} | {_ms(ref['source_only'])} | {_ms(ref['default'])} | "
            f"{grid_point(pick['lr'], pick['trade_off'])} | {_ms(pick['selected'])} | "
            f"{grid_point(best['lr'], best['trade_off'])} | {_ms(best['selected'])} | {delta} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS))
    p.add_argument("--methods", nargs="+", default=["dann"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--suite", type=Path, default=Path("runs/da_suite"))
    p.add_argument("--out", type=Path, default=Path("runs/da_hparams"))
    p.add_argument("--doc", type=Path, default=None)
    a = p.parse_args(argv)
    rows = []
    for pair, method in itertools.product(a.pairs, a.methods):
        rows += run_grid(a.out, a.suite, pair, method, a.seeds)
    atomic_write_json(a.out / "results.json", rows)
    text = table(rows, a.suite)
    print(text)
    if a.doc:
        write_section(a.doc, text, "da-hparams")
    return 0


if __name__ == "__main__":
    sys.exit(main())
