"""The ``transferkit`` command line (typer).

Every command that fails because of its input prints a one-paragraph message and exits
with status 2; ``--debug`` shows the traceback instead. The mapping lives in the command
group itself, so ``main()``, ``python -m transferkit.cli`` and ``typer.testing.CliRunner``
on ``app`` behave alike.
"""

from __future__ import annotations

import json
import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from transferkit.errors import CheckpointError, ConfigError, TransferkitError

console = Console()
err_console = Console(stderr=True)
_STATE = {"debug": False}


def print_error(exc: TransferkitError) -> None:
    """The one-paragraph message of a user error, on stderr."""
    err_console.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False, soft_wrap=True)


class _UserErrorsExit2(TyperGroup):
    """A command group that turns a :class:`TransferkitError` into its message + status 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TransferkitError as exc:
            if _STATE["debug"]:
                raise
            print_error(exc)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="transferkit",
    cls=_UserErrorsExit2,
    help="Transfer learning that tells you honestly whether it helped.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="run directory")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a config key: key.path=value")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace an existing run dir")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False,
) -> None:
    _STATE["debug"] = debug


def _say(msg: str) -> None:
    console.print(f"[dim]{msg}[/dim]")


VERDICT_STYLE = {"positive": "bold green", "negative": "bold red", "inconclusive": "bold yellow"}


def print_verdict(metrics: dict[str, Any], run_dir: Path) -> None:
    """The verdict line printed at the end of every run (by the main process only, so a
    run launched with torchrun or accelerate prints it once, not once per process)."""
    from transferkit.engine.accel import is_main_process

    if not is_main_process():
        return
    tg = metrics.get("transfer_gain")
    pm = metrics.get("primary_metric", "metric")
    score = metrics.get("target", {}).get(pm)
    head = f"{metrics.get('method')} on {metrics.get('dataset', {}).get('name')}: {pm} "
    head += f"{score:.4f}" if isinstance(score, float) else "n/a"
    if tg is None:
        console.print(head + " (no baseline: verdict disabled)")
    else:
        lo, hi = tg["ci95"]
        style = VERDICT_STYLE.get(tg["verdict"], "bold")
        console.print(
            f"{head} | vs {tg['baseline']}: delta {tg['delta']:+.4f} "
            f"[{lo:+.4f}, {hi:+.4f}] -> [{style}]{tg['verdict'].upper()}[/{style}]"
        )
    report = run_dir / "report.html"
    console.print(f"run directory: {run_dir}" + (f" | report: {report}" if report.exists() else ""))


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="experiment YAML")],
    out: OutOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run an experiment from a YAML config and write its run directory."""
    from transferkit.experiment import run as run_experiment

    res = run_experiment(
        config, out=out, overrides=set_ or [], overwrite=overwrite, quiet=quiet, log=_say
    )
    print_verdict(res.metrics, res.run_dir)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="experiment YAML")],
    set_: SetOpt = None,
    data: Annotated[
        bool, typer.Option("--data", help="also load the data and try the backbone on it")
    ] = False,
) -> None:
    """Check a config without training: keys, types, method parameters, backbone specs;
    with --data also load the datasets (first seed) and pass two examples through the
    backbone (random weights), so data and model problems show up before a long run."""
    from transferkit.experiment.config import load_config
    from transferkit.methods import METHODS

    cfg = load_config(config, set_ or [])
    family = METHODS.get(cfg.method.name).family
    console.print(
        f"config OK: method {cfg.method.name} ({family}), backbone {cfg.model.backbone}, "
        f"target {cfg.data.target}, seeds {cfg.seeds}",
        highlight=False,
        soft_wrap=True,
    )
    if data:
        from transferkit.experiment.validate import check_data

        for line in check_data(cfg):
            console.print(line, highlight=False, soft_wrap=True)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/demo"),
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the embedded default experiment: MiniLM on tweets, linear probe vs fine-tuning."""
    from transferkit.experiment.demo import run_demo

    results, comparison = run_demo(
        out, overrides=set_ or [], overwrite=overwrite, quiet=quiet, log=_say
    )
    console.rule("verdicts")
    for r in results:
        print_verdict(r.metrics, r.run_dir)
    if comparison is not None:
        console.print(f"comparison report: {comparison}")


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="run directory to continue")],
    quiet: QuietOpt = False,
) -> None:
    """Continue an interrupted run; finished trainings are reused, the rest resume exactly."""
    from transferkit.experiment import resume as resume_run

    res = resume_run(run_dir, quiet=quiet, log=_say)
    print_verdict(res.metrics, res.run_dir)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="one run dir, or several to compare")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="comparison HTML")] = None,
) -> None:
    """(Re)write a run's report.html, or compare several runs side by side."""
    from transferkit.report import compare_runs, write_report

    for d in run_dirs:
        _check_metrics(d)
    if len(run_dirs) == 1 and out is None:
        console.print(f"report: {write_report(run_dirs[0])}")
    else:
        console.print(f"comparison: {compare_runs(run_dirs, out or Path('comparison.html'))}")


