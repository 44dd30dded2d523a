"""Task-specific adapters: one peft adapter per task inside one frozen backbone.

Every task gets its own adapter (LoRA by default; IA3 and LoHa work the same way), named
after the task and injected into the same layers with peft's multi-adapter support
(``inject_adapter_in_model(config, backbone, adapter_name=task)`` once per task). During
task ``t``'s forward pass only adapter ``t`` is active (``BaseTunerLayer.set_adapter``), so

    ``f_t = backbone_{W + dW_t}(x)``  (LoRA: ``dW_t = (alpha / r) B_t A_t``)

and task ``t``'s loss reaches only adapter ``t`` (and whatever else of the backbone is left
trainable, e.g. norms with ``train_norms``). The math and the default target layers are
those of :mod:`transferkit.finetune.peft`. Each task costs one backbone pass per step.

peft's ``set_adapter`` also freezes the inactive adapters (``requires_grad=False``); a
task's adapter must stay trainable while the other tasks run, so the flags are put back
right after each switch. Norm layers whose parameters are all frozen keep their running
statistics fixed (eval mode) while training: the per-task passes would otherwise update
them once per task and step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from peft import inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import Tensor, nn

from transferkit.backbones.base import Backbone, Prepared
from transferkit.errors import ConfigError
from transferkit.finetune import peft as tkpeft
from transferkit.mtl.architectures import TaskArchitecture, last_group_parameters

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def inject_task_adapters(
    backbone: Backbone, task_names: Sequence[str], cfg: tkpeft.PeftConfig
) -> None:
    """Inject one ``cfg`` adapter per task (named after it) and freeze the base weights."""
    where = "method.params.adapters"
    if tkpeft.has_adapters(backbone):
        raise ConfigError(
            f"{backbone.spec} already holds peft adapters",
            where=where,
            fix="use a backbone without adapters (merge_peft first)",
        )
    if cfg.target_modules is None:
        targets = tkpeft.default_target_modules(backbone, cfg.kind)
        if not targets:
            raise ConfigError(
                f"{backbone.spec} has no layer that {cfg.kind} can adapt",
                where=where,
                fix="name target_modules explicitly, or use architecture hard",
            )
    else:
        targets = tkpeft._resolve(backbone, cfg.target_modules, cfg.kind, backbone.spec)
    ff = tkpeft._feedforward(backbone, targets, cfg, backbone.spec) if cfg.kind == "ia3" else []
    old = [g.param_names for g in backbone.layer_groups()]
    flags = {n: p.requires_grad for n, p in backbone.named_parameters()}
    try:
        for name in task_names:
            inject_adapter_in_model(tkpeft._peft_config(cfg, targets, ff), backbone, name)
            if hasattr(backbone, "peft_config"):
                del backbone.peft_config
        tkpeft._sync_layer_groups(backbone, old)
    except (ValueError, TypeError) as exc:
        tkpeft._rollback(backbone, flags)
        raise ConfigError(f"peft could not inject {cfg.kind}: {exc}", where=where) from exc
    tkpeft._set_trainable(backbone, cfg.train_norms)


def _adapter_params(layer: BaseTunerLayer, task: str) -> list[nn.Parameter]:
    """Parameters of adapter ``task`` inside one peft layer (ModuleDict or ParameterDict)."""
    out: list[nn.Parameter] = []
    for attr in layer.adapter_layer_names:
        holder = getattr(layer, attr, None)
        if isinstance(holder, nn.ModuleDict | nn.ParameterDict) and task in holder:
            item = holder[task]
            out.extend(item.parameters() if isinstance(item, nn.Module) else [item])
    return out


class TaskAdapters(TaskArchitecture):
    """One adapter per task in a shared frozen backbone (module docstring).

    Args:
        backbone: the backbone (adapters are injected in place).
        task_names: one adapter per task, named after it.
        cfg: adapter settings (:class:`transferkit.finetune.peft.PeftConfig`).
    """

    shares_representation: ClassVar[bool] = False

    def __init__(
        self, backbone: Backbone, task_names: Sequence[str], cfg: tkpeft.PeftConfig
    ) -> None:
        super().__init__(backbone, task_names)
        inject_task_adapters(backbone, self.task_names, cfg)
        self._tuners = [m for m in backbone.modules() if isinstance(m, BaseTunerLayer)]
        self._own = {
            t: [p for m in self._tuners for p in _adapter_params(m, t)] for t in self.task_names
        }
        self._active: str | None = None

    def activate(self, task: str) -> None:
        """Make ``task``'s adapter the active one, keeping every adapter trainable."""
        if task == self._active:
            return
        for layer in self._tuners:
            layer.set_adapter(task)
        for params in self._own.values():
            for p in params:
                p.requires_grad_(True)
        self._active = task

    def task_features(self, x: Prepared, tasks: Sequence[str]) -> dict[str, Tensor]:
        """One backbone pass per task, each with that task's adapter."""
        out = {}
        for t in tasks:
            self.activate(t)
            out[t] = self.backbone(x)
        return out

    def shared_parameters(self) -> list[nn.Parameter]:
        mine = {id(p) for ps in self._own.values() for p in ps}
        return [p for p in self.backbone.parameters() if p.requires_grad and id(p) not in mine]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self._own[task])

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return last_group_parameters(self.backbone, self.shared_parameters())

    def train(self, mode: bool = True) -> TaskAdapters:
        super().train(mode)
        for m in self.backbone.modules():
            params = list(m.parameters(recurse=False))
            if isinstance(m, NORM_TYPES) and not any(p.requires_grad for p in params):
                m.train(False)
        return self
