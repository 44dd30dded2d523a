"""Run a tiny multi-task training (one process per rank under torchrun) and save weights.

Usage: ``torchrun --nproc_per_node N tests/mtl/ddp_script.py OUT ACCUM BATCH WEIGHTING...``; one
run per weighting, weights saved as ``OUT/<weighting>.pt``.
With N processes and per-process batch 4, the global batch of an optimizer step equals a
single process with ``ACCUM = N`` (same windows of the same permutation), so the final
weights must agree up to float rounding.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.mtl.helpers import MultiTaskData, collate, make_ln_mtl
from transferkit.engine import TrainConfig, Trainer


def run(out: Path, weighting: str, accum: int, batch: int) -> None:
    method = make_ln_mtl(weighting, architecture="mmoe" if weighting == "mgda" else "hard")
    cfg = TrainConfig(
        mixed_precision="no",
        cpu=True,
        lr=0.05,
        batch_size=batch,
        epochs=2,
        seed=3,
        grad_accum_steps=accum,
        log_every_steps=1,
        save_checkpoints=False,
    )
    trainer = Trainer(
        method,
        MultiTaskData(32, masked=weighting != "mgda"),
        collate,
        cfg,
        out / weighting,
        quiet=True,
    )
    result = trainer.fit()
    if trainer.is_main_process:
        torch.save(
            {
                "state": method.state_dict(),
                "steps": result.global_step,
                "processes": trainer.accelerator.num_processes,
            },
            out / f"{weighting}.pt",
        )


def main() -> None:
    torch.set_num_threads(1)
    out, accum, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for weighting in sys.argv[4:]:
        run(out, weighting, accum, batch)


if __name__ == "__main__":
    main()
