"""The experiment schema: one YAML file describes data, model, method, training and baselines.

Every section is a strict pydantic model: unknown keys are errors (with the closest valid
key suggested), numbers must be finite, and YAML booleans (``yes``, ``on``) are not taken
for numbers. ``load_config`` reads YAML (refusing a key written twice in one mapping, and
turning every parser failure into a :class:`ConfigError` with its line), applies
``--set key=value`` overrides, and validates; ``dump_config`` writes the fully resolved
config (defaults filled in) back to YAML, so ``load_config(dump_config(c)) == c``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from transferkit.errors import ConfigError
from transferkit.experiment.config_yaml import (
    parse_yaml,
    read_yaml,
    short_repr,
)

DataSpec = str | dict[str, Any]


def _not_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got the boolean {str(v).lower()}")
    return v


Seed = Annotated[int, Field(ge=0, lt=2**32), BeforeValidator(_not_bool)]


def _allows_bool(annotation: Any) -> bool:
    """Whether a field's type admits ``bool`` (or anything): ``int``/``float`` fields do not."""
    if annotation is bool or annotation is Any:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_allows_bool(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation not in (int, float)


class _Strict(BaseModel):
    """Unknown keys and non-finite numbers are errors; ``true`` is not a number."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # YAML reads yes/no/on/off as booleans, which pydantic would take as 1/0
        name = info.field_name
        if name and not _allows_bool(cls.model_fields[name].annotation):
            return _not_bool(v)
        return v


def _check_spec(v: Any) -> Any:
    if v is not None and not isinstance(v, str | dict):
        raise ValueError(
            "a dataset is a built-in name (e.g. digits), a file path, or a mapping such as "
            f"{{path: data.csv, text_column: body}}; got {type(v).__name__} {short_repr(v)}"
        )
    return v


class DataConfig(_Strict):
    """Which data to use and how to split it."""

    target: DataSpec = Field(description="built-in name or bring-your-own spec")
    target_options: dict[str, Any] = Field(default_factory=dict)
    source: DataSpec | None = None
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

    _spec_type = field_validator("target", "source", mode="before")(_check_spec)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} "
                "leaves nothing to train on; keep their sum below 1 (e.g. 0.15 + 0.2)"
            )
        return self


class TaskConfig(_Strict):
    """One task of a multi-task run (``tasks:``)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="identifier")
    data: DataSpec | None = Field(None, description="dataset; default data.target")
    data_options: dict[str, Any] = Field(default_factory=dict)
    derive: Literal["parity", "greater_than", "attributes"] | None = Field(
        None,
        description="derive labels from numeric classes: parity, > threshold, or the "
        "multi-label digit attributes (even, greater_than_4, prime, closed_loop, "
        "multiple_of_3)",
    )
    threshold: float = 4.0
    labels_from: list[str] | None = Field(
        None,
        min_length=1,
        description="0/1 columns of the task's table that form one multi-hot target "
        "(a multi-label task)",
    )
    weight: float = Field(1.0, gt=0, description="static loss weight (before the weighting)")

    _spec_type = field_validator("data", mode="before")(_check_spec)

    @model_validator(mode="after")
    def _one_label_source(self) -> TaskConfig:
        if self.labels_from is not None and self.derive is not None:
            raise ValueError(
                f"task {self.name!r} sets both derive={self.derive!r} and labels_from; "
                "keep one of them (labels_from already gives a multi-label target)"
            )
        if self.labels_from is not None and len(set(self.labels_from)) < len(self.labels_from):
            raise ValueError(
                f"task {self.name!r}: labels_from repeats a column: {self.labels_from}; "
                "list every 0/1 column once"
            )
        return self

    @property
    def multilabel(self) -> bool:
        """Whether the task's target is multi-hot (``derive: attributes`` or labels_from)."""
        return self.derive == "attributes" or self.labels_from is not None


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
    on_nonfinite: Literal["stop", "rollback"] = Field(
        "stop", description="non-finite loss: stop, or roll back to the last good checkpoint"
    )
    max_rollbacks: int = Field(3, ge=0, description="rollbacks allowed per training run")
    rollback_skip_batches: bool = Field(
        True, description="after a rollback, skip the batches of the step that failed"
    )
    rollback_lr_factor: float = Field(
        1.0, gt=0, le=1, description="after a rollback, multiply the learning rate by this"
    )
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
    collapse_guard: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="a checkpoint whose target predicted-class histogram has normalised "
        "entropy below this is collapsed and ranks below every other one (0: off)",
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
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
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

FIX_KEYS = (
    "correct the keys named above (README.md lists every key; `transferkit validate CONFIG` "
    "checks a config without running it)"
)


def _set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(
                f"cannot set {dotted!r}: {k!r} is not a section (it holds {short_repr(nxt)})",
                where=f"--set {dotted}",
                fix=f"set {k!r} itself (--set {'.'.join(keys[: keys.index(k) + 1])}=...)",
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
            raise ConfigError(
                f"override {item!r} has an empty key", where="--set", fix="write key.path=value"
            )
        try:
            value = parse_yaml(raw, "--set") if raw.strip() else ""
        except ConfigError:
            value = raw  # not a YAML value: keep the text
        _set_path(doc, key.strip(), value)
    return doc


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
        from transferkit.experiment.validate import format_errors

        raise format_errors(err, source) from None
    from transferkit.experiment.validate import check_semantics

    check_semantics(cfg, source)
    return cfg


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
