"""transferkit's deep domain adaptation methods against skada's, same data, network and budget.

Pairs ``digits -> mnist5k`` and ``mnist5k -> digits`` (mnist5k capped at ``--mnist-max``
examples and cut to its 20x20 centre; both resized once to 16x16, one channel, [0, 1],
then ``(x - 0.5) / 0.5``); the same ``tk:smallcnn`` (width 16, depth 3,
64 pooled features) + linear head, built from the same seed for both libraries; Adam with
no weight decay, constant lr, 64 source + 64 target examples per step, the same number of
epochs and of steps per epoch (``floor(n_source / 64)``: ours ``drop_last``, skada's
``DomainBalancedDataLoader`` with ``max_samples="source"``). Target test accuracy is read
at the end of training, with no checkpoint selection, for both. Wall time per optimisation
step is the mean interval between consecutive step ends, the first ``--warmup`` steps
dropped (epoch-boundary work included); runs are interleaved per seed and method and
their order alternates between seeds.

Ours trains with :class:`transferkit.engine.Trainer` (checkpoints off, no ``val_fn``); the
bare-loop timing (``--bare-seeds``) runs the same method in a plain PyTorch loop to show
what the Trainer costs. skada's DANN and CDAN ship a domain classifier ending in
``Softmax`` over one unit (a constant 1, so no adversarial gradient); they are run as
shipped and, as ``skada*``, with the same classifier ending in ``Sigmoid``. ``mixed_bn``
(source loss only, on mixed source + target batches) separates what BatchNorm statistics
of both domains do from what the alignment losses add. Results and discussion:
``docs/da_vs_skada.md``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/da_vs_skada.py [--seeds 0 1 2]
        [--epochs 10] [--mnist-max 2000] [--disc-hidden 1024] [--out runs/da_vs_skada]
    .venv/bin/python benchmarks/da_vs_skada.py --report-only   # re-render results.json

Needs ``pip install skada skorch`` (skada 0.6.0, skorch 1.4.0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.backbones import create_backbone
from transferkit.data import load_dataset
from transferkit.data.loaders import ExampleDataset, PairedDataset, collate_with
from transferkit.data.types import Dataset
from transferkit.engine import Callback, TrainConfig, Trainer
from transferkit.methods import METHODS
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head
from transferkit.utils.io import atomic_write_json, atomic_write_text

# mixed_bn: the source loss alone on mixed 64 + 64 batches (DeepCORAL at weight 0), so that
# BatchNorm sees both domains as in every DA method; it separates that effect from alignment.
METHOD_NAMES = ("source_only", "mixed_bn", "dann", "deep_coral", "dan", "cdan", "mcc", "mdd")
PAIRS = (("digits", "mnist5k"), ("mnist5k", "digits"))
TRADE_OFF = 1.0
# skada's reg giving the same effective weight as our trade_off (see docs/da_vs_skada.md):
# skada's DANN/CDAN loss is BCE_s + BCE_t, ours 0.5 * (BCE_s + BCE_t).
REG_PER_TRADE_OFF = {"dann": 0.5, "cdan": 0.5, "deep_coral": 1, "dan": 1, "mcc": 1, "mdd": 1}
REG_PER_TRADE_OFF["mixed_bn"] = 0
MCC_TEMPERATURE = 2.5  # ours' default; skada's default T=1 is overridden to match
SIZE, WIDTH, DEPTH = 16, 16, 3
# Adam (AdamW without decay), constant lr, partial batches dropped like skada's samplers.
TRAIN: dict[str, Any] = {"optimizer": "adamw", "weight_decay": 0.0, "schedule": "constant"}
TRAIN |= {"drop_last": True, "mixed_precision": "no", "cpu": True, "save_checkpoints": False}


@dataclass
class PairData:
    """One seed's data: unit-range images ``[N, 16, 16]`` and the prepared target test set."""

    name: str
    x_s: np.ndarray
    y_s: np.ndarray
    x_t: np.ndarray
    x_test: torch.Tensor
    y_test: np.ndarray


def build_network(seed: int) -> tuple[nn.Module, nn.Module]:
    """``tk:smallcnn`` + linear head, initialised from ``seed`` (identical for both sides)."""
    torch.manual_seed(seed)
    backbone = create_backbone(
        "tk:smallcnn", pretrained=False, in_chans=1, width=WIDTH, depth=DEPTH, input_size=SIZE
    )
    return backbone, make_head(backbone.num_features, 10)


