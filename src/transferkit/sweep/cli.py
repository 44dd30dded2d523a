"""``transferkit sweep``: the typer command (registered by ``transferkit.cli``).

    transferkit sweep exp.yaml --space space.yaml --trials 20 [--storage sqlite:///s.db]

Each trial is a normal run directory ``OUT/trial-NNNN``; ``OUT/sweep.json`` holds the
best parameters and every trial. Running the same command again continues the sweep
(finished trials are kept); several machines given one ``--storage`` share the study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from transferkit.sweep.study import SweepResult, run_sweep

console = Console()


def _table(result: SweepResult) -> Table:
    summary = result.summary
    table = Table(title=f"study {summary['study_name']}: {summary['objective']['description']}")
    for col in ("trial", "state", "value", "parameters"):
        table.add_column(col, justify="right" if col in ("trial", "value") else "left")
    best = (result.best or {}).get("number")
    for t in summary["trials"]:
        value = "" if t["value"] is None else f"{t['value']:.4g}"
        style = "bold green" if t["number"] == best else None
        table.add_row(str(t["number"]), t["state"], value, ", ".join(t["overrides"]), style=style)
    return table


def sweep_command(
    config: Annotated[Path, typer.Argument(help="experiment YAML")],
    space: Annotated[Path, typer.Option("--space", help="search-space YAML (dotted keys)")],
    trials: Annotated[
        int, typer.Option("--trials", min=1, help="finished trials the study should hold")
    ] = 20,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Optuna RDB URL (default sqlite:///OUT/study.db)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="sweep folder (default runs/<name>-sweep)")
    ] = None,
    study_name: Annotated[
        str | None, typer.Option("--study-name", help="default <config name>-sweep")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="fixed override for every trial: key.path=value"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the TPE sampler")] = 0,
    prune: Annotated[
        bool, typer.Option("--prune/--no-prune", help="median pruning on the val curve")
    ] = True,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="start no new trial after SECONDS")
    ] = None,
    baselines: Annotated[
        bool, typer.Option("--baselines/--no-baselines", help="train baselines in every trial")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Search hyper-parameters with Optuna; every trial is a normal run directory."""
    from transferkit.experiment.config import load_config

    overrides = set_ or []
    folder = out or Path("runs") / f"{load_config(config, overrides).name}-sweep"
    result = run_sweep(
        config,
        space,
        trials=trials,
        out=folder,
        storage=storage,
        study_name=study_name,
        overrides=overrides,
        seed=seed,
        prune=prune,
        timeout_s=timeout,
        baselines=baselines,
        quiet=quiet,
        log=lambda msg: console.print(f"[dim]{msg}[/dim]", soft_wrap=True),
    )
    console.print(_table(result))
    best = result.best
    if best is None:
        console.print("no trial completed: see the failed trials' run directories")
    else:
        sets = " ".join(f"--set {o}" for o in [*overrides, *best["overrides"]])
        console.print(
            f"best: trial {best['number']}, value {best['value']:.6g} ({best['run_dir']})",
            soft_wrap=True,
        )
        console.print(f"rerun it with baselines: transferkit run {config} {sets}", soft_wrap=True)
    console.print(f"summary: {folder / 'sweep.json'}", soft_wrap=True)
