"""Subprocess worker for the SIGKILL resume test.

    python resume_script.py RUN_DIR OUT_FILE [--resume] [--sleep S] [--reference DIR OUT]

Trains the tiny MLP (with dropout) with frequent checkpoints, sleeping ``--sleep`` seconds
after every optimizer step so that the parent can kill it mid-epoch, then writes the final
weights to OUT_FILE (safetensors). ``--reference`` then also runs the same training,
uninterrupted, in DIR and writes its weights to OUT (one interpreter start saved).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import save_file

from tests.engine.tiny import collate, make_blobs, make_method
from transferkit.engine import Callback, TrainConfig, Trainer


class Slow(Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, trainer: Any) -> None:
        time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--reference", nargs=2, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train(args.run_dir, args.out, args.resume, args.sleep)
    if args.reference:
        train(args.reference[0], args.reference[1], False, 0.0)


def train(run_dir: str, out: str, resume: bool, sleep: float) -> None:
    config = TrainConfig(
        mixed_precision="no",
        lr=0.05,
        batch_size=8,
        grad_accum_steps=2,
        epochs=3,
        schedule="cosine",
        warmup_ratio=0.1,
        clip_grad_norm=1.0,
        checkpoint_every_steps=3,
        log_every_steps=3,
        seed=11,
    )
    method = make_method(seed=5, dropout=0.3)
    trainer = Trainer(
        method,
        make_blobs(128, seed=4),
        collate,
        config,
        run_dir,
        callbacks=[Slow(sleep)],
        quiet=True,
    )
    trainer.fit(resume=resume)
    save_file({k: v.contiguous() for k, v in method.state_dict().items()}, out)


if __name__ == "__main__":
    main()