def _check_metrics(run_dir: Path) -> None:
    """A finished run directory holds a readable ``metrics.json`` object."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} has no metrics.json",
            where=str(run_dir),
            fix="pass a finished run directory (an interrupted one: transferkit resume DIR)",
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"metrics.json is not valid JSON ({exc})",
            where=str(path),
            fix="rerun the experiment, or restore the file from a copy",
        ) from None
    if not isinstance(doc, dict) or "target" not in doc:
        raise CheckpointError(
            "metrics.json is not a transferkit metrics file (no 'target' results)",
            where=str(path),
            fix="pass the directory written by `transferkit run --out`",
        )


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="onnx | torchscript | safetensors")
    ] = "onnx",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output file")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a run's final model (the student of a distillation run), checked vs PyTorch."""
    from transferkit.experiment.export_run import export_run

    rec = export_run(run_dir, format, out, overwrite=overwrite)
    console.print(f"exported {rec['format']}: {rec['path']} ({rec['size_bytes']:,} bytes)")
    if rec.get("max_abs_diff") is not None:
        console.print(
            f"checked against PyTorch on 2 test examples: max |difference| "
            f"{rec['max_abs_diff']:.2e} (tolerance 1e-4)"
        )


@app.command()
def probe(
    model: Annotated[str, typer.Option("--model", "-m", help="backbone spec")],
    data: Annotated[str, typer.Option("--data", "-d", help="dataset name or path")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/probe"),
    head: Annotated[str, typer.Option(help="logreg | ridge | linear_svm | mlp | knn")] = "logreg",
    label_budget: Annotated[int | None, typer.Option(help="labels per class")] = None,
    max_examples: Annotated[int, typer.Option(help="subsample the dataset")] = 2000,
    seed: Annotated[int, typer.Option(help="split seed")] = 0,
) -> None:
    """Probe every layer group of a backbone: which depth transfers best to this data?"""
    from transferkit.diagnostics.probing import run_probe
    from transferkit.methods.feature_heads import FeatureHeadParams

    heads = typing.get_args(FeatureHeadParams.model_fields["head"].annotation)
    if heads and head not in heads:
        raise ConfigError(
            f"unknown probe head {head!r}", where="--head", fix=f"use one of: {', '.join(heads)}"
        )

    res = run_probe(
        model,
        data,
        seed=seed,
        label_budget=label_budget,
        max_examples=max_examples,
        out_dir=out,
        head=head,
    )  # type: ignore[arg-type]
    table = Table(title=f"layer probe: {model} on {data} ({res.head}, val {res.metric})")
    for col in ("#", "group", "dim", f"val {res.metric}", "fit s"):
        table.add_column(col)
    for i, g in enumerate(res.groups):
        mark = " <- recommended" if i == res.best_index else ""
        table.add_row(
            str(i),
            g + mark,
            str(res.dims[i]),
            f"{res.val_metric[i]:.4f}",
            f"{res.fit_seconds[i]:.2f}",
        )
    console.print(table)
    console.print(
        f"recommended transfer layer: group {res.best_index} ({res.groups[res.best_index]}); "
        f"fine-tune with method.params.freeze={res.freeze_to} to keep the layers below it. "
        f"Wrote {out / 'probe.json'} and {out / 'probe.png'}.",
        soft_wrap=True,
    )


def _table(title: str, rows: list[dict[str, Any]], main: list[str]) -> None:
    """A compact table of the ``main`` columns, then every other field per row, unwrapped."""
    if not rows:
        console.print(f"{title}: none")
        return
    table = Table(title=title)
    for col in main:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in main))
    console.print(table)
    for row in rows:
        rest = {k: v for k, v in row.items() if k not in main and v not in (None, "", "-")}
        if rest:
            console.print(f"[bold]{row[main[0]]}[/bold]", highlight=False)
            for k, v in rest.items():
                console.print(f"  {k}: {v}", highlight=False, soft_wrap=True)


@app.command()
def methods() -> None:
    """List every registered method with its family, paper and parameters."""
    from transferkit.methods import METHODS

    rows = []
    for name, cls in METHODS.items():
        params = "; ".join(f"{k}: {v}" for k, v in cls.describe_params().items())
        rows.append({"name": name, "family": cls.family, "paper": cls.paper, "params": params})
    _table("methods", rows, ["name", "family"])


@app.command()
def models() -> None:
    """List the packaged pretrained models and the backbone spec families."""
    from transferkit.backbones import models_table

    _table("backbones", models_table(), ["name", "family", "params", "modality", "num_features"])


@app.command()
def datasets() -> None:
    """List the built-in datasets with size, classes, licence and citation."""
    from transferkit.data import list_datasets

    _table("datasets", list_datasets(), ["name", "modality", "task", "size", "classes"])


def _register_subcommands() -> None:
    from transferkit.advisor.cli import advise_command, score_command
    from transferkit.sweep.cli import sweep_command

    app.command("score")(score_command)
    app.command("advise")(advise_command)
    app.command("sweep")(sweep_command)


_register_subcommands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors -> message + exit status 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, standalone_mode=False)
    except TransferkitError as exc:  # raised outside a command (the group maps the rest)
        if _STATE["debug"] or "--debug" in args:
            raise
        print_error(exc)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click (vendored by typer) usage errors
        code = getattr(exc, "exit_code", None)
        if not callable(getattr(exc, "show", None)) or code is None:
            raise
        exc.show()
        sys.exit(2 if code == 1 else code)
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        if code == 130:
            err_console.print("aborted")
        sys.exit(code)


if __name__ == "__main__":
    main()
