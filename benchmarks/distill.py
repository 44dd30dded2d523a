"""Distillation benchmark: does a distilled student beat the same student trained on labels?

Real setups (``SETUPS``), each run through ``transferkit.run`` once per seed:

* ``text``: teacher ``packaged:minilm-l6`` (all-MiniLM-L6-v2, 22.6M parameters,
  ``max_length: 64``) fine-tuned on ``sentiment/tweets``; student a BERT-Tiny-shaped encoder
  (Turc et al. 2019, https://arxiv.org/abs/1908.08962: 2 layers, hidden 128, 2 heads,
  FFN 512, MiniLM's WordPiece tokenizer; 4.4M parameters) randomly initialised from
  ``hf:OUT/tiny-bert`` (a directory holding only its ``config.json`` and the tokenizer, so
  ``model.pretrained: false`` gives a fresh initialisation per seed).
* ``image`` / ``image-tiny``: teacher ``tk:smallcnn`` (width 64, depth 4, 1.56M
  parameters) trained on ``mnist5k``; students ``tk:smallcnn`` width 8, depth 3 (6.3k
  parameters) / width 8, depth 2 (1.4k parameters).

Per teacher and seed ``s`` there is one teacher run (``finetune``, plus the classical
baseline: TF-IDF / pixel logistic regression) and one distillation run per loss that takes
it as ``teacher.run``: ``kd`` (Hinton et al. 2015, ``CE + T^2 KL``, T = 4) and ``dkd``
(Zhao et al. 2022, ``CE + T^2 (TCKD + 8 NCKD)``, T = 4). All use ``seeds: [s]`` and the same
``data`` section, so the teacher saw exactly the training split of seed ``s`` (no test
leakage) and every student of a seed distils from the same teacher. The student trained on
labels alone (the comparator) is trained inside the first distillation run of a seed and
reused by the next (the runner memoises it within a process). Deployment numbers (params,
safetensors size, CPU latency at batch 1, throughput at batch 64, 1 thread) come from each
distillation run's ``metrics["deployment"]`` (median over runs); :func:`remeasure` then
times the seed's teacher and student again, interleaved, which resists a shared machine's
changing load.

With 2 classes DKD's non-target term (NCKD) is identically 0 (a one-class distribution)
and TCKD equals the binary KD term, so ``dkd`` = ``alpha * kd`` there: on the text task it
is only a check of that identity.

Resumable: a run whose ``metrics.json`` exists is reused if its config is unchanged (an
error otherwise). Results go to ``OUT/results.json`` and ``OUT/tables.md``. Run from the
repository root (the student's ``hf:`` path is relative):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/distill.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import transferkit
from transferkit.errors import ConfigError
from transferkit.experiment import load_config
from transferkit.utils.io import atomic_write_json, atomic_write_text

LOSSES = ("kd", "dkd")
SETUPS: dict[str, tuple[int, int, list[str]] | None] = {  # image: student width, depth, losses
    "text": None,
    "image": (8, 3, ["kd", "dkd"]),
    "image-tiny": (8, 2, ["kd"]),
}
TINY_BERT = {  # BERT-Tiny (Turc et al. 2019) shape
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 512,
}


def make_tiny_bert(path: Path) -> Path:
    """Write a BERT-Tiny ``config.json`` + MiniLM's tokenizer into ``path`` (no weights)."""
    if (path / "config.json").is_file() and (path / "tokenizer.json").is_file():
        return path
    from transformers import AutoTokenizer, BertConfig

    from transferkit.backbones.packaged import minilm_dir

    path.mkdir(parents=True, exist_ok=True)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(str(path))
    BertConfig(**TINY_BERT).save_pretrained(str(path))
    return path


def text_setup(out: Path, max_examples: int, max_eval: int, losses: list[str]) -> dict[str, Any]:
    """MiniLM -> BERT-Tiny on tweet sentiment."""
    return {
        "data": {
            "target": "sentiment/tweets",
            "max_examples": max_examples,
            "max_eval_examples": max_eval,
        },
        "teacher": {"backbone": "packaged:minilm-l6", "backbone_options": {"max_length": 64}},
        "teacher_group": "text",
        "teacher_train": _train({"lr": 1e-3, "epochs": 3, "batch_size": 16}, patience=4),
        "teacher_lr_mult": 0.05,
        "student": {
            "backbone": f"hf:{make_tiny_bert(out / 'tiny-bert')}",
            "pretrained": False,
            "backbone_options": {"max_length": 64},
        },
        "student_train": _train({"lr": 1e-3, "epochs": 10, "batch_size": 16}),
        "losses": losses,
    }


