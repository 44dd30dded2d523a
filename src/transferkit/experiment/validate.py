"""Checks on a config that need more than types: the method exists, its parameters fit."""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from transferkit.errors import ConfigError
from transferkit.experiment.config import ExperimentConfig


def check_semantics(cfg: ExperimentConfig, source: str) -> None:
    """Validate the method name and ``method.params`` against the method's schema."""
    from transferkit.methods import METHODS

    cls = METHODS.get(cfg.method.name)  # raises ConfigError with close matches
    params = _with_tasks(cfg, cls.family, source)
    try:
        cls.Params.model_validate(params)
    except ValidationError as err:
        msgs = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(key, list(cls.Params.model_fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                msgs.append(f"method.params.{key}: unknown parameter{hint}")
            else:
                msgs.append(f"method.params.{key}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(
            f"invalid parameters for method {cfg.method.name!r}: " + "; ".join(msgs),
            where=source,
            fix=f"valid parameters: {', '.join(cls.Params.model_fields) or 'none'} "
            "(`transferkit methods` describes them)",
        ) from None
    if cfg.model.backbone == "source" and not cfg.model.source_run:
        raise ConfigError(
            "model.backbone is 'source' but model.source_run is not set",
            where=source,
            fix="set model.source_run to a finished run directory",
        )
    es = cfg.train.early_stopping
    if cfg.train.max_steps is None and cfg.train.epochs < 1:
        raise ConfigError("train.epochs must be >= 1", where=source)
    if es.enabled and es.monitor not in ("auto",) and not es.monitor.startswith("val_"):
        raise ConfigError(
            f"train.early_stopping.monitor={es.monitor!r} is not a validation metric",
            where=source,
            fix='use "auto" or a name like "val_accuracy", "val_macro_f1", "val_r2"',
        )
    _check_domains(cfg, cls.family, source)
    _check_teacher(cfg, cls.family, source)


def _check_teacher(cfg: ExperimentConfig, family: str, source: str) -> None:
    """Distillation needs exactly one teacher (a spec to train, or a finished run)."""
    t = cfg.teacher
    if family != "distillation":
        if t is not None:
            raise ConfigError(
                f"a teacher is set but method {cfg.method.name!r} ({family}) does not distil",
                where=f"{source}: teacher",
                fix="remove teacher:, or use method: distill",
            )
        return
    if t is None or (t.backbone is None) == (t.run is None):
        raise ConfigError(
            "distillation needs a teacher: set exactly one of teacher.backbone (fine-tuned "
            "on the target by this run) and teacher.run (a finished run)",
            where=f"{source}: teacher",
            fix="e.g. teacher: {backbone: packaged:minilm-l6} with model.backbone: tk:mlp ...",
        )


def _with_tasks(cfg: ExperimentConfig, family: str, source: str) -> dict:
    """``method.params``; for multi-task, with the top-level tasks (sizes not known yet)."""
    params = dict(cfg.method.params)
    if family != "multi-task":
        if cfg.tasks:
            raise ConfigError(
                f"tasks: is set but method {cfg.method.name!r} ({family}) is single-task",
                where=f"{source}: tasks",
                fix="remove tasks:, or use method: multitask",
            )
        return params
    if not cfg.tasks:
        raise ConfigError(
            "a multi-task method needs tasks: (a list of {name, data?, derive?, weight?})",
            where=f"{source}: tasks",
            fix="e.g. tasks: [{name: digit}, {name: parity, derive: parity}]",
        )
    if "tasks" in params:
        raise ConfigError(
            "declare the tasks at the top level (tasks:), not in method.params.tasks",
            where=f"{source}: method.params.tasks",
            fix="move them to tasks:",
        )
    names = [t.name for t in cfg.tasks]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"task names repeat: {names}",
            where=f"{source}: tasks",
            fix="give every task a distinct name",
        )
    params["tasks"] = [{"name": t.name, "num_outputs": 2} for t in cfg.tasks]
    return params


def _check_domains(cfg: ExperimentConfig, family: str, source: str) -> None:
    """A domain-adaptation method needs ``data.source``; other methods must not get one."""
    if family == "domain-adaptation" and cfg.data.source is None:
        raise ConfigError(
            f"method {cfg.method.name!r} adapts from a labelled source domain, but "
            "data.source is not set",
            where=f"{source}: data.source",
            fix="set data.source to the labelled source dataset (e.g. data.source: digits "
            "with data.target: mnist5k), or choose a fine-tuning method",
        )
    if family != "domain-adaptation" and cfg.data.source is not None:
        raise ConfigError(
            f"data.source is set but method {cfg.method.name!r} ({family}) does not use a "
            "source domain",
            where=f"{source}: data.source",
            fix="remove data.source, or choose a domain-adaptation method "
            "(`transferkit methods` lists them: dann, dan, cdan, mcc, ...)",
        )
    if family == "domain-adaptation" and cfg.model.backbone == "source":
        raise ConfigError(
            "domain adaptation starts from a pretrained backbone spec, not model.backbone: source",
            where=f"{source}: model.backbone",
            fix="name the backbone (e.g. packaged:minilm-l6, or file:<weights> with "
            "backbone_options.backbone_spec)",
        )
