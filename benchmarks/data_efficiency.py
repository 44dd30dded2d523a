"""Data efficiency: target accuracy vs labelled examples per class, per transfer method.

Two real tasks, each run through ``transferkit.run`` (one run directory per task, method
and budget, all seeds inside it):

* ``text``: packaged MiniLM (``packaged:minilm-l6``, all-MiniLM-L6-v2) on
  ``sentiment/movies``;
* ``image``: a ``tk:smallcnn`` pretrained by transferkit itself on ``digits`` (8x8, all
  labels), loaded back as ``file:<checkpoint>`` and transferred to ``mnist5k`` (28x28);
  both are resized to ``--image-size`` pixels by the backbone's ``input_size``.

Methods (``METHODS``): ``linear_probe``; ``finetune`` (full, backbone lr = lr * mult);
``gradual_ld`` (ULMFiT gradual unfreezing every epoch + discriminative lr, layer_decay);
``lora`` (``peft: {kind: lora}``). The target-only baselines are trained once per task and
budget, inside the ``finetune`` run: the classical model (TF-IDF / pixel logistic regression)
and the same architecture from random initialisation. For the image task the random-init
baseline is a separate ``scratch`` run on ``tk:smallcnn``: the runner's random_init stage
rebuilds ``file:`` backbones with ``pretrained=False``, which ``file:`` ignores (it would
reload the pretrained checkpoint), so it is switched off there.

Resumable: a run whose ``metrics.json`` exists is skipped. Results go to
``OUT/results.json``; ``--doc`` writes the markdown table and the plot.

    .venv/bin/python benchmarks/data_efficiency.py --budgets 4 16 64 --seeds 0 1 2 \
        --doc docs/data_efficiency.md
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np

import transferkit
from _runs import run_one
from transferkit.utils.io import atomic_write_json, atomic_write_text

METHODS: dict[str, dict[str, Any]] = {
    "linear_probe": {"name": "linear_probe", "params": {}},
    "finetune": {"name": "finetune", "params": {"freeze": "none"}},
    "gradual_ld": {
        "name": "finetune",
        "params": {"freeze": "none", "gradual_unfreeze_every": 1, "layer_decay": 0.7},
    },
    "lora": {"name": "finetune", "params": {"peft": {"kind": "lora", "r": 8, "alpha": 16}}},
}
_COLORS = {  # the same colour for a method in every panel
    "linear_probe": "tab:green",
    "finetune": "tab:blue",
    "gradual_ld": "tab:purple",
    "lora": "tab:red",
    "random_init": "tab:brown",
    "classical": "tab:orange",
}
BASELINE_METHOD = "finetune"  # the run that also trains the target-only baselines


def text_task(epochs: int, max_eval: int) -> dict[str, Any]:
    """MiniLM on movie reviews; lrs as in the packaged demo config."""
    return {
        "data": {"target": "sentiment/movies", "max_eval_examples": max_eval},
        "model": {"backbone": "packaged:minilm-l6", "backbone_options": {"max_length": 64}},
        "train": {
            "lr": 1e-3,
            "epochs": epochs,
            "batch_size": 16,
            "log_every_steps": 4,
            "early_stopping": {"patience": 3},
        },
        "baselines": {"random_init_lr": 3e-4},
        "backbone_lr_mult": {"finetune": 0.05, "gradual_ld": 0.05, "lora": 1.0},
    }


def image_task(ckpt: Path, cnn: dict[str, Any], epochs: int, max_eval: int) -> dict[str, Any]:
    """The digits-pretrained CNN on mnist5k (``backbone_spec`` since the file has no spec)."""
    return {
        "data": {"target": "mnist5k", "max_eval_examples": max_eval},
        "model": {
            "backbone": f"file:{ckpt}",
            "backbone_options": {"backbone_spec": "tk:smallcnn", **cnn},
        },
        "train": {
            "lr": 3e-3,
            "epochs": epochs,
            "batch_size": 16,
            "log_every_steps": 4,
            "early_stopping": {"patience": 5},
        },
        "baselines": {"random_init_lr": 3e-3},
        "backbone_lr_mult": {"finetune": 0.3, "gradual_ld": 0.3, "lora": 1.0, "scratch": 1.0},
    }


def pretrain_cnn(out: Path, cnn: dict[str, Any], epochs: int) -> Path:
    """Train ``tk:smallcnn`` on all of ``digits`` (the source task); return its weights."""
    run_dir = out / "image" / "pretrain-digits"
    ckpt = run_dir / "checkpoints" / "target-seed0" / "model.safetensors"
    if (run_dir / "metrics.json").is_file() and ckpt.is_file():
        return ckpt
    cfg = {
        "name": "pretrain-digits",
        "data": {"target": "digits"},
        "model": {"backbone": "tk:smallcnn", "backbone_options": cnn},
        "method": {"name": "finetune", "params": {"freeze": "none", "backbone_lr_mult": 1.0}},
        "train": {
            "lr": 3e-3,
            "epochs": epochs,
            "batch_size": 32,
            "early_stopping": {"patience": 5},
        },
        "baselines": {"enabled": False},
        "seeds": [0],
        "report": False,
    }
    res = transferkit.run(cfg, out=run_dir, overwrite=True, quiet=True)
    print(
        f"pretrained on digits: test accuracy {res.metrics['target']['accuracy']:.3f}", flush=True
    )
    return ckpt


def make_config(
    task: dict[str, Any], method: str, budget: int, seeds: list[int], name: str
) -> dict[str, Any]:
    """One experiment config: ``method`` on ``task`` with ``budget`` labels per class."""
    data = {**task["data"], "label_budget": budget}
    model = copy.deepcopy(task["model"])
    baselines = {**task["baselines"], "enabled": method == BASELINE_METHOD}
    if method == "scratch":  # image task: the random-init baseline, built directly
        opts = {k: v for k, v in model["backbone_options"].items() if k != "backbone_spec"}
        model = {"backbone": "tk:smallcnn", "backbone_options": opts}
        spec = {"name": "finetune", "params": {"freeze": "none"}}
        baselines["enabled"] = False
    else:
        spec = copy.deepcopy(METHODS[method])
    if spec["name"] == "finetune":
        spec["params"]["backbone_lr_mult"] = task["backbone_lr_mult"][method]
    if model["backbone"].startswith("file:"):
        baselines["random_init"] = False  # see the module docstring
    lr = task["baselines"]["random_init_lr"] if method == "scratch" else task["train"]["lr"]
    return {
        "name": name,
        "data": data,
        "model": model,
        "method": spec,
        "train": {**task["train"], "lr": lr},
        "baselines": baselines,
        "seeds": seeds,
        "report": False,
    }


def rows_from(task: str, method: str, budget: int, m: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-seed accuracy rows for the method and for any baselines in its metrics."""
    out = [
        {
            "task": task,
            "method": method,
            "budget": budget,
            "accuracy": [s["accuracy"] for s in m["target_per_seed"]],
            "seconds": m["timing"]["stages_s"].get("target"),
        }
    ]
    for name, b in (m.get("baselines") or {}).items():
        label = "random_init" if name == "random_init" else f"classical ({name})"
        out.append(
            {
                "task": task,
                "method": label,
                "budget": budget,
                "accuracy": [s["accuracy"] for s in b["per_seed"]],
                "seconds": None,
            }
        )
    if method == "scratch":
        out[0]["method"] = "random_init"
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        a = np.asarray(r["accuracy"], dtype=float)
        r["mean"], r["std"] = float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0
    return rows


