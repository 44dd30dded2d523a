"""Trainer overhead: ``Trainer.fit`` vs a hand-written PyTorch loop doing the same work.

Both sides train the same MLP (784 -> H -> H -> 10, ReLU, dropout; a step takes ~5-20 ms on
two CPU cores) from the same initial weights on the same synthetic data, with the same
batch size, number of steps, shuffling DataLoader + collate function and AdamW (weight
decay on weights, none on biases). The hand loop reads the loss every ``log_every`` steps
(``.item()``), as the trainer's default logging does; checkpointing and validation are
off. Each timing covers everything ``fit`` does (Accelerate set-up, optimizer and loader
construction, the loop, the log file). Runs are interleaved (hand, trainer, trainer, hand,
...) after one untimed warm-up of each, and medians are compared.

    .venv/bin/python benchmarks/overhead.py [--steps 100] [--hidden 768] [--repeats 5]
                                            [--threads 1]

It uses one intra-op thread by default: on a shared 2-core machine two OpenMP threads
that compete with other processes make every step ~10x slower and the timings useless.

Target: median trainer / median hand <= 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferkit.engine import TrainConfig, Trainer
from transferkit.methods.base import Method


class MLPClassifier(Method):
    name = "bench-mlp"

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(784, hidden), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden, 10),
        )  # fmt: skip

    def predict(self, x: Any) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(self.net(batch["x"]), batch["y"])}


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    xs, ys = zip(*items, strict=True)
    return {"x": torch.stack(xs), "y": torch.stack(ys)}


def hand_loop(method: Method, data: TensorDataset, bs: int, lr: float, log_every: int) -> None:
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(data, batch_size=bs, shuffle=True, generator=gen, collate_fn=collate)
    decay = [p for p in method.parameters() if p.ndim >= 2]
    no_decay = [p for p in method.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        fused=True,  # the Trainer uses torch's fused AdamW too: compare like with like
    )
    method.train()
    for step, batch in enumerate(loader, start=1):
        loss = method.training_step(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0:
            loss.item()


def trainer_fit(method: Method, data: TensorDataset, bs: int, lr: float, log_every: int) -> None:
    config = TrainConfig(
        optimizer="adamw", lr=lr, weight_decay=0.01, schedule="constant", epochs=1,
        batch_size=bs, mixed_precision="no", save_checkpoints=False, log_every_steps=log_every,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(method, data, collate, config, run_dir, quiet=True).fit()


def timed(fn: Any, *args: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn(*args)``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bs, lr = args.batch_size, 1e-3
    g = torch.Generator().manual_seed(0)
    n = args.steps * bs
    data = TensorDataset(torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))
    torch.manual_seed(0)
    init = MLPClassifier(args.hidden).state_dict()

    def fresh() -> MLPClassifier:
        m = MLPClassifier(args.hidden)
        m.load_state_dict(init)
        return m

    runs = {"hand": hand_loop, "trainer": trainer_fit}
    wall: dict[str, list[float]] = {"hand": [], "trainer": []}
    cpu: dict[str, list[float]] = {"hand": [], "trainer": []}
    for fn in runs.values():  # warm-up: first optimizer construction, allocator, imports
        fn(fresh(), data, bs, lr, args.log_every)
    for r in range(args.repeats):
        order = ["hand", "trainer"] if r % 2 == 0 else ["trainer", "hand"]
        for name in order:
            w, c = timed(runs[name], fresh(), data, bs, lr, args.log_every)
            wall[name].append(w)
            cpu[name].append(c)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_ratio = statistics.median(cpu["trainer"]) / statistics.median(cpu["hand"])
    for name, ts in wall.items():
        print(f"{name:8s} wall " + " ".join(f"{t:.3f}" for t in ts) + " s")
    print(
        f"overhead: trainer {med['trainer']:.3f} s vs hand loop {med['hand']:.3f} s for "
        f"{args.steps} steps ({1000 * med['hand'] / args.steps:.1f} ms/step, median of "
        f"{args.repeats}, {args.threads} thread(s)) -> ratio {med['trainer'] / med['hand']:.3f} "
        f"(target <= 1.05; CPU-time ratio {cpu_ratio:.3f})"
    )


if __name__ == "__main__":
    main()
