"""Config validation messages and the checks that need more than types.

``format_errors`` turns pydantic's schema errors into one message naming each key path;
``check_semantics`` checks what the schema cannot: the method exists and its parameters
fit, the backbone specs parse, the sections agree with the method's family.
``check_data`` (``transferkit validate --data``) goes one step further without training:
it loads the first seed's data and passes two examples through each backbone.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from transferkit.errors import BackboneError, ConfigError, TransferkitError
from transferkit.experiment.config import FIX_KEYS, ExperimentConfig, short_repr


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
                msgs.append(f"method.params.{key}: {e['msg']} (got {short_repr(e.get('input'))})")
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
        raise ConfigError(
            "train.epochs must be >= 1", where=source, fix="set train.epochs: 1 or more"
        )
    if es.enabled and es.monitor not in ("auto",) and not es.monitor.startswith("val_"):
        raise ConfigError(
            f"train.early_stopping.monitor={es.monitor!r} is not a validation metric",
            where=source,
            fix='use "auto" or a name like "val_accuracy", "val_macro_f1", "val_r2"',
        )
    _check_domains(cfg, cls.family, source)
    _check_teacher(cfg, cls.family, source)
    _check_backbone_specs(cfg, source)


def _check_backbone_specs(cfg: ExperimentConfig, source: str) -> None:
    """A spec's family prefix is checked now, not after the data has been loaded."""
    from transferkit.backbones.names import split_spec

    specs = {"model.backbone": cfg.model.backbone}
    if cfg.teacher is not None and cfg.teacher.backbone is not None:
        specs["teacher.backbone"] = cfg.teacher.backbone
    for key, spec in specs.items():
        if key == "model.backbone" and spec == "source":
            continue
        try:
            split_spec(spec)
        except BackboneError as exc:
            raise ConfigError(f"{key}: {exc.what}", where=f"{source}: {key}", fix=exc.fix) from None


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
    params["tasks"] = [
        {
            "name": t.name,
            "kind": "multilabel" if t.multilabel else "classification",
            "num_outputs": 2,
        }
        for t in cfg.tasks
    ]
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


def _unwrap(ann: Any, index: bool) -> Any:
    """``X | None`` -> ``X``; ``list[X]`` -> ``X`` when stepping into a list index."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1:
        ann = args[0]
    if index and typing.get_origin(ann) is list:
        ann = typing.get_args(ann)[0]
    return ann


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """Valid field names of the model section that ``loc`` (minus its last key) points to."""
    ann: Any = ExperimentConfig
    for part in loc[:-1]:
        ann = _unwrap(ann, isinstance(part, int))
        if isinstance(part, int):
            continue
        field = getattr(ann, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
    ann = _unwrap(ann, False)
    ok = isinstance(ann, type) and issubclass(ann, BaseModel)
    return list(ann.model_fields) if ok else []


def _error_line(e: Any) -> str:
    loc = list(e["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    if e["type"] == "extra_forbidden":
        fields = _fields_at(loc)
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6)
        suggestion = ".".join([*map(str, loc[:-1]), close[0]]) if close else ""
        hint = f" (did you mean {suggestion!r}?)" if close else ""
        return f"{path}: unknown key{hint}; valid keys here: {', '.join(fields) or 'none'}"
    if e["type"] == "missing":
        return f"{path}: required key is missing"
    msg = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "value_error" and isinstance(e.get("input"), dict | list):
        return f"{path}: {msg}"  # the message names the keys; the whole section is noise
    return f"{path}: {msg} (got {short_repr(e.get('input'))})"


def format_errors(err: ValidationError, source: str) -> ConfigError:
    """One :class:`ConfigError` listing every schema error: key path, problem, value, and
    for an unknown key the closest valid one and every valid key of that section."""
    return ConfigError(
        "invalid experiment config: " + "; ".join(_error_line(e) for e in err.errors()),
        where=source,
        fix=FIX_KEYS,
    )


# ------------------------------------------------------------------- `validate --data`


def _named_splits(cfg: ExperimentConfig, seed: int) -> dict[str, Any]:
    """The splits a run of ``cfg`` would load for ``seed``: target (or tasks), source."""
    from transferkit.experiment.runner import load_splits

    if cfg.tasks:
        from transferkit.experiment.multitask_data import load_task_splits

        named = {f"task {k}": v for k, v in load_task_splits(cfg, seed)[1].items()}
    else:
        named = {"target": load_splits(cfg, seed)}
    if cfg.data.source is not None:
        from transferkit.experiment.domains import load_source_splits

        named["source"] = load_source_splits(cfg, seed, next(iter(named.values())))
    return named


def _try_forward(backbone: Any, splits: Any, name: str, key: str) -> None:
    """Prepare two training examples and run them through ``backbone`` (no gradients)."""
    import torch

    from transferkit.experiment.stages import check_modality

    check_modality(backbone, splits)
    sample = splits.train.subset(list(range(min(2, len(splits.train)))))
    try:
        with torch.no_grad():
            backbone(backbone.prepare(sample.x))
    except TransferkitError as exc:
        raise type(exc)(f"{name} data: {exc.what}", where=exc.where or key, fix=exc.fix) from None
    except (RuntimeError, ValueError) as exc:  # shape errors inside the model
        raise ConfigError(
            f"{key} {backbone.spec!r} cannot read the {name} data: {exc}",
            where=key,
            fix="match the backbone to the data (input size, channels, in_features)",
        ) from None


def check_data(cfg: ExperimentConfig) -> list[str]:
    """Load the data of the first seed and pass two examples of every split through each
    backbone of ``cfg`` (random weights: nothing is downloaded). Returns report lines.

    Raises:
        TransferkitError: the first data or backbone problem (missing file, one class,
            text given to an image model, wrong feature count, ...).
    """
    from transferkit.backbones import create_backbone

    named = _named_splits(cfg, cfg.seeds[0])
    lines = [
        f"{name} {sp.train.name!r}: {sp.train.modality} {sp.train.task}, {sp.info['sizes']}"
        for name, sp in named.items()
    ]
    specs = {"model.backbone": (cfg.model.backbone, cfg.model.backbone_options)}
    if cfg.teacher is not None and cfg.teacher.backbone is not None:
        specs["teacher.backbone"] = (cfg.teacher.backbone, cfg.teacher.backbone_options)
    for key, (spec, options) in specs.items():
        if spec == "source":
            lines.append(f"{key}: the source run's backbone (not built here)")
            continue
        backbone = create_backbone(spec, pretrained=False, **options).eval()
        for name, sp in named.items():
            _try_forward(backbone, sp, name, key)
        lines.append(
            f"{key} {spec}: {backbone.modality} inputs -> {backbone.num_features} features; "
            f"reads {', '.join(named)} (2 examples each)"
        )
    return lines
