"""The experiment schema: one YAML file describes data, model, method, training and baselines.

Every section is a strict pydantic model (unknown keys are errors, with the closest valid
key suggested). ``load_config`` reads YAML, applies ``--set key=value`` overrides, and
validates; ``dump_config`` writes the fully resolved config (defaults filled in) back to
YAML, so ``load_config(dump_config(c)) == c``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from transferkit.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Which data to use and how to split it."""

    target: str | dict[str, Any] = Field(description="built-in name or bring-your-own spec")
    target_options: dict[str, Any] = Field(default_factory=dict)
    source: str | dict[str, Any] | None = None
    source_options: dict[str, Any] = Field(default_factory=dict)
    label_budget: int | None = Field(None, gt=0, description="labelled examples per class")
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_examples: int | None = Field(None, gt=1, description="subsample the dataset first")
    max_eval_examples: int | None = Field(None, gt=1, description="cap val/test sizes")
    task_sampling: Literal["proportional", "round_robin", "temperature"] = Field(
        "proportional", description="multi-task: how batches mix tasks from different datasets"
    )
    sampling_temperature: float = Field(2.0, gt=0, description="T of temperature sampling")


class TaskConfig(_Strict):
    """One task of a multi-task run (``tasks:``)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="identifier")
    data: str | dict[str, Any] | None = Field(None, description="dataset; default data.target")
    data_options: dict[str, Any] = Field(default_factory=dict)
    derive: Literal["parity", "greater_than"] | None = Field(
        None, description="derive labels from numeric classes: parity, or > threshold"
    )
    threshold: float = 4.0
    weight: float = Field(1.0, gt=0, description="static loss weight (before the weighting)")


class ModelConfig(_Strict):
    """The backbone and the head put on top of it."""

    backbone: str = Field(
        description="backbone spec, e.g. timm:resnet18 or packaged:minilm-l6; 'source' = "
        "the fine-tuned backbone of model.source_run"
    )
    source_run: str | None = Field(
        None, description="a finished run whose model is the source (LwF, forgetting report)"
    )
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    pretrained: bool = True
    head: Literal["linear", "mlp"] = "linear"
    head_hidden: int = Field(256, gt=0)
    head_dropout: float = Field(0.0, ge=0, lt=1)


class TeacherConfig(_Strict):
    """Distillation: the teacher, trained by the run on the target labels or taken from a run."""

    backbone: str | None = Field(
        None, description="teacher backbone spec, fine-tuned on the target by this run"
    )
    backbone_options: dict[str, Any] = Field(default_factory=dict)
    run: str | None = Field(None, description="a finished transferkit run whose model teaches")
    lr: float | None = Field(None, gt=0, description="teacher lr (default train.lr)")
    backbone_lr_mult: float = Field(0.1, gt=0, description="teacher backbone lr multiplier")
    head: Literal["linear", "mlp"] = "linear"
    cache_outputs: bool = Field(
        True, description="run the teacher once over the training set and reuse its outputs"
    )
    use_unlabelled: bool = Field(
        True,
        description="with a label budget, distil on the leftover unlabelled pool too "
        "(teacher targets only; cross-entropy on the labelled rows)",
    )


class MethodConfig(_Strict):
    """The algorithm (``transferkit methods`` lists them) and its parameters."""

    name: str = "finetune"
    params: dict[str, Any] = Field(default_factory=dict)


class EarlyStoppingConfig(_Strict):
    enabled: bool = True
    monitor: str = Field("auto", description="validation metric; auto = the primary metric")
    mode: Literal["auto", "max", "min"] = "auto"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class TrainConfigSection(_Strict):
    """Optimisation settings shared by every gradient-trained method."""

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    schedule: Literal["constant", "cosine", "onecycle", "slanted_triangular"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(10, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(128, gt=0)
    grad_accum_steps: int = Field(1, gt=0)
    clip_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "auto"
    checkpoint_every_steps: int | None = Field(None, gt=0)
    checkpoint_min_interval_s: float = Field(
        30.0, ge=0, description="skip an epoch-end checkpoint if the last is younger"
    )
    log_every_steps: int = Field(10, gt=0)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)


class BaselinesConfig(_Strict):
    """Target-only baselines that the verdict compares against (DESIGN.md, honest baselines)."""

    enabled: bool = True
    random_init: bool = Field(True, description="same architecture, random init, same budget")
    classical: bool = Field(True, description="TF-IDF/pixel logistic regression, boosting")
    random_init_lr: float | None = Field(None, gt=0, description="lr for the random-init run")
    source_only: bool = Field(
        True, description="domain adaptation: the same model trained on the source only"
    )
    target_only: bool = Field(
        True, description="domain adaptation: fine-tuned on the labelled target training split"
    )


class AdaptationConfig(_Strict):
    """Domain adaptation: label-free checkpoint selection and domain-gap diagnostics."""

    selector: Literal["dev", "snd", "entropy", "source_val"] = Field(
        "dev",
        description="label-free checkpoint criterion: dev (importance-weighted source "
        "validation risk, You et al. 2019), snd (soft neighbourhood density), entropy "
        "(target prediction entropy) or source_val (source validation accuracy)",
    )
    selection_examples: int = Field(
        500, ge=20, description="examples per domain the selectors read at every epoch"
    )
    domain_gap: bool = Field(True, description="proxy A-distance, MMD and 2-D plots")
    gap_examples: int = Field(1000, ge=20, description="examples per domain for the gap")


class ExperimentConfig(_Strict):
    """A whole experiment: ``transferkit run CONFIG.yaml`` runs exactly this."""

    name: str = "experiment"
    data: DataConfig
    model: ModelConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfigSection = Field(default_factory=TrainConfigSection)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)
    teacher: TeacherConfig | None = Field(None, description="distillation: the teacher")
    deployment: bool = Field(
        True, description="distillation: measure size, latency and throughput of the models"
    )
    tasks: list[TaskConfig] | None = Field(
        None, description="multi-task runs: the tasks (each trained alone as its baseline)"
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    bootstrap_samples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    report: bool = True

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


# ----------------------------------------------------------------------------------- loading


def _set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(
                f"cannot set {dotted!r}: {k!r} is not a section", where=f"--set {dotted}"
            )
        node = nxt
    node[keys[-1]] = value


def apply_overrides(doc: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings (values parsed as YAML) to a config document."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} has no '='", where="--set", fix="write it as key.path=value"
            )
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"override {item!r} has an empty key", where="--set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(doc, key.strip(), value)
    return doc


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """Valid field names of the model section that ``loc`` (minus its last key) points to."""
    model: Any = ExperimentConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _format_errors(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc), n=1, cutoff=0.6)
            suggestion = ".".join([*map(str, loc[:-1]), close[0]]) if close else ""
            hint = f" (did you mean {suggestion!r}?)" if close else ""
            valid = ", ".join(_fields_at(loc))
            lines.append(f"{path}: unknown key{hint}; valid keys here: {valid}")
        elif e["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            lines.append(f"{path}: {e['msg']} (got {e.get('input')!r})")
    return ConfigError(
        "invalid experiment config: " + "; ".join(lines),
        where=source,
        fix="correct the keys named above (see `transferkit run --help` and examples/)",
    )


def validate_config(doc: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a config document (a mapping) into an :class:`ExperimentConfig`."""
    if not isinstance(doc, Mapping):
        raise ConfigError(
            f"a config must be a mapping of sections, got {type(doc).__name__}",
            where=source,
            fix="start the file with keys such as data:, model:, method:, train:",
        )
    try:
        cfg = ExperimentConfig.model_validate(dict(doc))
    except ValidationError as err:
        raise _format_errors(err, source) from None
    from transferkit.experiment.validate import check_semantics

    check_semantics(cfg, source)
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with clear errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist", fix="check the path")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8 text", where=str(p)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}, line {mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(
            f"config is not valid YAML: {getattr(exc, 'problem', exc)}", where=where
        ) from None
    if doc is None:
        raise ConfigError("config file is empty", where=str(p), fix="see examples/ for a start")
    return doc


def load_config(
    source: str | Path | Mapping[str, Any] | ExperimentConfig, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """Load and validate a config from a YAML path, a mapping or a config object."""
    if isinstance(source, ExperimentConfig):
        if not overrides:
            return source
        doc, where = source.model_dump(mode="json"), "config"
    elif isinstance(source, Mapping):
        doc, where = dict(source), "config"
    elif not isinstance(source, str | Path):
        return validate_config(source, "config")  # type: ignore[arg-type]
    else:
        doc, where = read_yaml(source), str(source)
    if isinstance(doc, dict):
        doc = apply_overrides(doc, overrides)
    return validate_config(doc, where)


def dump_config(cfg: ExperimentConfig) -> str:
    """The fully resolved config as YAML text (round-trips through ``load_config``)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
