"""Check an advice by running it: recommended vs runner-up on the primary metric.

``check_advice(dir)`` runs ``dir/recommended.yaml`` and ``dir/runner_up.yaml`` with
:func:`transferkit.run` (run directories ``dir/check/recommended`` and
``dir/check/runner_up``) and writes ``dir/advice_check.json``. The advice counts as right
when the recommended strategy's mean primary metric is at least the runner-up's, or
behind it by no more than one standard deviation over seeds (the larger of the two runs'
sample sds): a difference that small is within seed noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.diagnostics.metrics import higher_is_better
from transferkit.errors import ConfigError
from transferkit.utils.io import atomic_write_json

ROLES = ("recommended", "runner_up")


def _summary(metrics: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    pm = metrics["primary_metric"]
    per_seed = [float(r[pm]) for r in metrics["target_per_seed"]]
    tg = metrics.get("transfer_gain") or {}
    return {
        "run_dir": str(run_dir),
        "method": metrics["method"],
        "mean": float(metrics["target"][pm]),
        "per_seed": per_seed,
        "sd": float(np.std(per_seed, ddof=1)) if len(per_seed) >= 2 else 0.0,
        "best_baseline": metrics.get("best_baseline"),
        "verdict": tg.get("verdict"),
        "delta_vs_baseline": tg.get("delta"),
    }


def compare(rec: dict[str, Any], alt: dict[str, Any], metric: str) -> dict[str, Any]:
    """Which run won on ``metric`` and whether the advice holds (see the module docstring).

    ``rec`` / ``alt`` are :func:`_summary` records (``mean``, ``sd``, ...).
    """
    sign = 1.0 if higher_is_better(metric) else -1.0
    margin = sign * (rec["mean"] - alt["mean"])  # > 0: the recommended one is better
    tolerance = max(rec["sd"], alt["sd"])
    return {
        "primary_metric": metric,
        "higher_is_better": sign > 0,
        "winner": "recommended" if margin >= 0 else "runner_up",
        "margin": margin,
        "tolerance": tolerance,
        "advice_right": bool(margin >= 0 or -margin <= tolerance),
        "rule": "right if recommended >= runner-up, or behind by <= max(sd over seeds)",
    }


def check_advice(
    advice_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run both advised configs and write ``advice_dir/advice_check.json``; return it.

    ``overrides`` (``key.path=value``, as ``transferkit run --set``) apply to both runs,
    e.g. ``["train.epochs=20"]``; they are recorded in the result.
    """
    from transferkit.experiment.runner import run

    d = Path(advice_dir)
    runs: dict[str, dict[str, Any]] = {}
    metric = None
    for role in ROLES:
        cfg = d / f"{role}.yaml"
        if not cfg.is_file():
            raise ConfigError(
                f"no {role}.yaml in the advice directory",
                where=str(d),
                fix="run `transferkit advise` with this --out first",
            )
        res = run(
            cfg,
            out=d / "check" / role,
            overrides=list(overrides),
            overwrite=overwrite,
            quiet=quiet,
            log=log,
        )
        metric = res.metrics["primary_metric"]
        runs[role] = _summary(res.metrics, res.run_dir)
    assert metric is not None
    out = {
        **compare(runs["recommended"], runs["runner_up"], metric),
        "overrides": list(overrides),
        "runs": runs,
    }
    atomic_write_json(d / "advice_check.json", out)
    return out