def image_setup(
    max_examples: int, max_eval: int, size: int, width: int, depth: int, losses: list[str]
) -> dict[str, Any]:
    """smallcnn(64, 4) -> smallcnn(``width``, ``depth``) on MNIST digits."""
    cnn = {"depth": 4, "width": 64, "input_size": size}
    return {
        "data": {"target": "mnist5k", "max_examples": max_examples, "max_eval_examples": max_eval},
        "teacher_group": "image",
        "teacher": {"backbone": "tk:smallcnn", "backbone_options": cnn},
        "teacher_train": _train({"lr": 3e-3, "epochs": 8, "batch_size": 32}, patience=4),
        "teacher_lr_mult": 1.0,
        "student": {
            "backbone": "tk:smallcnn",
            "backbone_options": {"depth": depth, "width": width, "input_size": size},
        },
        "student_train": _train({"lr": 3e-3, "epochs": 30, "batch_size": 32}),
        "losses": losses,
    }


def _train(section: dict[str, Any], patience: int | None = None) -> dict[str, Any]:
    """The ``train`` section; by default the whole budget runs and the best val epoch wins."""
    stop = {"patience": patience or section["epochs"], "restore_best": True}
    return {**section, "log_every_steps": 10, "early_stopping": stop}


def teacher_config(setup: dict[str, Any], seed: int, name: str) -> dict[str, Any]:
    """The teacher's own run: fine-tuned (or trained) on seed ``seed``'s training split."""
    return {
        "name": name,
        "data": setup["data"],
        "model": setup["teacher"],
        "method": {
            "name": "finetune",
            "params": {"freeze": "none", "backbone_lr_mult": setup["teacher_lr_mult"]},
        },
        "train": setup["teacher_train"],
        "baselines": {"enabled": True, "random_init": False, "classical": True},
        "seeds": [seed],
        "report": False,
    }


def distill_config(
    setup: dict[str, Any], seed: int, loss: str, teacher_run: Path, name: str
) -> dict[str, Any]:
    """A distillation run from ``teacher_run`` with one logit loss (T = 4, CE weight 1)."""
    return {
        "name": name,
        "data": setup["data"],
        "model": setup["student"],
        "teacher": {"run": str(teacher_run)},
        "method": {
            "name": "distill",
            "params": {"losses": {loss: 1.0}, "temperature": 4.0, "ce_weight": 1.0},
        },
        "train": setup["student_train"],
        "baselines": {"enabled": True, "classical": False},
        "seeds": [seed],
        "report": False,
    }


