"""The embedded default experiment behind ``transferkit demo`` / ``make demo``.

One config (``demo.yaml``) is run once per method (linear probe, fine-tuning); both runs
share the target-only baselines (trained once), then a comparison report is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from transferkit.experiment.runner import Result, run

DEMO_METHODS: dict[str, dict[str, Any]] = {
    "linear_probe": {},
    "finetune": {"freeze": "none", "backbone_lr_mult": 0.05},
}


def demo_config() -> dict[str, Any]:
    """The embedded demo config as a mapping."""
    text = resources.files("transferkit.experiment").joinpath("demo.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def run_demo(
    out: str | Path = "runs/demo",
    *,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[list[Result], Path | None]:
    """Run the demo: one run directory per method under ``out``, plus ``comparison.html``."""
    from transferkit.experiment.rundir import prepare_run_dir

    root = prepare_run_dir(out, overwrite=overwrite)
    results = []
    for name, params in DEMO_METHODS.items():
        doc = demo_config()
        doc["name"] = f"demo-{name}"
        doc["method"] = {"name": name, "params": params}
        if log:
            log(f"== {name}")
        results.append(run(doc, out=root / name, overrides=overrides, quiet=quiet, log=log))
    comparison = None
    if results[0].config.report:
        from transferkit.report import compare_runs

        comparison = compare_runs([r.run_dir for r in results], root / "comparison.html")
    return results, comparison
