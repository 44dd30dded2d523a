"""The search space of a sweep: ``SPACE.yaml`` maps dotted config keys to distributions.

```yaml
train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
train.batch_size: {type: int, low: 16, high: 64, step: 16}
method.params.backbone_lr_mult: {type: categorical, choices: [0.1, 0.3, 1.0]}
```

Each key is a path in the experiment config, exactly as ``transferkit run --set`` takes
it; each value is one Optuna distribution: ``float`` (``low``/``high``, optional ``log`` or
``step``), ``int`` (integer ``low``/``high``, optional ``log`` or ``step``) or
``categorical`` (``choices``: numbers, strings, booleans or null). :func:`check_space`
checks every key against the experiment schema (unknown keys and sections are errors that
name the closest valid key) and validates the config with each bound and each choice put
in, so a sweep never starts with a value its runs would refuse.
"""

from __future__ import annotations

import copy
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from transferkit.errors import ConfigError
from transferkit.experiment.config import ExperimentConfig, load_config, read_yaml

Choice = bool | int | float | str | None


class ParamSpec(BaseModel):
    """One searched key: its distribution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Choice] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError("a categorical parameter takes only 'choices'")
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes low/high, not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs both 'low' and 'high'")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"need finite low < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be combined (Optuna samples one or other)")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.type == "int":
            for name in ("low", "high", "step"):
                v = getattr(self, name)
                if v is not None and v != int(v):
                    raise ValueError(f"an int parameter needs an integer {name}, got {v}")
        return self

    def probe_values(self) -> list[Any]:
        """Values that bound the distribution: both ends, or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


class SearchSpace(BaseModel):
    """Dotted config key -> :class:`ParamSpec` (in file order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, ParamSpec]

    def fingerprint(self) -> dict[str, Any]:
        """A JSON form stored with the study, to refuse resuming it with another space."""
        return {k: v.model_dump(mode="json", exclude_defaults=True) for k, v in self.params.items()}


def load_space(source: str | Path | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """Read and validate a search space (YAML path, mapping or :class:`SearchSpace`)."""
    if isinstance(source, SearchSpace):
        return source
    where = "search space"
    if isinstance(source, str | Path):
        where, doc = str(source), read_yaml(source)
    else:
        doc = source
    if not isinstance(doc, Mapping) or not doc:
        raise ConfigError(
            "a search space must be a non-empty mapping of config keys to distributions",
            where=where,
            fix="write lines like `train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}`",
        )
    try:
        return SearchSpace(params={str(k): v for k, v in doc.items()})
    except ValidationError as err:
        raise _space_error(err, where) from None


def _space_error(err: ValidationError, where: str) -> ConfigError:
    msgs = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"][1:]]  # drop "params"
        key = loc[0] if loc else "?"
        field = ".".join(loc[1:])
        detail = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            detail = f"unknown field {field!r}"
        elif field:
            detail = f"{field}: {detail}"
        msgs.append(f"{key}: {detail} (got {e.get('input')!r})")
    return ConfigError(
        "invalid search space: " + "; ".join(msgs),
        where=where,
        fix="give each key {type: float|int|categorical} with low/high (log, step) or choices",
    )


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic section class inside an annotation (``X``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _is_free_mapping(annotation: Any) -> bool:
    """True for ``dict[str, Any]`` fields (method.params, *_options, a data spec)."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) is not dict else ()
    return typing.get_origin(annotation) is dict or any(_is_free_mapping(a) for a in args)


def check_key(key: str, where: str = "search space") -> None:
    """Refuse a dotted key that is not a value of the experiment config schema."""
    parts = key.split(".")
    model: type[BaseModel] = ExperimentConfig
    for i, part in enumerate(parts):
        fields = model.model_fields
        here = ".".join(parts[:i]) or "the top level"
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.5)
            fixed = ".".join([*parts[:i], close[0], *parts[i + 1 :]]) if close else ""
            hint = f"did you mean {fixed!r}? " if close else ""
            raise ConfigError(
                f"unknown config key {key!r}: {here} has no key {part!r}",
                where=f"{where}, key {key}",
                fix=f"{hint}valid keys in {here}: {', '.join(fields)}",
            )
        annotation = fields[part].annotation
        section = _section_of(annotation)
        last = i == len(parts) - 1
        if section is None:
            if last or _is_free_mapping(annotation):
                return
            raise ConfigError(
                f"config key {'.'.join(parts[: i + 1])!r} is a value, not a section",
                where=f"{where}, key {key}",
                fix=f"search {'.'.join(parts[: i + 1])!r} itself",
            )
        if last:
            raise ConfigError(
                f"config key {key!r} is a section, not a value",
                where=f"{where}, key {key}",
                fix=f"search one of its keys: {', '.join(section.model_fields)}",
            )
        model = section


def yaml_scalar(value: Any) -> str:
    """``value`` as the right-hand side of a ``--set key=value`` override (YAML)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("...").strip()


def private_copy(config: Any) -> Any:
    """A deep copy of a mapping config (``load_config`` writes overrides into nested
    sections of the mapping it is given); paths and config objects are returned as is."""
    return copy.deepcopy(dict(config)) if isinstance(config, Mapping) else config


def to_overrides(params: Mapping[str, Any]) -> list[str]:
    """``{"train.lr": 0.001}`` -> ``["train.lr=0.001"]`` (parsed back to the same values)."""
    return [f"{k}={yaml_scalar(v)}" for k, v in params.items()]


def check_space(
    space: SearchSpace,
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    overrides: Sequence[str] = (),
    where: str = "search space",
) -> None:
    """Check every key against the schema and every bound/choice against the validators."""
    for key, spec in space.params.items():
        check_key(key, where)
        for value in spec.probe_values():
            try:
                load_config(private_copy(config), [*overrides, *to_overrides({key: value})])
            except ConfigError as exc:
                raise ConfigError(
                    f"search-space key {key!r} with value {value!r} gives an invalid "
                    f"experiment config: {exc.what}",
                    where=f"{where}, key {key}",
                    fix="narrow the range or fix the choices so every value is valid "
                    f"({exc.fix or 'see the message above'})",
                ) from None


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Ask an Optuna trial for one value per key (``trial.suggest_*``)."""
    out: dict[str, Any] = {}
    for key, s in space.params.items():
        if s.type == "categorical":
            out[key] = trial.suggest_categorical(key, list(s.choices or []))
        elif s.type == "int":
            assert s.low is not None and s.high is not None
            step = int(s.step) if s.step is not None else 1
            out[key] = trial.suggest_int(key, int(s.low), int(s.high), step=step, log=s.log)
        else:
            assert s.low is not None and s.high is not None
            out[key] = trial.suggest_float(key, s.low, s.high, step=s.step, log=s.log)
    return out