def run_one(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Run (or reuse) one experiment; return its metrics.json.

    A finished run is reused only if its resolved config equals ``cfg``'s (so a changed
    setting never silently mixes old results into the tables).
    """
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        _check_same_config(cfg, run_dir)
        return json.loads(metrics.read_text(encoding="utf-8"))
    if run_dir.exists():  # an interrupted run: start it again from scratch
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    res = transferkit.run(cfg, out=run_dir, quiet=True)
    stages = {k: round(v) for k, v in res.metrics["timing"]["stages_s"].items()}
    print(
        f"  {cfg['name']}: acc {res.metrics['target']['accuracy']:.3f} "
        f"({time.perf_counter() - t0:.0f} s wall; stages {stages})",
        flush=True,
    )
    return res.metrics


def _check_same_config(cfg: dict[str, Any], run_dir: Path) -> None:
    new = load_config(cfg).model_dump(mode="json")
    old = load_config(run_dir / "config.yaml").model_dump(mode="json")
    if new != old:
        diff = sorted(k for k in new if new[k] != old.get(k))
        raise ConfigError(
            f"the finished run was made with other settings (sections {diff})",
            where=str(run_dir / "config.yaml"),
            fix="delete that run directory, or give another --out",
        )


def run_setup(
    name: str, setup: dict[str, Any], seeds: list[int], out: Path
) -> list[dict[str, Any]]:
    """Every run of one setup; one record per seed with all the accuracies and deployments."""
    records = []
    group = setup["teacher_group"]
    for seed in seeds:
        t_dir = out / group / f"teacher-s{seed}"
        t_metrics = run_one(teacher_config(setup, seed, f"{group}-teacher-s{seed}"), t_dir)
        rec: dict[str, Any] = {"seed": seed, "classical": _classical(t_metrics)}
        for loss in setup["losses"]:
            run_name = f"{name}-{loss}-s{seed}"
            cfg = distill_config(setup, seed, loss, t_dir.resolve(), run_name)
            m = run_one(cfg, out / name / f"{loss}-s{seed}")
            rec["teacher"] = m["baselines"]["teacher"]["accuracy"]
            rec["student_labels_only"] = m["baselines"]["student_labels_only"]["accuracy"]
            rec[loss] = m["target"]["accuracy"]
            rec[f"{loss}_gain"] = m["transfer_gain"]
            rec[f"{loss}_deployment"] = m.get("deployment")
        records.append(rec)
    return records


def _classical(m: dict[str, Any]) -> tuple[str, float] | None:
    for name, b in (m.get("baselines") or {}).items():
        return name, float(b["accuracy"])
    return None


# ------------------------------------------------------------------------------ tables


def _ms(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return f"{a.mean():.3f} ± {std:.3f}"


def accuracy_table(records: dict[str, list[dict[str, Any]]], losses: list[str]) -> str:
    """Test accuracy, mean ± sample std over seeds, one row per setup."""
    cols = ["teacher", "student_labels_only", *losses, "classical"]
    lines = [
        "| setup | " + " | ".join(_col_name(c) for c in cols) + " | seeds |",
        "|---" * (len(cols) + 2) + "|",
    ]
    for task, recs in records.items():
        cells = []
        for c in cols:
            vals = [r[c] for r in recs if r.get(c) is not None]
            if c == "classical":
                vals = [r[c][1] for r in recs if r.get(c)]
            cells.append(_ms(vals) if vals else "—")
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {len(recs)} |")
    return "\n".join(lines)


def _col_name(c: str) -> str:
    return {
        "student_labels_only": "student, labels only",
        "kd": "KD student",
        "dkd": "DKD student",
        "classical": "classical",
    }.get(c, c)


def gain_table(records: dict[str, list[dict[str, Any]]], losses: list[str]) -> str:
    """Per seed: distilled minus labels-only accuracy, its 95% CI and the run's verdict."""
    lines = [
        "| setup | loss | seed | student gain (acc) | 95% CI (paired bootstrap) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for task, recs in records.items():
        for loss in losses:
            for r in recs:
                g = r.get(f"{loss}_gain")
                if g is None:
                    continue
                lo, hi = g["ci95"]
                lines.append(
                    f"| {task} | {loss} | {r['seed']} | {g['delta']:+.3f} | "
                    f"[{lo:+.3f}, {hi:+.3f}] | {g['verdict']} |"
                )
    return "\n".join(lines)


def deployment_table(records: dict[str, list[dict[str, Any]]]) -> str:
    """Teacher vs student size and speed: median over every distillation run of a setup."""
    lines = [
        "| setup | model | params | size (MB) | latency batch 1 (ms) | throughput batch 64 (/s) |",
        "|---|---|---|---|---|---|",
    ]
    ratios = [
        "",
        "| setup | compression | size ratio | speedup, batch 1 (min-max) | "
        "throughput gain, batch 64 (min-max) | runs |",
        "|---|---|---|---|---|---|",
    ]
    for task, recs in records.items():
        deps = [r[k] for r in recs for k in r if k.endswith("_deployment") and r[k]]
        if not deps:
            continue
        for who in ("teacher", "student"):
            d = [x[who] for x in deps]
            lines.append(
                f"| {task} | {who} | {d[0]['params']:,} | {d[0]['size_bytes'] / 1e6:.2f} | "
                f"{_med(d, 'latency_ms'):.2f} | {_med(d, 'throughput_per_s'):,.0f} |"
            )
        sizes = " | ".join(f"{_med(deps, k):.1f}x" for k in ("compression", "size_ratio"))
        speeds = " | ".join(_med_range(deps, k) for k in ("speedup", "throughput_gain"))
        ratios.append(f"| {task} | {sizes} | {speeds} | {len(deps)} |")
    return "\n".join(lines + ratios)


def _med(items: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(x[key]) for x in items))


def _med_range(items: list[dict[str, Any]], key: str) -> str:
    vals = [float(x[key]) for x in items]
    return f"{statistics.median(vals):.1f}x ({min(vals):.1f}-{max(vals):.1f})"


# ------------------------------------------------------------------- interleaved timing


