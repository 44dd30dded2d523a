"""Learning-rate schedules as multiplicative factors ``f(s)`` for stock ``LambdaLR``.

``s`` counts optimizer steps already taken (0 for the first step), ``T`` is the total
number of optimizer steps and ``W`` the warmup length. The lr used by step ``s`` in a param
group is ``group_lr * f(s)``: per-group multipliers put into each group's ``lr`` by
``Method.param_groups`` are kept at every step.

* linear warmup (all but slanted triangular): ``f(s) = (s + 1) / (W + 1)`` for ``s < W``;
* ``constant``: ``f(s) = 1`` after warmup;
* ``cosine``: ``f(s) = (1 + cos(pi * (s - W) / (T - W))) / 2`` after warmup;
* ``onecycle`` (Smith & Topin, "Super-Convergence", 2018, arXiv:1708.07120; the same
  two-phase cosine curve as ``torch.optim.lr_scheduler.OneCycleLR``): cosine from
  ``1/div`` up to ``1`` over steps ``0 .. W-1``, then cosine down to ``1/(div * final_div)``
  at step ``T-1``; ``W`` defaults to ``0.3 T``;
* ``slanted_triangular`` (Howard & Ruder, "Universal Language Model Fine-tuning", ACL 2018,
  eq. 3): ``cut = floor(T * cut_frac)``, ``p = s / cut`` for ``s < cut`` else
  ``1 - (s - cut) / (cut * (1 / cut_frac - 1))``, ``f(s) = (1 + p (ratio - 1)) / ratio``.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from transferkit.engine.config import TrainConfig


def _cos_anneal(start: float, end: float, pct: float) -> float:
    """Cosine interpolation from ``start`` (pct 0) to ``end`` (pct 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


class ScheduleFactor:
    """Callable ``step -> factor`` for one schedule; plain attributes, so it checkpoints.

    ``LambdaLR.state_dict`` stores the attributes of callable objects; they are all numbers
    or strings here, which keeps the scheduler state loadable with ``weights_only=True``.
    """

    def __init__(
        self,
        kind: str,
        total_steps: int,
        warmup_steps: int,
        *,
        cut_frac: float = 0.1,
        ratio: float = 32.0,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.kind = kind
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))
        self.cut_frac = float(cut_frac)
        self.ratio = float(ratio)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step: int) -> float:
        if self.kind == "slanted_triangular":
            return self._slanted(step)
        if self.kind == "onecycle":
            return self._onecycle(step)
        w = self.warmup_steps
        if step < w:
            return (step + 1) / (w + 1)
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            p = min((step - w) / max(1, self.total_steps - w), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * p))
        raise ValueError(f"unknown schedule {self.kind!r}")

    def _onecycle(self, step: int) -> float:
        initial = 1.0 / self.div_factor
        final = initial / self.final_div_factor
        w = self.warmup_steps if self.warmup_steps > 0 else round(0.3 * self.total_steps)
        up_end = float(w - 1)
        if up_end > 0 and step <= up_end:
            return _cos_anneal(initial, 1.0, step / up_end)
        down_len = (self.total_steps - 1) - max(up_end, 0.0)
        pct = (step - max(up_end, 0.0)) / down_len if down_len > 0 else 1.0
        return _cos_anneal(1.0, final, min(max(pct, 0.0), 1.0))

    def _slanted(self, step: int) -> float:
        cut = max(1, math.floor(self.total_steps * self.cut_frac))
        up = step / cut
        down = 1.0 - (step - cut) / (cut * (1.0 / self.cut_frac - 1.0))
        p = max(up if step < cut else down, 0.0)
        return (1.0 + p * (self.ratio - 1.0)) / self.ratio


def schedule_factor(config: TrainConfig, total_steps: int) -> ScheduleFactor:
    """The factor function of ``config.schedule`` for a run of ``total_steps`` steps."""
    return ScheduleFactor(
        config.schedule,
        total_steps,
        config.warmup_for(total_steps),
        cut_frac=config.cut_frac,
        ratio=config.stlr_ratio,
        div_factor=config.onecycle_div_factor,
        final_div_factor=config.onecycle_final_div_factor,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> LambdaLR:
    """A ``LambdaLR`` applying the same factor to every param group's own lr."""
    return LambdaLR(optimizer, schedule_factor(config, total_steps))