def _unit(prepare: Any, raw: np.ndarray) -> np.ndarray:
    """Resize to 16x16 once (PIL, antialiased) and undo the 0.5/0.5 normalisation."""
    return (prepare(raw) * 0.5 + 0.5).clamp(0.0, 1.0)[:, 0].numpy().astype(np.float32)


def load_pair(source: str, target: str, seed: int, args: argparse.Namespace) -> PairData:
    """Seeded splits; the source train split is labelled, the target train split is not.
    mnist5k is capped at ``args.mnist_max`` examples and loses its empty ``args.mnist_crop``
    pixel border (28 -> 20 px) before the resize, so that both digit sets fill the frame."""
    prepare = build_network(0)[0].prepare

    def splits(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        mnist = name == "mnist5k"
        sp = load_dataset(name, seed=seed, **({"max_examples": args.mnist_max} if mnist else {}))
        c = args.mnist_crop if mnist else 0
        crop = (lambda x: x[:, c:-c, c:-c]) if c else (lambda x: x)
        unit = [_unit(prepare, crop(d.x)) for d in (sp.train, sp.test)]
        return unit[0], sp.train.y, unit[1], sp.test.y

    (xs, ys, _, _), (xt, _, xt_test, yt_test) = splits(source), splits(target)
    return PairData(f"{source}->{target}", xs, ys, xt, prepare(xt_test), yt_test)


def _accuracy(logits: torch.Tensor, y: np.ndarray) -> float:
    return float((logits.argmax(-1).numpy() == y).mean())


def _ms_per_step(ends: list[float], warmup: int) -> dict[str, float]:
    gaps = np.diff(np.asarray(ends))[warmup:] * 1000.0
    return {"ms_step": float(gaps.mean()), "ms_step_median": float(np.median(gaps))}


# ----------------------------------------------------------------------------- ours
class StepClock(Callback):
    """Records ``time.perf_counter()`` after every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, trainer: Trainer) -> None:
        self.ends.append(time.perf_counter())


def build_ours(name: str, seed: int, disc_hidden: int = 1024) -> nn.Module:
    """A registered DA method (or ``finetune`` on source for source-only), all at one lr;
    DANN / CDAN discriminators get ``disc_hidden`` units per hidden layer (default 1024)."""
    backbone, head = build_network(seed)
    if name == "source_only":
        return Finetune(backbone, head, "classification", FinetuneParams(backbone_lr_mult=1.0))
    cls = METHODS.get("deep_coral" if name == "mixed_bn" else name)
    extra = {"hidden": disc_hidden} if name in ("dann", "cdan") else {}
    weight = 0.0 if name == "mixed_bn" else TRADE_OFF
    params = cls.Params(backbone_lr_mult=1.0, trade_off=weight, **extra)
    return cls(backbone, head, "classification", params)


def _datasets(data: PairData, name: str, seed: int) -> torch.utils.data.Dataset:
    src = Dataset("source", "image", data.x_s, data.y_s, classes=[str(i) for i in range(10)])
    if name == "source_only":
        return ExampleDataset(src)
    tgt = Dataset("target", "image", data.x_t, None, domain=-1)
    return PairedDataset(src, tgt, seed=seed)


def run_ours(name: str, data: PairData, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train with the Trainer (no checkpoints, no validation); accuracy and step times."""
    method = build_ours(name, seed, args.disc_hidden)
    config = TrainConfig(
        **TRAIN, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, seed=seed
    )
    clock = StepClock()
    run_dir = Path(args.out) / "ours" / data.name.replace("->", "_to_") / name / f"seed{seed}"
    ds = _datasets(data, name, seed)
    t0 = time.perf_counter()
    trainer = Trainer(
        method, ds, collate_with(method.backbone.prepare), config, run_dir,
        callbacks=[clock], quiet=True,
    )  # fmt: skip
    trainer.fit()
    wall = time.perf_counter() - t0
    method.eval()
    with torch.no_grad():
        acc = _accuracy(method.predict(data.x_test), data.y_test)
    ends = clock.ends
    return {"acc": acc, "steps": len(ends), "fit_s": wall, **_ms_per_step(ends, args.warmup)}


def run_ours_bare(name: str, data: PairData, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The same method in a plain loop: DataLoader, Adam, backward, step, GRL ramp."""
    method = build_ours(name, seed, args.disc_hidden)
    ds = _datasets(data, name, seed)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        ds, args.batch_size, shuffle=True, generator=gen, drop_last=True,
        collate_fn=collate_with(method.backbone.prepare),
    )  # fmt: skip
    opt = torch.optim.Adam(method.param_groups(args.lr), lr=args.lr)
    callbacks = list(getattr(method, "training_callbacks", list)())
    total, ends = args.epochs * len(loader), []
    torch.manual_seed(seed)
    method.train()
    for epoch in range(args.epochs):
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        for batch in loader:
            loss = method.training_step(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for cb in callbacks:
                cb.update(len(ends) + 1, total)
            ends.append(time.perf_counter())
    method.eval()
    with torch.no_grad():
        acc = _accuracy(method.predict(data.x_test), data.y_test)
    return {"acc": acc, "steps": len(ends), **_ms_per_step(ends, args.warmup)}


# ----------------------------------------------------------------------------- skada
class SkadaNet(nn.Module):
    """The same backbone + head as one module; skada hooks the ``backbone`` output."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, X: torch.Tensor, sample_weight: Any = None) -> torch.Tensor:
        return self.head(self.backbone(X))


class SigmoidDomainClassifier(nn.Module):
    """skada's ``DomainClassifier`` (GRL(1) -> Linear(100) -> BN -> ReLU -> Linear(1)) with
    its final ``Softmax`` over one unit replaced by ``Sigmoid``."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(num_features, 100), nn.BatchNorm1d(100), nn.ReLU(), nn.Linear(100, 1),
            nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, sample_weight: Any = None) -> torch.Tensor:
        from skada.deep.modules import GradientReversalLayer

        return self.classifier(GradientReversalLayer.apply(x, 1.0)).squeeze(-1)


def build_skada(name: str, seed: int, args: argparse.Namespace, fixed: bool) -> Any:
    """skada's estimator for ``name`` around a fresh :class:`SkadaNet` from ``seed``."""
    from skada import deep
    from skorch.callbacks import Callback as SkorchCallback

    class Clock(SkorchCallback):
        def initialize(self) -> Clock:
            self.ends: list[float] = []
            return self

        def on_batch_end(self, net: Any, batch: Any = None, training: bool = False, **kw: Any):
            if training:
                self.ends.append(time.perf_counter())

    module = SkadaNet(*build_network(seed))
    common: dict[str, Any] = {
        "optimizer": torch.optim.Adam, "lr": args.lr, "batch_size": args.batch_size,
        "max_epochs": args.epochs, "train_split": None, "verbose": 0, "device": "cpu",
        "callbacks": [("clock", Clock())],
    }  # fmt: skip
    if name == "source_only":
        return deep.SourceOnly(module, "backbone", **common)
    reg = TRADE_OFF * REG_PER_TRADE_OFF[name]
    common |= {"reg": reg, "iterator_train__max_samples": "source"}
    d, c = WIDTH * 2 ** (DEPTH - 1), 10
    if name == "dann":
        disc = SigmoidDomainClassifier(d) if fixed else None
        return deep.DANN(module, "backbone", num_features=d, domain_classifier=disc, **common)
    if name == "cdan":
        disc = SigmoidDomainClassifier(d * c) if fixed else None
        return deep.CDAN(
            module, "backbone", num_features=d, n_classes=c, domain_classifier=disc, **common
        )
    if name == "mdd":
        return deep.MDD(module, "backbone", num_features=d, n_classes=c, **common)
    if name == "mcc":
        return deep.MCC(module, "backbone", T=MCC_TEMPERATURE, **common)
    factory = {"deep_coral": deep.DeepCoral, "mixed_bn": deep.DeepCoral, "dan": deep.DAN}[name]
    return factory(module, "backbone", **common)


def run_skada(
    name: str, data: PairData, seed: int, args: argparse.Namespace, fixed: bool = False
) -> dict[str, Any]:
    """Fit skada on source (labelled) + target (label -1, domain -1); accuracy, step times."""
    net = build_skada(name, seed, args, fixed)
    prepare = build_network(0)[0].prepare
    x = torch.cat([prepare(data.x_s), prepare(data.x_t)]).numpy()
    y = np.concatenate([data.y_s, np.full(len(data.x_t), -1)])
    domain = np.concatenate([np.ones(len(data.x_s)), -np.ones(len(data.x_t))]).astype(np.int64)
    torch.manual_seed(seed)  # skada's samplers shuffle from the global RNG
    t0 = time.perf_counter()
    net.fit({"X": x, "sample_domain": domain}, y)
    wall = time.perf_counter() - t0
    ends = dict(net.callbacks_)["clock"].ends
    net.module_.eval()
    with torch.no_grad():
        acc = _accuracy(net.module_(data.x_test), data.y_test)
    return {"acc": acc, "steps": len(ends), "fit_s": wall, **_ms_per_step(ends, args.warmup)}


def check_losses(seed: int = 0) -> dict[str, float]:
    """Both libraries' losses on the same random features / logits ``[64, D]`` (the basis of
    the reg <-> trade_off mapping). skada's MDD gets probabilities, as its Softmax-ended
    discriminator gives it; ``mdd_skada_on_logits`` isolates its loss from that."""
    from skada.deep import _adversarial as sa
    from skada.deep import losses as sl

    from transferkit.losses.adversarial import dann_loss
    from transferkit.losses.coral import coral_loss
    from transferkit.losses.mcc import mcc_loss
    from transferkit.losses.mdd import mdd_loss
    from transferkit.losses.mmd import mmd2

    g = torch.Generator().manual_seed(seed)
    f_s, f_t = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g) + 0.5
    z_s, z_t, a_s, a_t = (torch.randn(64, 10, generator=g) for _ in range(4))
    d_s, d_t = torch.randn(64, 1, generator=g), torch.randn(64, 1, generator=g)
    out = {
        "coral_ours": coral_loss(f_s, f_t),
        "coral_skada": sl.deepcoral_loss(f_s, f_t),
        "mcc_ours": mcc_loss(z_t, MCC_TEMPERATURE),
        "mcc_skada": sl.mcc_loss(z_t, T=MCC_TEMPERATURE),
        "dan_ours": mmd2(f_s, f_t),
        "dan_skada": sl.dan_loss(f_s, f_t),
        "dann_ours": dann_loss(nn.Flatten(0), d_s, d_t, nn.Identity()),
        # skada labels source 0 / target 1 and takes probabilities: p = sigmoid(-logit)
        "dann_skada": sa.DANNLoss()(torch.sigmoid(-d_s[:, 0]), torch.sigmoid(-d_t[:, 0])),
        "mdd_ours": mdd_loss(z_s, a_s, z_t, a_t, 4.0),
        "mdd_skada": sa.MDDLoss(4.0)(z_s, z_t, a_s.softmax(-1), a_t.softmax(-1)),
        "mdd_skada_on_logits": sa.MDDLoss(4.0)(z_s, z_t, a_s, a_t),
    }
    return {k: round(float(v), 6) for k, v in out.items()}


# ----------------------------------------------------------------------------- driver
def _one(lib: str, name: str, data: PairData, seed: int, args: argparse.Namespace) -> dict:
    runners = {
        "ours": lambda: run_ours(name, data, seed, args),
        "skada": lambda: run_skada(name, data, seed, args),
        "skada*": lambda: run_skada(name, data, seed, args, fixed=True),
        "ours-bare": lambda: run_ours_bare(name, data, seed, args),
    }
    try:
        out = runners[lib]()
    except Exception as exc:  # a library failing on this data is a result, not a crash
        out = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    record = {"lib": lib, "method": name, "pair": data.name, "seed": seed, **out}
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
    print(shown, flush=True)
    return record


def run_all(args: argparse.Namespace, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (seed, pair, method): libraries interleaved, their order flipped on odd seeds."""
    records: list[dict[str, Any]] = []
    for i, seed in enumerate(args.seeds):
        for source, target in PAIRS:
            data = load_pair(source, target, seed, args)
            for name in args.methods:
                libs = ["ours", "skada"] + (["skada*"] if name in ("dann", "cdan") else [])
                if seed in args.bare_seeds:
                    libs.append("ours-bare")
                for lib in libs[::-1] if i % 2 else libs:
                    records.append(_one(lib, name, data, seed, args))
                atomic_write_json(Path(args.out) / "results.json", {**meta, "records": records})
    return records


def _stat(records: list[dict], lib: str, name: str, pair: str, key: str) -> list[float]:
    return [
        r[key]
        for r in records
        if r["lib"] == lib and r["method"] == name and r["pair"] == pair and key in r
    ]


def _pm(values: list[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"


def _ratio(records: list[dict], left: str, right: str, name: str, pair: str) -> str:
    """Ratio of mean ms/step, with the range of the per-seed (interleaved) ratios."""
    ms = {
        lib: {r["seed"]: r["ms_step"] for r in records if "ms_step" in r
              and (r["lib"], r["method"], r["pair"]) == (lib, name, pair)}
        for lib in (left, right)
    }  # fmt: skip
    seeds = sorted(set(ms[left]) & set(ms[right]))
    if not seeds:
        return "n/a"
    per_seed = [ms[right][s] / ms[left][s] for s in seeds]
    mean = statistics.mean(ms[right][s] for s in seeds) / statistics.mean(
        ms[left][s] for s in seeds
    )
    return f"{mean:.2f} [{min(per_seed):.2f}, {max(per_seed):.2f}]"


def compare(records: list[dict[str, Any]], methods: list[str], left: str, right: str) -> str:
    """Markdown rows ``method | pair | acc L | acc R | ms/step L | ms/step R | ratio R/L``
    (mean ± std over the seeds where ``right`` ran; ``skada*`` rows for DANN/CDAN)."""
    rows = [
        f"| method | pair | {left} acc | {right} acc | {left} ms/step | {right} ms/step | "
        f"ratio {right}/{left} [per-seed range] |",
        "|---|---|---|---|---|---|---|",
    ]
    for source, target in PAIRS:
        pair = f"{source}->{target}"
        for name in methods:
            for lib in (right, "skada*") if right == "skada" else (right,):
                seeds = {r["seed"] for r in records if r["lib"] == lib and r["method"] == name}
                sub = [r for r in records if r["seed"] in seeds]
                if not seeds:
                    continue
                ms_l, ms_r = (_stat(sub, x, name, pair, "ms_step") for x in (left, lib))
                ratio = _ratio(sub, left, lib, name, pair)
                rows.append(
                    f"| {name if lib == right else f'{name} ({lib})'} | {pair} "
                    f"| {_pm(_stat(sub, left, name, pair, 'acc'))} "
                    f"| {_pm(_stat(sub, lib, name, pair, 'acc'))} "
                    f"| {_pm(ms_l, '{:.1f}')} | {_pm(ms_r, '{:.1f}')} | {ratio} |"
                )
    return "\n".join(rows) + "\n"


def errors(records: list[dict[str, Any]]) -> str:
    seen = {(r["lib"], r["method"], r["error"]) for r in records if "error" in r}
    return "".join(f"- {lib} {name}: {err}\n" for lib, name, err in sorted(seen))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bare-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="per domain")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mnist-max", type=int, default=2000, help="mnist5k examples before split")
    p.add_argument("--mnist-crop", type=int, default=4, help="mnist5k border pixels cut")
    p.add_argument("--warmup", type=int, default=5, help="first step intervals not timed")
    p.add_argument("--disc-hidden", type=int, default=1024, help="ours' DANN/CDAN width")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/da_vs_skada")
    p.add_argument("--report-only", action="store_true", help="re-render OUT/results.json")
    return p.parse_args(argv)


def render(records: list[dict[str, Any]], args: argparse.Namespace, losses: dict) -> str:
    return (
        compare(records, args.methods, "ours", "skada")
        + "\n"
        + compare(records, args.methods, "ours", "ours-bare")
        + ("\nErrors:\n" + errors(records) if errors(records) else "")
        + f"\nLoss check (same inputs): {losses}\n"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    if args.report_only:  # re-render table.md from an earlier results.json
        saved = json.loads((out / "results.json").read_text())
        report = render(saved["records"], args, saved["loss_check"])
    else:
        torch.set_num_threads(args.threads)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        losses = check_losses()
        print("loss check:", losses, flush=True)
        records = run_all(args, {"args": vars(args), "loss_check": losses})
        report = render(records, args, losses)
        report += f"\nTotal wall time: {time.perf_counter() - t0:.0f} s\n"
    atomic_write_text(out / ("table.md" if not args.report_only else "table_rerendered.md"), report)
    print(report)


if __name__ == "__main__":
    main()
