"""Markdown tables of pydantic fields (name, type, default, description), for generated docs.

Shared by the configuration reference (``ExperimentConfig``) and the method pages (each
method's ``Params``). Nested models are expanded into dotted rows (``train.lr``,
``l2sp.alpha``), so every key a user can write appears once with its type and default.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

SCALARS = {str: "str", int: "int", float: "float", bool: "bool", type(None): "None", Any: "any"}


def type_name(ann: Any) -> str:
    """A short, readable name of a type annotation: ``int | None``, ``list[float]``, ...."""
    if ann in SCALARS:
        return SCALARS[ann]
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "mapping"
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return " | ".join(json.dumps(m.value) for m in ann)
    if isinstance(ann, type) and issubclass(ann, Path):
        return "path"
    return getattr(ann, "__name__", str(ann))


def default_text(field: FieldInfo) -> str:
    """The default as YAML-like text, or ``required``."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def nested_model(ann: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``Model``, ``Model | None`` or ``Annotated[Model, ...]``."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    origin = typing.get_origin(ann)
    if origin is typing.Annotated or origin in (typing.Union, types.UnionType):
        models = [m for a in typing.get_args(ann) if (m := nested_model(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def list_item_model(ann: Any) -> type[BaseModel] | None:
    """The model ``M`` of a ``list[M]`` or ``list[M] | None`` field, else None."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        found = [m for a in typing.get_args(ann) if (m := list_item_model(a)) is not None]
        return found[0] if len(found) == 1 else None
    if origin is list:
        (arg,) = typing.get_args(ann) or (None,)
        return nested_model(arg)
    return None


def first_line(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` for every field, nested models expanded."""
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        desc = (field.description or "").strip()
        sub = nested_model(field.annotation)
        item = list_item_model(field.annotation)
        if sub is not None and sub.model_fields:
            optional = not field.is_required() and field.get_default() is None
            kind = "mapping | None" if optional else "mapping"
            default = default_text(field) if optional or field.is_required() else "see below"
            rows.append((key, kind, default, desc or first_line(sub.__doc__)))
            rows += field_rows(sub, key + ".")
        elif item is not None:
            rows.append((key, type_name(field.annotation), default_text(field), desc))
            rows += field_rows(item, key + "[].")
        else:
            rows.append((key, type_name(field.annotation), default_text(field), desc))
    return rows


def cell(text: str) -> str:
    """Text made safe for one Markdown table cell (pipes escaped, one line)."""
    return " ".join(text.split()).replace("|", "\\|")


def code_cell(text: str) -> str:
    """Code spans for one table cell: ``a | b`` becomes `a` or `b`. (GitHub splits a cell on
    a pipe even inside backticks; MkDocs shows an escaped one verbatim there.)"""
    parts = [p.strip() for p in " ".join(text.split()).split("|")]
    return " or ".join(f"`{p}`" for p in parts)


def fields_table(model: type[BaseModel], prefix: str = "") -> str:
    """A Markdown table of ``field_rows(model, prefix)``."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, kind, default, desc in field_rows(model, prefix):
        lines.append(f"| `{key}` | {code_cell(kind)} | {code_cell(default)} | {cell(desc)} |")
    return "\n".join(lines)