def remeasure(
    name: str, setup: dict[str, Any], seed: int, out: Path, rounds: int
) -> dict[str, Any]:
    """Teacher vs student CPU timing, interleaved (T, S, T, S, ...) on one thread.

    The runs' own deployment records time the teacher and the student once each, a few
    seconds apart; on a shared machine the load changes in between. Here each of
    ``rounds`` rounds times both back to back (median of 20 timed passes after 3 warm-up
    ones at batch 1; of 5 after 1 at batch 64), the ratio is taken within each round, and
    the medians over rounds are reported.
    Text models are timed on the first test example and on a 64-token input.
    """
    from transferkit.deploy.measure import fixed_threads, time_forward
    from transferkit.deploy.predict import BackboneHead, repeat_batch
    from transferkit.experiment.source import load_source_run

    models = {}
    for who, run_dir in (
        ("teacher", out / setup["teacher_group"] / f"teacher-s{seed}"),
        ("student", out / name / f"{setup['losses'][0]}-s{seed}"),
    ):
        src = load_source_run(run_dir)
        bb = src.backbone()
        models[who] = (BackboneHead(bb, src.head(bb.num_features)).eval(), bb)
    raw = src.test.x[:1]  # the same split for both runs (same data section and seed)
    inputs = {"first test example": raw}
    if isinstance(raw[0], str):
        inputs["64-token input"] = [" ".join([raw[0]] * 64)]
    result: dict[str, Any] = {"seed": seed, "rounds": rounds}
    with fixed_threads(1):
        for label, x in inputs.items():
            prepared = {w: m[1].prepare(x) for w, m in models.items()}
            result[label] = {"tokens": _tokens(prepared["teacher"])}
            for batch in (1, 64):
                per: dict[str, list[float]] = {w: [] for w in models}
                reps = 20 if batch == 1 else 5
                for _ in range(rounds):
                    for w, (mod, _) in models.items():
                        xb = repeat_batch(prepared[w], batch)
                        times = time_forward(mod, xb, warmup=3 if batch == 1 else 1, repeats=reps)
                        per[w].append(statistics.median(times))
                ratio = [t / s for t, s in zip(per["teacher"], per["student"], strict=True)]
                result[label][f"batch{batch}"] = {
                    "teacher_ms": 1000 * statistics.median(per["teacher"]),
                    "student_ms": 1000 * statistics.median(per["student"]),
                    "ratio": statistics.median(ratio),
                    "ratio_range": [min(ratio), max(ratio)],
                }
    return result


def _tokens(x: Any) -> int | None:
    return int(x["input_ids"].shape[1]) if isinstance(x, dict) else None


def timing_table(timings: dict[str, dict[str, Any]]) -> str:
    """Interleaved teacher / student timing: ms per pass and the within-round ratio."""
    lines = [
        "| setup | input | batch | teacher (ms) | student (ms) | teacher / student (min-max) |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in timings.items():
        for label, val in res.items():
            if not isinstance(val, dict):
                continue
            what = label + (
                f" ({val['tokens']} tokens)"
                if label.startswith("first") and val.get("tokens")
                else ""
            )
            for batch in (1, 64):
                b = val[f"batch{batch}"]
                lo, hi = b["ratio_range"]
                lines.append(
                    f"| {name} | {what} | {batch} | {b['teacher_ms']:.2f} | "
                    f"{b['student_ms']:.3f} | {b['ratio']:.1f}x ({lo:.1f}-{hi:.1f}) |"
                )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--text-losses",
        nargs="+",
        default=list(LOSSES),
        choices=list(LOSSES),
        help="dkd = kd on 2 classes: a check of that identity (see the module docstring)",
    )
    p.add_argument("--text-examples", type=int, default=1500, help="data.max_examples (text)")
    p.add_argument("--image-examples", type=int, default=3000, help="data.max_examples (image)")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--max-eval", type=int, default=500, help="cap on val / test sizes")
    p.add_argument("--out", type=Path, default=Path("runs/distill_bench"))
    p.add_argument(
        "--timing-rounds", type=int, default=7, help="interleaved timing rounds (0: skip)"
    )
    return p.parse_args(argv)


def build_setups(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The requested setups (``SETUPS`` names them)."""
    out: dict[str, dict[str, Any]] = {}
    for name in a.setups:
        if name == "text":
            out[name] = text_setup(a.out, a.text_examples, a.max_eval, a.text_losses)
        else:
            spec = SETUPS[name]
            assert spec is not None
            width, depth, losses = spec
            out[name] = image_setup(
                a.image_examples, a.max_eval, a.image_size, width, depth, losses
            )
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    setups = build_setups(a)
    records = {n: run_setup(n, s, a.seeds, a.out) for n, s in setups.items()}
    losses = [k for k in LOSSES if any(k in s["losses"] for s in setups.values())]
    timings = {}
    if a.timing_rounds > 0:
        timings = {
            n: remeasure(n, s, a.seeds[0], a.out, a.timing_rounds) for n, s in setups.items()
        }
    atomic_write_json(
        a.out / "results.json",
        {
            "args": {k: str(v) for k, v in vars(a).items()},
            "records": records,
            "timing": timings,
        },
    )
    tables = (
        "### Test accuracy (mean ± std over seeds)\n\n"
        + accuracy_table(records, losses)
        + "\n\n### Distilled student vs the same student on labels only\n\n"
        + gain_table(records, losses)
        + "\n\n### Deployment (CPU, 1 thread; median over distillation runs)\n\n"
        + deployment_table(records)
        + "\n\n### Interleaved timing (CPU, 1 thread; seed "
        + f"{a.seeds[0]} models, {a.timing_rounds} rounds)\n\n"
        + (timing_table(timings) if timings else "(skipped)")
        + "\n"
    )
    atomic_write_text(a.out / "tables.md", tables)
    print("\n" + tables)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as exc:  # a changed setting over finished runs: say so, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
