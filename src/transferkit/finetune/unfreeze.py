"""Gradual unfreezing as a resumable trainer callback.

Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text Classification" (ULMFiT),
https://arxiv.org/abs/1801.06146, section 3.3: start with every backbone layer group frozen
(only the head trains), then unfreeze one more group every ``every`` epochs, from the output
side down, so the most general (input-side) features are disturbed last or never.

With ``n`` layer groups and a floor of ``f`` groups that never unfreeze (``freeze=f``), the
number of unfrozen groups during epoch ``e`` (0-based) is

.. math::

    u(e) = \\min(\\lfloor e / \\text{every} \\rfloor,\\; n - f)

and groups ``n-u .. n-1`` train. ``u`` is a pure function of the epoch, applied at every
``on_epoch_start`` (also when an epoch resumes), so the trainable set after a resume equals
the uninterrupted run's; the callback's ``state_dict`` carries ``u`` and the schedule's
settings, is applied on ``load_state_dict`` and refuses a checkpoint written with another
schedule. The optimizer must already hold the frozen parameters (they have no gradient,
so it skips them) — ``finetune``'s ``param_groups`` does that when unfreezing is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transferkit.backbones.base import Backbone
from transferkit.engine.callbacks import Callback
from transferkit.errors import CheckpointError, ConfigError
from transferkit.finetune.groups import set_groups_trainable

if TYPE_CHECKING:
    from transferkit.engine.trainer import Trainer

log = logging.getLogger(__name__)


def unfrozen_count(epoch: int, every: int, n_groups: int, floor: int = 0) -> int:
    """``u(e) = min(e // every, n_groups - floor)``: groups trainable in 0-based ``epoch``."""
    if every < 1 or not 0 <= floor <= n_groups or epoch < 0:
        raise ValueError(f"bad schedule: epoch={epoch}, every={every}, n={n_groups}, f={floor}")
    return min(epoch // every, n_groups - floor)


def trainable_flags(unfrozen: int, n_groups: int) -> list[bool]:
    """``[False] * (n - u) + [True] * u``: the top ``unfrozen`` groups train."""
    return [i >= n_groups - unfrozen for i in range(n_groups)]


class GradualUnfreezing(Callback):
    """Unfreeze ``backbone``'s layer groups from the top, one every ``every`` epochs.

    Args:
        backbone: the backbone whose layer groups are (un)frozen.
        every: epochs between two unfreezing events (>= 1).
        floor: the first ``floor`` groups never unfreeze.
        on_change: called after the trainable set changed (e.g. to put the BatchNorm of
            frozen groups back into eval mode and the unfrozen ones into train mode).
    """

    def __init__(
        self,
        backbone: Backbone,
        every: int,
        floor: int = 0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.backbone = backbone
        self.n_groups = len(backbone.layer_groups())
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(
                f"gradual_unfreeze_every={every!r} must be an integer >= 1",
                where="method.params.gradual_unfreeze_every",
                fix="unfreeze one layer group every N epochs, e.g. 1",
            )
        if not 0 <= floor < self.n_groups:
            raise ConfigError(
                f"gradual unfreezing with {floor} of {self.n_groups} layer groups frozen for "
                "good leaves nothing to unfreeze",
                where="method.params.freeze",
                fix=f'use freeze "none" or an integer below {self.n_groups}',
            )
        self.every, self.floor, self.on_change = every, floor, on_change
        self.unfrozen = 0
        self.events: list[list[int]] = []  # [epoch, unfrozen] at each change
        self.apply(0)

    def apply(self, unfrozen: int) -> None:
        """Make exactly the top ``unfrozen`` groups trainable."""
        set_groups_trainable(self.backbone, trainable_flags(unfrozen, self.n_groups))
        self.unfrozen = unfrozen
        if self.on_change is not None:
            self.on_change()

    def trainable_groups(self) -> list[bool]:
        """Whether each layer group trains now (input -> output)."""
        return trainable_flags(self.unfrozen, self.n_groups)

    def on_epoch_start(self, trainer: Trainer) -> None:
        u = unfrozen_count(trainer.epoch, self.every, self.n_groups, self.floor)
        if u != self.unfrozen:
            names = [g.name for g in self.backbone.layer_groups()[self.n_groups - u :]]
            log.info("epoch %d: layer groups %s train", trainer.epoch + 1, ", ".join(names))
            self.events.append([trainer.epoch, u])
        self.apply(u)  # also re-applied when unchanged: BN modes follow the train() call

    def state_dict(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "floor": self.floor,
            "n_groups": self.n_groups,
            "unfrozen": self.unfrozen,
            "events": [list(e) for e in self.events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = {k: state.get(k) for k in ("every", "floor", "n_groups")}
        now = {"every": self.every, "floor": self.floor, "n_groups": self.n_groups}
        if saved != now:
            raise CheckpointError(
                f"the checkpoint was written with gradual unfreezing {saved}, now {now}",
                where="method.params (gradual_unfreeze_every, freeze)",
                fix="resume with the original method parameters and backbone",
            )
        self.events = [list(e) for e in state["events"]]
        self.apply(int(state["unfrozen"]))
