"""Training settings: :class:`TrainConfig`, validated on construction.

The experiment's ``train:`` section maps onto it field by field (early stopping is
flattened into ``early_stopping`` / ``monitor`` / ``mode`` / ``patience`` / ``min_delta`` /
``restore_best``). Every invalid value raises :class:`~transferkit.errors.ConfigError`
naming the field and the accepted values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from transferkit.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle", "slanted_triangular")
PRECISIONS = ("no", "bf16", "fp16", "auto")

# Fields that may change between a run and its resume without breaking exactness.
RESUME_MUTABLE = frozenset(
    {
        "log_every_steps",
        "checkpoint_every_steps",
        "checkpoint_min_interval_s",
        "tensorboard",
        "num_workers",
        "save_checkpoints",
        # what to do about a non-finite loss from now on (the rollbacks already made, with
        # their skipped batches and lowered learning rate, are in the checkpoint)
        "on_nonfinite",
        "max_rollbacks",
        "rollback_skip_batches",
        "rollback_lr_factor",
    }
)
NONFINITE = ("stop", "rollback")


@dataclass
class TrainConfig:
    """Everything the :class:`~transferkit.engine.Trainer` needs besides method and data.

    Optimisation: ``optimizer`` (``"adamw"`` | ``"sgd"`` with ``momentum``/``nesterov``),
    base ``lr`` (each method param group carries its own multiple of it), ``weight_decay``
    (never applied to biases or normalisation parameters), ``clip_grad_norm`` (global L2
    norm, optional), ``grad_accum_steps`` micro-batches per optimizer step.

    Schedule (a multiplicative factor on every group's own lr, see ``engine.schedules``):
    ``"constant"`` (after optional linear warmup), ``"cosine"`` (linear warmup then cosine
    to 0), ``"onecycle"`` (Smith & Topin 2018; the rising phase is the warmup, 30% of the
    steps when no warmup is set) or ``"slanted_triangular"`` (Howard & Ruder 2018, ULMFiT:
    ``cut_frac``, ``stlr_ratio``). Warmup length: ``warmup_steps`` if set, otherwise
    ``ceil(warmup_ratio * total_steps)``.

    Length: ``epochs``, optionally capped by ``max_steps`` optimizer steps.

    Early stopping (needs a ``val_fn``): stop when ``monitor`` has not improved by more
    than ``min_delta`` (in direction ``mode``) for ``patience`` evaluations; with
    ``restore_best`` the best weights are put back at the end.

    Checkpoints (``save_checkpoints``): every ``checkpoint_every_steps`` optimizer steps
    and at every epoch end, except that an epoch-end checkpoint is skipped when the previous
    one is less than ``checkpoint_min_interval_s`` seconds old (short epochs of a large
    model would otherwise spend more time writing optimizer state than training; a
    resume then restarts from the previous checkpoint, still exactly).
    ``mixed_precision="auto"`` means bf16 on a CUDA device that supports it, otherwise
    full precision.

    Non-finite loss (or weights): ``on_nonfinite="stop"`` raises a
    :class:`~transferkit.errors.TrainingError` and keeps the last good checkpoint (a later
    ``fit(resume=True)`` continues from it). ``"rollback"`` (needs ``save_checkpoints``)
    restores the last good checkpoint in place (weights, optimizer, scheduler, RNG,
    counters, callback states) and goes on, at most ``max_rollbacks`` times per run: with
    ``rollback_skip_batches`` the micro-batches of the optimizer step whose loss was
    non-finite are skipped from then on (in that epoch; on resume too), and every learning
    rate is multiplied by ``rollback_lr_factor`` (in (0, 1]) at each rollback. A rollback
    run writes a checkpoint before its first step, so there is always one to return to.
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Literal["constant", "cosine", "onecycle", "slanted_triangular"] = "cosine"
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    cut_frac: float = 0.1
    stlr_ratio: float = 32.0
    onecycle_div_factor: float = 25.0
    onecycle_final_div_factor: float = 1e4
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "auto"
    cpu: bool = False
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = False
    log_every_steps: int = 10
    save_checkpoints: bool = True
    checkpoint_every_steps: int | None = None
    checkpoint_min_interval_s: float = 0.0
    eval_every_epochs: int = 1
    early_stopping: bool = False
    monitor: str = "val_loss"
    mode: Literal["max", "min"] = "min"
    patience: int = 3
    min_delta: float = 0.0
    restore_best: bool = True
    on_nonfinite: Literal["stop", "rollback"] = "stop"
    max_rollbacks: int = 3
    rollback_skip_batches: bool = True
    rollback_lr_factor: float = 1.0
    tensorboard: bool = False
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        _check_choices(self)
        _check_numbers(self)
        _check_optional(self)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            _fail("nesterov", self.nesterov, "nesterov needs optimizer='sgd' and momentum > 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON/YAML-friendly; ``betas`` as a list)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown training setting(s) {', '.join(unknown)}",
                where="TrainConfig",
                fix=f"use only: {', '.join(sorted(known))}",
            )
        return cls(**{**d, "betas": tuple(d.get("betas", (0.9, 0.999)))})

    def resolved_precision(self) -> str:
        """``"no"``, ``"bf16"`` or ``"fp16"`` for this machine (resolves ``"auto"``)."""
        cuda = torch.cuda.is_available() and not self.cpu
        if self.mixed_precision == "auto":
            return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
        if self.mixed_precision == "fp16" and not cuda:
            _fail("mixed_precision", "fp16", "fp16 needs a CUDA GPU; use 'bf16' or 'no' on a CPU")
        if self.mixed_precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            _fail("mixed_precision", "bf16", "this GPU has no bf16 support; use 'fp16' or 'no'")
        return self.mixed_precision

    def warmup_for(self, total_steps: int) -> int:
        """Warmup length in optimizer steps for a run of ``total_steps`` steps."""
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        return min(math.ceil(self.warmup_ratio * total_steps), total_steps)


def check_trainer_inputs(method: Any, config: Any, val_fn: Any) -> None:
    """ConfigError unless ``method`` is a Method, ``config`` a TrainConfig, and early
    stopping has the validation function it monitors."""
    from torch import nn

    if not isinstance(method, nn.Module) or not callable(getattr(method, "training_step", None)):
        raise ConfigError(
            f"{type(method).__name__} is not a Method",
            where="Trainer(method)",
            fix="pass a transferkit.methods.base.Method",
        )
    if not isinstance(config, TrainConfig):
        raise ConfigError(
            "config is not a TrainConfig",
            where="Trainer(config)",
            fix="build it with transferkit.engine.TrainConfig(...)",
        )
    if config.early_stopping and val_fn is None:
        raise ConfigError(
            "early stopping needs validation metrics but no val_fn was given",
            where="TrainConfig.early_stopping",
            fix="pass val_fn=... or set early_stopping=False",
        )


def _fail(name: str, value: Any, fix: str) -> None:
    raise ConfigError(
        f"invalid training setting {name}={value!r}", where=f"TrainConfig.{name}", fix=fix
    )


def _check_choices(c: TrainConfig) -> None:
    for name, allowed in (
        ("optimizer", OPTIMIZERS),
        ("schedule", SCHEDULES),
        ("mixed_precision", PRECISIONS),
        ("mode", ("max", "min")),
        ("on_nonfinite", NONFINITE),
    ):
        value = getattr(c, name)
        if value not in allowed:
            _fail(name, value, f"use one of {', '.join(allowed)}")
    if not isinstance(c.monitor, str) or not c.monitor:
        _fail("monitor", c.monitor, "name a validation metric such as 'val_accuracy'")


def _check_numbers(c: TrainConfig) -> None:
    positive = ("lr", "eps", "onecycle_div_factor", "onecycle_final_div_factor")
    for name in positive:
        v = getattr(c, name)
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            _fail(name, v, "use a finite number > 0")
    for name in ("weight_decay", "min_delta"):
        v = getattr(c, name)
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            _fail(name, v, "use a finite number >= 0")
    for name, lo, hi in (("momentum", 0.0, 1.0), ("warmup_ratio", 0.0, 1.0), ("betas", 0.0, 1.0)):
        values = getattr(c, name) if name == "betas" else (getattr(c, name),)
        if not all(lo <= float(v) < hi for v in values):
            _fail(name, getattr(c, name), f"use values in [{lo}, {hi})")
    if not 0 < c.cut_frac < 1:
        _fail("cut_frac", c.cut_frac, "use a fraction in (0, 1), e.g. 0.1")
    if not c.stlr_ratio >= 1:
        _fail("stlr_ratio", c.stlr_ratio, "use a ratio >= 1, e.g. 32")
    for name in (
        "epochs",
        "batch_size",
        "grad_accum_steps",
        "log_every_steps",
        "eval_every_epochs",
        "patience",
        "max_rollbacks",
    ):
        v = getattr(c, name)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            _fail(name, v, "use an integer >= 1")
    for name in ("seed", "num_workers"):
        v = getattr(c, name)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            _fail(name, v, "use an integer >= 0")


def _check_optional(c: TrainConfig) -> None:
    v = c.checkpoint_min_interval_s
    if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
        _fail("checkpoint_min_interval_s", v, "use a number of seconds >= 0")
    for name in ("max_steps", "checkpoint_every_steps"):
        v = getattr(c, name)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            _fail(name, v, "use an integer >= 1, or leave it unset")
    if c.warmup_steps is not None and not (isinstance(c.warmup_steps, int) and c.warmup_steps >= 0):
        _fail("warmup_steps", c.warmup_steps, "use an integer >= 0, or leave it unset")
    v = c.clip_grad_norm
    if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
        _fail("clip_grad_norm", v, "use a number > 0, or leave it unset to disable clipping")
    _check_rollback(c)


def _check_rollback(c: TrainConfig) -> None:
    f = c.rollback_lr_factor
    if isinstance(f, bool) or not (isinstance(f, int | float) and 0 < f <= 1):
        _fail("rollback_lr_factor", f, "use a factor in (0, 1], e.g. 0.5 (1 keeps the rate)")
    if not isinstance(c.rollback_skip_batches, bool):
        _fail("rollback_skip_batches", c.rollback_skip_batches, "use true or false")
    if c.on_nonfinite != "rollback":
        return
    if not c.save_checkpoints:
        _fail(
            "on_nonfinite",
            c.on_nonfinite,
            "a rollback returns to the last checkpoint: set save_checkpoints=True, or use "
            "on_nonfinite='stop'",
        )
    if not c.rollback_skip_batches and f == 1:
        _fail(
            "rollback_lr_factor",
            f,
            "a rollback that neither skips the offending batches nor lowers the learning "
            "rate would replay the same steps into the same non-finite loss: set "
            "rollback_skip_batches=True or a rollback_lr_factor < 1",
        )
