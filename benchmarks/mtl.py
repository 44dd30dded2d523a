"""Multi-task benchmark: every task weighting on several setups, Δm and cost per step.

Setups (``--setups``), each a ``transferkit.run`` config whose tasks are also trained alone
(the single-task baselines of Δm):

* ``digits``: sklearn 8x8 digits, two tasks on the same images: the digit (10 classes)
  and its parity (derived). ``tk:smallcnn`` (width 16, depth 3) from random init.
* ``sentiment``: Hutto & Gilbert tweets, polarity (``score > 0``, derived) and the
  continuous score (-4..4, regression), on frozen packaged MiniLM features (mean pooled,
  384-d, extracted once into ``OUT/features/tweets.npz``); ``tk:mlp`` (one hidden layer
  of 256) is the shared network.
* ``domains``: two sentiment domains as two tasks on separate example sets: tweet
  polarity and Amazon-review polarity, same frozen features and network.
* ``unrelated``: tweet polarity and SMS spam detection (``sms_spam``, ham/spam) as two
  tasks on separate example sets, same frozen features and network: tasks with nothing in
  common, where negative transfer between tasks may appear.

Grid: the eight weightings (``equal``, ``uncertainty``, ``gradnorm``, ``dwa``, ``pcgrad``,
``mgda``, ``cagrad``, ``nash``) with hard parameter sharing, plus MMoE with equal weights.
Runs are interleaved: for each seed, every setup runs every grid entry back to back (in
reverse order on odd seeds), so the cost ratio to ``equal`` compares runs made minutes
apart in one process. One run directory per (setup, entry, seed); a run whose
``metrics.json`` exists is skipped (resumable). Δm, its Student-t interval over seeds and
the per-task verdicts are computed by the library's own ``assemble_multitask`` from the
per-seed stage records.

Cost per step, two ways:

* in the trainer: the epoch records of ``log.jsonl`` hold the epoch's wall time including
  validation; this script times the validation pass too (``timing_val_s``, added by
  wrapping ``Trainer._validate``), so ``ms/step = (seconds - timing_val_s) / steps`` over
  the epochs after the first (warm-up): forward, backward(s), surgery, clipping,
  optimizer step and data loading. ``ratio vs equal`` divides by equal's ms/step of the
  same setup and seed (mean and range over seeds);
* isolated: ``training_step`` + backward(s) alone on one batch, entries timed round-robin
  (:func:`step_costs`), against ``bound = (F + T B) / (F + B)``, the ratio that one
  backward pass per task costs (``F``, ``B``: equal weighting's forward and backward).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/mtl.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import transferkit
from transferkit.utils.io import atomic_path, atomic_write_json, atomic_write_text

#: grid label -> (architecture, weighting)
GRID: dict[str, tuple[str, str]] = {
    **{
        w: ("hard", w)
        for w in ("equal", "uncertainty", "gradnorm", "dwa", "pcgrad", "mgda", "cagrad", "nash")
    },
    "mmoe+equal": ("mmoe", "equal"),
}
SETUPS = ("digits", "sentiment", "domains", "unrelated")
#: hidden sizes of the wider shared MLP whose isolated step cost is measured as well
WIDE = (2048, 2048)
MLP = {
    "backbone": "tk:mlp",
    "pretrained": False,
    "backbone_options": {"in_features": 384, "hidden": [256]},
}


def feature_file(out: Path, domain: str) -> Path:
    """Frozen MiniLM features of every rated snippet of a sentiment domain (``.npz``:
    ``x`` float32 ``[N, 384]``, ``y`` the mean human score in -4..4, float32 ``[N]``)."""
    path = out / "features" / f"{domain}.npz"
    if path.is_file():
        return path
    from transferkit.backbones import create_backbone
    from transferkit.data import load_full_dataset
    from transferkit.engine.extract import extract_features

    ds = load_full_dataset(f"sentiment/{domain}", target="score")
    t0 = time.perf_counter()
    feats = extract_features(create_backbone("packaged:minilm-l6"), list(ds.x), batch_size=128)
    print(f"features {domain}: {len(ds)} texts, {time.perf_counter() - t0:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x=np.asarray(feats, dtype=np.float32), y=np.asarray(ds.y, np.float32))
    return path


def sms_feature_file(out: Path) -> Path:
    """Frozen MiniLM features of every ``sms_spam`` message (``.npz``: ``x`` float32
    ``[N, 384]``, ``y`` int64 ``[N]``, 0 = ham, 1 = spam)."""
    path = out / "features" / "sms_spam.npz"
    if path.is_file():
        return path
    from transferkit.backbones import create_backbone
    from transferkit.data import load_full_dataset
    from transferkit.engine.extract import extract_features

    ds = load_full_dataset("sms_spam")
    feats = extract_features(create_backbone("packaged:minilm-l6"), list(ds.x), batch_size=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x=np.asarray(feats, dtype=np.float32), y=np.asarray(ds.y, np.int64))
    return path


def setup_config(name: str, out: Path) -> dict[str, Any]:
    """Data, model, tasks and training of one setup (everything but the method and seed)."""
    if name == "digits":
        cnn = {"in_chans": 1, "width": 16, "depth": 3}
        return {
            "data": {"target": "digits"},
            "model": {"backbone": "tk:smallcnn", "pretrained": False, "backbone_options": cnn},
            "tasks": [{"name": "digit"}, {"name": "parity", "derive": "parity"}],
            "train": {"epochs": 10, "lr": 3e-3, "batch_size": 32},
        }
    reg = {"task": "regression"}
    if name == "sentiment":
        tweets = str(feature_file(out, "tweets"))
        tasks = [
            {"name": "polarity", "derive": "greater_than", "threshold": 0.0},
            {"name": "score"},
        ]
        data = {"target": tweets, "target_options": reg}
    elif name == "domains":
        files = {d: str(feature_file(out, d)) for d in ("tweets", "amazon")}
        tasks = [
            {"name": d, "data": f, "data_options": reg, "derive": "greater_than", "threshold": 0.0}
            for d, f in files.items()
        ]
        data = {"target": files["tweets"], "target_options": reg}
    elif name == "unrelated":
        tweets = str(feature_file(out, "tweets"))
        tasks = [
            {
                "name": "tweets",
                "data": tweets,
                "data_options": reg,
                "derive": "greater_than",
                "threshold": 0.0,
            },
            {"name": "sms", "data": str(sms_feature_file(out))},
        ]
        data = {"target": tweets, "target_options": reg}
    else:
        raise ValueError(f"unknown setup {name!r}")
    return {
        "data": data,
        "model": MLP,
        "tasks": tasks,
        "train": {"epochs": 10, "lr": 1e-3, "batch_size": 32},
    }


def make_config(base: dict[str, Any], setup: str, label: str, seeds: list[int]) -> dict[str, Any]:
    arch, weighting = GRID[label]
    params = {"architecture": arch, "weighting": weighting, "backbone_lr_mult": 1.0}
    return {
        "name": f"mtl-{setup}-{label}",
        **base,
        "method": {"name": "multitask", "params": params},
        "seeds": seeds,
        "report": False,
        # per-seed runs: the interval over seeds is computed here, the 1-seed bootstrap
        # the runner would otherwise do 2000 times per task is not used
        "bootstrap_samples": 100,
    }


@contextmanager
def timed_validation() -> Iterator[None]:
    """Add ``timing_val_s`` (the validation pass's wall time) to every epoch record."""
    from transferkit.engine.trainer import Trainer

    original = Trainer._validate

    def _validate(self: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = dict(original(self))
        out["timing_val_s"] = time.perf_counter() - t0
        return out

    Trainer._validate = _validate  # type: ignore[method-assign]
    try:
        yield
    finally:
        Trainer._validate = original  # type: ignore[method-assign]


def run_one(cfg: dict[str, Any], run_dir: Path) -> bool:
    """Run (or reuse) one single-seed experiment; False (error printed) if it failed."""
    if (run_dir / "metrics.json").is_file():
        return True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    try:
        with timed_validation():
            res = transferkit.run(cfg, out=run_dir, quiet=True)
    except Exception as exc:  # a failed entry is reported, the grid goes on
        print(f"  {cfg['name']} seed {cfg['seeds'][0]}: FAILED {type(exc).__name__}: {exc}")
        return False
    dm = res.metrics.get("delta_m", {}).get("mean", float("nan"))
    ms = step_ms(run_dir, cfg["seeds"][0])
    print(
        f"  {cfg['name']} seed {cfg['seeds'][0]}: Δm {100 * dm:+.2f} %, {ms:.2f} ms/step "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return True


def step_ms(run_dir: Path, seed: int) -> float:
    """Training ms per optimizer step of the shared model (epochs after the first)."""
    recs = [
        json.loads(line)
        for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    epochs = [r for r in recs if r.get("run") == f"target-seed{seed}" and r["type"] == "epoch"]
    prev, secs, steps = 0, 0.0, 0
    for i, r in enumerate(epochs):
        if i > 0 or len(epochs) == 1:
            secs += r["seconds"] - r.get("timing_val_s", 0.0)
            steps += r["step"] - prev
        prev = r["step"]
    return 1000.0 * secs / steps if steps else float("nan")


def aggregate(cfg: dict[str, Any], dirs: dict[int, Path]) -> dict[str, Any]:
    """The multi-task metrics.json of all seeds, from the per-seed stage records."""
    from transferkit.experiment import load_config
    from transferkit.experiment.mtl_metrics import assemble_multitask
    from transferkit.experiment.multitask_data import TaskInfo
    from transferkit.experiment.rundir import load_stage

    seeds = sorted(dirs)
    full = load_config({**cfg, "seeds": seeds, "bootstrap_samples": 2000})
    first = json.loads((dirs[seeds[0]] / "metrics.json").read_text(encoding="utf-8"))
    weights = {t.name: t.weight for t in full.tasks or []}
    tasks = [
        TaskInfo(n, t["kind"], t["classes"], weights[n], t["group"])
        for n, t in first["dataset"]["tasks"].items()
    ]
    kinds = ["target", *(f"single_{t.name}" for t in tasks)]
    recs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for s in seeds:
        for k in kinds:
            rec = load_stage(dirs[s], f"{k}/seed{s}")
            assert rec is not None, f"{dirs[s]}: stage {k} missing"
            recs[k].append(rec)
    total = sum(
        json.loads((dirs[s] / "metrics.json").read_text())["timing"]["total_s"] for s in seeds
    )
    return assemble_multitask(full, tasks, recs, total)


def _method_and_batch(base: dict[str, Any], label: str, seed: int) -> tuple[Any, Any, int]:
    """A freshly initialised multi-task model of grid entry ``label``, its first training
    batch (``train.batch_size`` examples of the seed's split) and the number of tasks."""
    import torch

    from transferkit.data.loaders import collate_with
    from transferkit.experiment import load_config, stages
    from transferkit.experiment.mtl_stages import build_multitask
    from transferkit.experiment.multitask_data import MultiTaskDataset, load_task_splits

    cfg = load_config(make_config(base, "cost", label, [seed]))
    tasks = load_task_splits(cfg, seed)
    first = tasks[1][tasks[0][0].name]
    ctx = stages.StageContext(cfg, first, seed, Path("."), False, True, None, tasks)
    torch.manual_seed(seed)
    method = build_multitask(ctx)
    data = MultiTaskDataset(*tasks, sampling=cfg.data.task_sampling, seed=seed)
    batch = collate_with(method.backbone.prepare)([data[i] for i in range(cfg.train.batch_size)])
    return method, batch, len(tasks[0])


def step_costs(
    base: dict[str, Any], entries: list[str], seed: int = 0, reps: int = 100
) -> dict[str, Any]:
    """Isolated cost of the part a weighting changes, on one batch, per grid entry.

    For every entry: the time of ``training_step`` + ``method.backward`` (the loss
    backward, or the per-task backward passes and the surgery); entries are timed
    round-robin so that load changes hit all alike, and the first 3 rounds are dropped.
    On a shared machine the *minimum* over ``reps`` is the least disturbed estimate of the
    compute cost (as ``timeit`` advises); medians are kept too. For ``equal`` the forward
    ``F`` and backward ``B`` are timed apart: ``bound = (F + T B) / (F + B)`` is the
    ratio that exactly one backward pass per task would cost.
    """
    models = {label: _method_and_batch(base, label, seed) for label in entries}
    times: dict[str, list[float]] = {label: [] for label in entries}
    fwd, bwd = [], []
    for r in range(reps + 3):
        for label, (method, batch, _) in models.items():
            t0 = time.perf_counter()
            out = method.training_step(batch)
            t1 = time.perf_counter()
            method.backward(out)
            t2 = time.perf_counter()
            method.zero_grad(set_to_none=True)
            if r >= 3:
                times[label].append(t2 - t0)
                if label == "equal":
                    fwd.append(t1 - t0)
                    bwd.append(t2 - t1)
    ms = {label: 1000 * min(v) for label, v in times.items()}
    f, b = 1000 * min(fwd), 1000 * min(bwd)
    n = next(iter(models.values()))[2]
    return {
        "step_ms": ms,
        "ratio_vs_equal": {label: v / ms["equal"] for label, v in ms.items()},
        "median_ms": {label: 1000 * float(np.median(v)) for label, v in times.items()},
        "forward_ms": f,
        "backward_ms": b,
        "tasks": n,
        "bound": (f + n * b) / (f + b),
    }


def summarise(setup: str, label: str, m: dict[str, Any], ms: dict[int, float]) -> dict[str, Any]:
    """One result row: Δm (+ interval, verdict), per-task metrics, ms/step per seed."""
    dm = m.get("delta_m", {})
    per_task = {}
    for name, t in m["tasks"].items():
        k = dm.get("metrics", {}).get(name, t["primary_metric"])
        per_task[name] = {
            "metric": k,
            "shared": t["multitask"][k],
            "alone": t.get("single_task", {}).get(k),
            "gain": (t.get("gain") or {}).get("delta"),
            "verdict": (t.get("gain") or {}).get("verdict"),
        }
    return {
        "setup": setup,
        "entry": label,
        "architecture": GRID[label][0],
        "weighting": GRID[label][1],
        "delta_m": dm.get("mean"),
        "delta_m_ci95": dm.get("ci95"),
        "delta_m_per_seed": dm.get("per_seed"),
        "verdict": dm.get("verdict"),
        "tasks": per_task,
        "negative_transfer_tasks": m.get("negative_transfer_tasks", []),
        "ms_per_step": {str(s): v for s, v in ms.items()},
    }


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``ratio_vs_equal``: per seed, ms/step over equal's ms/step (same setup, same seed)."""
    equal = {r["setup"]: r["ms_per_step"] for r in rows if r["entry"] == "equal"}
    for r in rows:
        base = equal.get(r["setup"], {})
        r["ratio_vs_equal"] = {s: v / base[s] for s, v in r["ms_per_step"].items() if s in base}


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:+.2f}"


def _mean_range(v: list[float], fmt: str) -> str:
    if not v:
        return "—"
    return format(np.mean(v), fmt) + (
        f" ({format(min(v), fmt)}–{format(max(v), fmt)})" if len(v) > 1 else ""
    )


def _task_cell(r: dict[str, Any]) -> str:
    return "; ".join(
        f"{n} {t['metric'][:3]} {t['shared']:.3f} / {t['alone']:.3f}"
        for n, t in r["tasks"].items()
        if t["alone"] is not None
    )


def table(rows: list[dict[str, Any]], costs: dict[str, dict[str, Any]]) -> str:
    """The markdown results table (one line per setup and grid entry)."""
    lines = [
        "| weighting | setup | Δm % [95% CI] | verdict | per task: shared / alone "
        "| negative transfer | ms/step | ratio vs equal | isolated ratio (bound) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["delta_m_ci95"] or (None, None)
        c = costs.get(r["setup"], {})
        iso = c.get("ratio_vs_equal", {}).get(r["entry"])
        iso_cell = "—" if iso is None else f"{iso:.2f} ({c['bound']:.2f})"
        lines.append(
            f"| {r['entry']} | {r['setup']} | {_pct(r['delta_m'])} [{_pct(lo)}, {_pct(hi)}] "
            f"| {r['verdict']} | {_task_cell(r)} "
            f"| {', '.join(r['negative_transfer_tasks']) or '—'} "
            f"| {_mean_range(list(r['ms_per_step'].values()), '.2f')} "
            f"| {_mean_range(list(r['ratio_vs_equal'].values()), '.2f')} | {iso_cell} |"
        )
    return "\n".join(lines)


def cost_table(costs: dict[str, dict[str, Any]]) -> str:
    """Per setup: equal's F and B, the one-backward-per-task bound, isolated ms per entry."""
    entries = list(dict.fromkeys(e for c in costs.values() for e in c["step_ms"]))
    lines = [
        "| setup | F (ms) | B (ms) | T | bound | " + " | ".join(f"{e} ms" for e in entries) + " |",
        "|---" * (5 + len(entries)) + "|",
    ]
    for s, c in costs.items():
        cells = " | ".join(f"{c['step_ms'][e]:.2f}" if e in c["step_ms"] else "—" for e in entries)
        lines.append(
            f"| {s} | {c['forward_ms']:.2f} | {c['backward_ms']:.2f} | {c['tasks']} "
            f"| {c['bound']:.2f} | {cells} |"
        )
    return "\n".join(lines)


def run_grid(
    out: Path, setups: list[str], entries: list[str], seeds: list[int]
) -> dict[tuple[str, str], dict[int, Path]]:
    """Every (seed, setup, entry) run, interleaved; returns the finished run dirs."""
    bases = {s: setup_config(s, out) for s in setups}
    done: dict[tuple[str, str], dict[int, Path]] = {}
    for i, seed in enumerate(seeds):
        order = entries if i % 2 == 0 else entries[::-1]
        for setup in setups:
            for label in order:
                cfg = make_config(bases[setup], setup, label, [seed])
                d = out / setup / label / f"seed{seed}"
                if run_one(cfg, d):
                    done.setdefault((setup, label), {})[seed] = d
    return done


def measure_costs(out: Path, setups: list[str], entries: list[str]) -> dict[str, Any]:
    """:func:`step_costs` per setup, plus the sentiment tasks on the wider MLP ``WIDE``."""
    entries = ["equal", *(e for e in entries if e != "equal")]
    costs = {s: step_costs(setup_config(s, out), entries) for s in setups}
    if "sentiment" in setups:
        wide = setup_config("sentiment", out)
        opts = {**wide["model"]["backbone_options"], "hidden": list(WIDE)}
        wide["model"] = {**wide["model"], "backbone_options": opts}
        name = f"sentiment, mlp {'-'.join(map(str, WIDE))}"
        costs[name] = step_costs(wide, entries, reps=30)
    return costs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    p.add_argument("--entries", nargs="+", default=list(GRID), choices=list(GRID))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/mtl_bench"))
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    done = run_grid(a.out, a.setups, a.entries, a.seeds)
    costs = measure_costs(a.out, a.setups, a.entries)
    rows = []
    for (setup, label), dirs in done.items():
        cfg = make_config(setup_config(setup, a.out), setup, label, sorted(dirs))
        ms = {s: step_ms(d, s) for s, d in dirs.items()}
        rows.append(summarise(setup, label, aggregate(cfg, dirs), ms))
    add_ratios(rows)
    text = (
        f"{table(rows, costs)}\n\nIsolated forward + backward(s) on one batch (minimum ms "
        f"over the repetitions) and the one-backward-per-task bound:\n\n{cost_table(costs)}\n"
    )
    print(text)
    atomic_write_json(a.out / "results.json", {"rows": rows, "costs": costs})
    atomic_write_text(a.out / "tables.md", text)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
