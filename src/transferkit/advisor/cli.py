"""The ``transferkit score`` and ``transferkit advise`` commands (typer functions).

They are plain functions with typer ``Annotated`` options, registered on the main app in
:mod:`transferkit.cli`::

    from transferkit.advisor.cli import advise_command, score_command
    app.command("score")(score_command)
    app.command("advise")(advise_command)

User errors raise :class:`~transferkit.errors.TransferkitError` subclasses, which the
main entry point prints as one paragraph with exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _score_table(rows: list[dict[str, Any]], metric: str, title: str) -> Table:
    """Rank, model, the chosen metric, the other scores any row has, best layer, params."""
    others = [
        n
        for n in ("logme", "hscore", "gbc", "leep", "nce")
        if n != metric and any(r["scores"].get(n) is not None for r in rows)
    ]
    layers = any("layers" in r for r in rows)
    table = Table(title=title)
    for col in ("#", "model", metric, *others, *(["best layer"] if layers else []), "params"):
        table.add_column(col, overflow="fold", no_wrap=col != "model")
    for r in rows:
        best = r.get("best_layer")
        cells = [str(r["rank"]), r["model"] + (" (control)" if r["control"] else "")]
        cells += [_fmt(r["score"]), *(_fmt(r["scores"].get(n)) for n in others)]
        if layers:
            cells.append("-" if best is None else f"{best} {r['layers'][best]['name']}")
        table.add_row(*cells, f"{r['params']:,}")
    return table


def score_command(
    models: Annotated[
        str,
        typer.Option(
            "--models", "-m", help="comma-separated backbone specs; random:<spec> = random init"
        ),
    ],
    data: Annotated[str, typer.Option("--data", "-d", help="dataset name or path")],
    metric: Annotated[
        str, typer.Option(help="logme | hscore | hscore_shrinkage | gbc | nleep | leep | nce")
    ] = "logme",
    layers: Annotated[bool, typer.Option("--layers", help="also score every layer group")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/score"),
    max_examples: Annotated[int, typer.Option(help="training examples scored, at most")] = 2000,
    seed: Annotated[int, typer.Option(help="split, subset and random-init seed")] = 0,
) -> None:
    """Rank backbones for a dataset by transferability scores, without training any."""
    from transferkit.advisor.candidates import parse_model_list
    from transferkit.advisor.ranking import rank_models, write_scores

    rows = rank_models(
        parse_model_list(models),
        data,
        metric=metric,
        layers=layers,
        max_examples=max_examples,
        seed=seed,
    )
    json_path, png = write_scores(
        rows,
        out,
        data=data,
        metric=metric,
        extra={"max_examples": max_examples, "seed": seed, "layers": layers},
    )
    console.print(_score_table(rows, metric, f"transferability on {data} (higher is better)"))
    notes: dict[str, list[str]] = {}
    for r in rows:
        for note in r["notes"]:
            notes.setdefault(note, []).append(r["model"])
    for note, who in notes.items():
        console.print(f"[dim]{note} ({', '.join(who)})[/dim]", highlight=False, soft_wrap=True)
    console.print(f"wrote {json_path} and {png}", soft_wrap=True)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; anything else is a :class:`ConfigError`."""
    from transferkit.errors import ConfigError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(
            f"invalid seeds {text!r}", where="--seeds", fix="give distinct integers, e.g. 0,1,2"
        )
    return seeds


def _print_advice(a: dict[str, Any], out: Path) -> None:
    t, tx = a["target_info"], a["transferability"]
    lpc = t["labels_per_class"]
    per_class = f", labels/class median {lpc['median']:g}, min {lpc['min']}" if "min" in lpc else ""
    console.print(
        f"target {t['name']!r}: {t['modality']}, {t['num_classes']} classes, "
        f"{t['sizes']['train']} labelled + {t['sizes']['unlabelled']} unlabelled{per_class}",
        highlight=False,
    )
    console.print(
        f"LogME {a['model']}: {tx['pretrained']:.3f} vs random init {tx['random_init']:.3f} "
        f"(sd {tx['random_init_sd']:.3f}) -> gap {tx['gap']:+.3f}",
        highlight=False,
    )
    if a.get("probe"):
        p = a["probe"]
        console.print(
            f"best layer: group {p['best_index']} ({p['best_group']}), val {p['metric']} "
            f"{p['val_metric'][p['best_index']]:.3f}",
            highlight=False,
        )
    if a.get("domain_gap"):
        g = a["domain_gap"]
        console.print(
            f"domain gap: PAD {g['proxy_a_distance']:.2f}, MMD² {g['mmd2']:.4f}", highlight=False
        )
    rec, alt = a["recommended"], a["runner_up"]
    console.print(
        f"[bold green]recommended:[/bold green] {rec['summary']} -> {out / rec['config']}"
    )
    for reason in rec["reasons"]:
        console.print(f"  - {reason}", highlight=False, soft_wrap=True)
    console.print(f"runner-up: {alt['summary']} -> {out / alt['config']} ({alt['reason']})")
    console.print(f"[dim]{a['baselines']}.[/dim]", soft_wrap=True)


