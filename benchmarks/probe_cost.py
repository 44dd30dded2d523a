"""Cost of a full layer-probe sweep vs one plain forward pass over the same data.

The sweep (``transferkit.diagnostics.probing.layer_probe``) extracts the pooled output of
EVERY layer group in one forward pass per batch, then fits one probe head per group. Its
cost splits into

* extraction: ``extract_features(..., layers=all groups)`` on train + val (content hashing,
  length-sorted batching for text, pooling of every group, the reorder);
* head fits: one head per group (strength grid tuned on val).

The reference is one bare forward pass over the same examples with the same batch size:
``backbone.prepare`` + ``backbone(x)`` under ``torch.inference_mode()`` in input order.
Target (issue "Feature extraction and fine-tuning"): extraction / forward <= 2, i.e. the
sweep costs at most two forward passes plus the head fits. Runs are interleaved and the
median of ``--repeats`` is reported; the in-memory feature cache is cleared before each
sweep so it really extracts.

    .venv/bin/python benchmarks/probe_cost.py                 # packaged:minilm-l6, movies
    .venv/bin/python benchmarks/probe_cost.py --spec test     # tiny in-code backbone
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.data.types import Dataset
from transferkit.diagnostics.probing import ProbeResult, layer_probe
from transferkit.engine.extract import clear_memory_cache


def bare_forward(backbone: Any, x: Any, batch_size: int) -> float:
    """Seconds for one plain forward pass over ``x`` (no hashing, sorting or pooling)."""
    t0 = time.perf_counter()
    backbone.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            backbone(backbone.prepare(x[i : i + batch_size]))
    return time.perf_counter() - t0


def sweep(backbone: Any, train: Dataset, val: Dataset, batch_size: int, head: str) -> ProbeResult:
    clear_memory_cache()
    return layer_probe(backbone, train, val, head=head, batch_size=batch_size)  # type: ignore[arg-type]


def real_case(spec: str, data: str, n: int) -> tuple[Any, Dataset, Dataset]:
    """``n`` random examples of ``data``'s training split (80 % probe-train, 20 % val)."""
    from transferkit.backbones import create_backbone
    from transferkit.data import load_dataset

    pool = load_dataset(data, seed=0).train
    if len(pool) < n:
        raise SystemExit(f"{data} has only {len(pool)} training examples (< {n})")
    idx = np.random.default_rng(0).permutation(len(pool))[:n]  # splits may keep file order
    n_tr = int(0.8 * n)
    return create_backbone(spec), pool.subset(idx[:n_tr]), pool.subset(idx[n_tr:])


def test_case(n: int) -> tuple[Any, Dataset, Dataset]:
    """The in-code TinyVectorBackbone (2 groups) on separable synthetic vectors."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import TinyVectorBackbone

    torch.manual_seed(0)
    bb = TinyVectorBackbone(in_features=64, width=256)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 64)) + y[:, None] * 0.5).astype(np.float32)
    ds = Dataset("synthetic", "tabular", x, y, classes=["a", "b", "c"])
    n_tr = int(0.8 * n)
    return bb, ds.subset(np.arange(n_tr)), ds.subset(np.arange(n_tr, n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default="packaged:minilm-l6", help='backbone spec, or "test"')
    ap.add_argument("--data", default="sentiment/movies")
    ap.add_argument("--n", type=int, default=2000, help="examples in the sweep (train + val)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--head", default="logreg")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.spec == "test":
        bb, train, val = test_case(args.n)
    else:
        bb, train, val = real_case(args.spec, args.data, args.n)
    x_all = train.x + val.x if isinstance(train.x, list) else np.concatenate([train.x, val.x])
    bare_forward(bb, x_all[: args.batch_size], args.batch_size)  # warm-up
    fwd, ext, fits, res = [], [], [], None
    for _ in range(args.repeats):
        fwd.append(bare_forward(bb, x_all, args.batch_size))
        res = sweep(bb, train, val, args.batch_size, args.head)
        ext.append(res.extract_seconds)
        fits.append(sum(res.fit_seconds))
    assert res is not None
    f, e, h = (statistics.median(v) for v in (fwd, ext, fits))
    ratio = e / f
    print(
        f"{res.model} on {args.data if args.spec != 'test' else 'synthetic'}: "
        f"n={len(x_all)} ({res.n_train} train + {res.n_val} val), batch={args.batch_size}, "
        f"{len(res.groups)} layer groups, torch threads={torch.get_num_threads()}"
    )
    print(f"  plain forward pass        {f:8.2f} s")
    print(f"  sweep: extraction         {e:8.2f} s  (all groups, one pass per batch)")
    print(f"  sweep: {len(res.groups)} {args.head} head fits {h:8.2f} s")
    print(f"  sweep total               {e + h:8.2f} s")
    verdict = "OK" if ratio <= 2.0 else "ABOVE TARGET"
    print(f"  ratio extraction / forward = {ratio:.2f}  ({verdict} <= 2)")
    curve = ", ".join(f"{g}={m:.3f}" for g, m in zip(res.groups, res.val_metric, strict=True))
    print(
        f"  val {res.metric}: {curve}; recommended {res.groups[res.best_index]} "
        f"(freeze_to={res.freeze_to})"
    )


if __name__ == "__main__":
    main()
