"""Feature-extraction throughput: transferkit's extract_features vs a bare forward loop.

Both sides run the same backbone, the same inputs and the same batch size; the bare loop
is ``prepare`` + ``backbone(x)`` under ``torch.inference_mode()`` in input order. Ours adds
the cache key (content hash of weights and inputs), length-sorted batching for text, and
the reorder. Runs are interleaved and the median of ``--repeats`` is reported.

    .venv/bin/python benchmarks/extract.py [--n 512] [--repeats 3]

Target (issue "Foundation II"): ratio ours/bare >= 0.95 in examples per second.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from transferkit.backbones import create_backbone
from transferkit.engine.extract import clear_memory_cache, extract_features


def bare(backbone: Any, x: Any, bs: int) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        backbone.eval()
        for i in range(0, len(x), bs):
            backbone(backbone.prepare(x[i : i + bs]))
    return time.perf_counter() - t0


def ours(backbone: Any, x: Any, bs: int) -> float:
    clear_memory_cache()
    t0 = time.perf_counter()
    extract_features(backbone, x, batch_size=bs)
    return time.perf_counter() - t0


def texts(n: int) -> list[str]:
    from transferkit.data import load_dataset

    s = load_dataset("sentiment/tweets", seed=0)
    return list(s.train.x[:n])


def images(n: int) -> np.ndarray:
    from skimage import data

    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    from PIL import Image

    arr = [np.asarray(Image.fromarray(p).resize((256, 256))) for p in photos]
    return np.stack([arr[i % len(arr)] for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--n-images", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.manual_seed(0)
    cases = [
        ("packaged:minilm-l6", texts(args.n)),
        ("packaged:efficientnet-lite0", images(args.n_images)),
    ]
    for spec, x in cases:
        bb = create_backbone(spec)
        bare(bb, x[: args.batch_size], args.batch_size)  # warm-up
        t_bare, t_ours = [], []
        for _ in range(args.repeats):
            t_bare.append(bare(bb, x, args.batch_size))
            t_ours.append(ours(bb, x, args.batch_size))
        b, o = statistics.median(t_bare), statistics.median(t_ours)
        print(
            f"{spec}: n={len(x)} batch={args.batch_size} bare {len(x) / b:.1f} ex/s, "
            f"extract_features {len(x) / o:.1f} ex/s, ratio ours/bare = {b / o:.3f} "
            f"({'OK' if b / o >= 0.95 else 'BELOW TARGET'} >= 0.95)"
        )


if __name__ == "__main__":
    main()