def backbone_options(items: list[str]) -> dict[str, Any] | None:
    """``["input_size=16", "backbone_spec=tk:smallcnn"]`` -> a flat options mapping."""
    from transferkit.errors import ConfigError
    from transferkit.experiment.config import apply_overrides

    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(
                f"backbone option {item!r} is not key=value",
                where="--backbone-option",
                fix="write it as key=value, e.g. -O input_size=16",
            )
    opts: dict[str, Any] = {}
    apply_overrides(opts, items)
    nested = [k for k, v in opts.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(
            f"backbone option {nested[0]!r} has a dotted key",
            where="--backbone-option",
            fix="write flat key=value pairs, e.g. -O input_size=16",
        )
    return opts or None


def advise_command(
    model: Annotated[str, typer.Option("--model", "-m", help="backbone spec")],
    target: Annotated[str, typer.Option("--target", "-t", help="target dataset name or path")],
    source: Annotated[
        str | None, typer.Option("--source", help="labelled source dataset name or path")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/advise"),
    label_budget: Annotated[
        int | None, typer.Option(help="labelled target examples per class (rest unlabelled)")
    ] = None,
    max_examples: Annotated[int, typer.Option(help="target examples measured, at most")] = 2000,
    controls: Annotated[int, typer.Option(help="random-init copies scored as controls")] = 3,
    epochs: Annotated[int, typer.Option(help="epochs written into the configs")] = 5,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds written into the configs")] = (
        "0,1,2"
    ),
    seed: Annotated[int, typer.Option(help="split and measurement seed")] = 0,
    backbone_option: Annotated[
        list[str] | None,
        typer.Option(
            "--backbone-option",
            "-O",
            help="backbone option key=value (YAML value), e.g. input_size=16 or "
            "backbone_spec=tk:smallcnn for a file: checkpoint; repeatable",
        ),
    ] = None,
    run: Annotated[
        bool, typer.Option("--run", help="run both configs and check the advice")
    ] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="--run: override key.path=value")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace --run's run dirs")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Measure a model on your data and recommend a transfer strategy, with runnable configs."""
    from transferkit.advisor.advise import advise
    from transferkit.advisor.check import check_advice

    def say(msg: str) -> None:
        if not quiet:
            console.print(f"[dim]{msg}[/dim]", highlight=False)

    a = advise(
        model,
        target,
        source,
        max_examples=max_examples,
        seed=seed,
        label_budget=label_budget,
        out=out,
        n_controls=controls,
        epochs=epochs,
        seeds=parse_seeds(seeds),
        log=say,
        backbone_options=backbone_options(backbone_option or []),
    )
    _print_advice(a, out)
    if not run:
        console.print(f"wrote {out / 'advice.json'}; check it with --run", soft_wrap=True)
        return
    res = check_advice(out, overrides=set_ or [], overwrite=overwrite, quiet=quiet, log=say)
    r, u = res["runs"]["recommended"], res["runs"]["runner_up"]
    pm = res["primary_metric"]
    console.print(
        f"check on {pm}: recommended {r['mean']:.4f} ± {r['sd']:.4f} vs runner-up "
        f"{u['mean']:.4f} ± {u['sd']:.4f} -> winner {res['winner']}; advice "
        + (
            "[bold green]RIGHT[/bold green]"
            if res["advice_right"]
            else "[bold red]WRONG[/bold red]"
        ),
        highlight=False,
    )
    console.print(f"wrote {out / 'advice_check.json'}", soft_wrap=True)