def markdown_table(rows: list[dict[str, Any]], task: str, budgets: list[int]) -> str:
    """One row per method, one column per budget: ``mean ± std`` test accuracy."""
    methods = list(dict.fromkeys(r["method"] for r in rows if r["task"] == task))
    cell = {(r["method"], r["budget"]): r for r in rows if r["task"] == task}
    head = "| method | " + " | ".join(f"{b}/class" for b in budgets) + " |"
    lines = [head, "|---" * (len(budgets) + 1) + "|"]
    for m in methods:
        vals = []
        for b in budgets:
            r = cell.get((m, b))
            vals.append(f"{r['mean']:.3f} ± {r['std']:.3f}" if r else "—")
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], tasks: dict[str, str], path: Path) -> None:
    """Accuracy vs labels per class (log x), one line per method, error bars = seed std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, (task, title) in zip(axes[0], tasks.items(), strict=True):
        for m in sorted(dict.fromkeys(r["method"] for r in rows if r["task"] == task)):
            rs = sorted(
                (r for r in rows if r["task"] == task and r["method"] == m),
                key=lambda r: r["budget"],
            )
            style = "--" if m.startswith(("random_init", "classical")) else "-"
            ax.errorbar(
                [r["budget"] for r in rs],
                [r["mean"] for r in rs],
                yerr=[r["std"] for r in rs],
                label=m,
                color=_COLORS.get(m.split(" ")[0], "grey"),
                ls=style,
                marker="o",
                capsize=3,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel("test accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["text", "image"], choices=["text", "image"])
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help=f"{BASELINE_METHOD!r} also trains the target-only baselines",
    )
    p.add_argument("--budgets", nargs="+", type=int, default=[4, 16, 64])
    p.add_argument(
        "--image-budgets",
        nargs="+",
        type=int,
        default=None,
        help="budgets for the image task (default: --budgets)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=6, help="text task epochs")
    p.add_argument("--image-epochs", type=int, default=15)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--cnn-width", type=int, default=16)
    p.add_argument("--max-eval", type=int, default=500)
    p.add_argument("--out", type=Path, default=Path("runs/data_efficiency"))
    p.add_argument("--doc", type=Path, default=None, help="write the markdown + plot here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cnn = {"width": a.cnn_width, "depth": 3, "input_size": a.image_size}
    tasks: dict[str, dict[str, Any]] = {}
    if "text" in a.tasks:
        tasks["text"] = text_task(a.epochs, a.max_eval)
    if "image" in a.tasks:
        ckpt = pretrain_cnn(a.out, cnn, a.image_epochs)
        tasks["image"] = image_task(ckpt, cnn, a.image_epochs, a.max_eval)
    budgets = {"text": a.budgets, "image": a.image_budgets or a.budgets}
    rows: list[dict[str, Any]] = []
    for budget in sorted(set(a.budgets) | set(budgets["image"])):
        for tname, task in tasks.items():
            if budget not in budgets[tname]:
                continue
            methods = sorted(a.methods, key=lambda m: m != BASELINE_METHOD)  # baselines first
            if tname == "image":
                methods.append("scratch")
            for m in methods:
                name = f"{tname}-{m}-b{budget}"
                cfg = make_config(task, m, budget, a.seeds, name)
                metrics = run_one(cfg, a.out / tname / m / f"b{budget}")
                rows += rows_from(tname, m, budget, metrics)
    rows = summarise(rows)
    atomic_write_json(
        a.out / "results.json", {"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}
    )
    titles = {"text": "MiniLM -> sentiment/movies", "image": "smallcnn(digits) -> mnist5k"}
    for t in tasks:
        print(f"\n## {titles[t]}\n\n{markdown_table(rows, t, budgets[t])}")
    if a.doc is not None:
        img = a.doc.parent / "img" / "data_efficiency.png"
        plot(rows, {t: titles[t] for t in tasks}, img)
        tables = "\n\n".join(
            f"### {titles[t]}\n\n{markdown_table(rows, t, budgets[t])}" for t in tasks
        )
        atomic_write_text(a.out / "tables.md", tables + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
