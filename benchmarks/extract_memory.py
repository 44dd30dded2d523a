"""Peak memory of feature extraction and teacher caching: 10k vs 100k examples.

Each (mode, size) runs in a fresh subprocess, which reports its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the extraction, and its RSS just
before it (imports, model and inputs loaded) as the baseline. The model is ``tk:mlp``
(``--features`` inputs -> ``--dim`` features), the inputs random float32 vectors, so the
output (``N x dim x 4`` bytes: 41 MB at 10k, 410 MB at 100k with dim 1024) dominates.

Modes:

* ``stream``  — ``extract_features(..., cache_dir=DIR)``: batches stream into ``.npy`` files
  on disk; the result is a read-only memory map.
* ``teacher`` — ``teacher_outputs(..., cache_dir=DIR)`` (logits + embedding), streamed into
  one safetensors file.
* ``memory``  — ``extract_features`` without ``cache_dir``: the result lives in RAM (one
  preallocated array), so memory grows with N by design.
* ``concat``  — the previous implementation's pattern, for contrast: keep every batch,
  ``np.concatenate``, then reorder (three copies of the result at the peak).

    .venv/bin/python benchmarks/extract_memory.py [--sizes 10000 100000] [--dim 1024]

Target (issue #9): peak RSS ratio 100k / 10k close to 1 for the streamed modes, not 10.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

MODES = ("stream", "teacher", "memory", "concat")


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _concat_extract(backbone: Any, x: Any, batch_size: int) -> Any:
    """The pre-streaming code path: list of batches -> concatenate -> reorder."""
    import numpy as np
    import torch

    order = np.arange(len(x))
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            chunks.append(backbone(backbone.prepare(x[idx])).float().numpy())
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return np.concatenate(chunks)[inverse]


def child(mode: str, n: int, features: int, dim: int, batch_size: int) -> dict[str, float]:
    """Run one extraction in this process and measure it."""
    import numpy as np
    import torch
    from torch import nn

    from transferkit.backbones import create_backbone
    from transferkit.distill import FrozenTeacher, teacher_outputs
    from transferkit.engine.extract import extract_features

    torch.manual_seed(0)
    backbone = create_backbone("tk:mlp", in_features=features, hidden=[256, dim]).eval()
    x = np.random.default_rng(0).normal(size=(n, features)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="tk-extract-mem-") as cache:
        base = _rss_mib()
        t0 = time.perf_counter()
        if mode == "stream":
            out = extract_features(backbone, x, batch_size=batch_size, cache_dir=cache)
        elif mode == "teacher":
            teacher = FrozenTeacher(backbone, nn.Linear(dim, 10))
            out = teacher_outputs(teacher, x, batch_size=batch_size, cache_dir=cache)["t_embed"]
        elif mode == "memory":
            out = extract_features(backbone, x, batch_size=batch_size)
        else:
            out = _concat_extract(backbone, x, batch_size)
        seconds = time.perf_counter() - t0
        assert out.shape == (n, dim)
        return {"base_mib": base, "peak_mib": _peak_mib(), "seconds": seconds}


def parent(args: argparse.Namespace) -> None:
    rows = {}
    for mode in args.modes:
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--child", mode, str(n)]
            cmd += ["--features", str(args.features), "--dim", str(args.dim)]
            cmd += ["--batch-size", str(args.batch_size)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise SystemExit(f"{mode} {n} failed:\n{res.stderr}")
            rows[mode, n] = json.loads(res.stdout.strip().splitlines()[-1])
    small, large = args.sizes
    out_mb = {n: n * args.dim * 4 / 2**20 for n in args.sizes}
    print(
        f"tk:mlp {args.features}->{args.dim}, batch {args.batch_size}; output size "
        f"{out_mb[small]:.0f} MiB at {small}, {out_mb[large]:.0f} MiB at {large}"
    )
    print(
        f"{'mode':8} | {'peak RSS ' + str(small):>16} | {'peak RSS ' + str(large):>17} | "
        f"{'ratio':>5} | {'extra over baseline':>22} | {'ratio':>5} | seconds"
    )
    for mode in args.modes:
        a, b = rows[mode, small], rows[mode, large]
        ea, eb = a["peak_mib"] - a["base_mib"], b["peak_mib"] - b["base_mib"]
        print(
            f"{mode:8} | {a['peak_mib']:12.0f} MiB | {b['peak_mib']:13.0f} MiB | "
            f"{b['peak_mib'] / a['peak_mib']:5.2f} | {f'{ea:.0f} -> {eb:.0f} MiB':>22} | "
            f"{eb / max(ea, 1.0):5.2f} | {a['seconds']:.1f} / {b['seconds']:.1f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        mode, n = args.child
        print(json.dumps(child(mode, int(n), args.features, args.dim, args.batch_size)))
    else:
        parent(args)


if __name__ == "__main__":
    main()
