"""Reading YAML configs safely: duplicate keys, bad tagged scalars and syntax errors become
:class:`~transferkit.errors.ConfigError` with the line and a fix (used by
:mod:`transferkit.experiment.config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from transferkit.errors import ConfigError


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _DuplicateKey(yaml.constructor.ConstructorError):
    fix = "write each key once per section (merge the two)"


class _BadScalar(yaml.constructor.ConstructorError):
    fix = "quote the value to keep it as text (e.g. name: '2020-13-45')"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key repeated in one mapping (plain YAML keeps the
    last value silently, so a second ``train:`` section would drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *base' then explicit keys is the intended override idiom
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                raise _DuplicateKey(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key {key!r} appears twice (first on line {first + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError, LookupError, AttributeError) as exc:
            # PyYAML's converters fail this way on a date 2020-13-45, !!int abc, !!bool x
            shown = short_repr(node.value) if isinstance(node, yaml.ScalarNode) else "a value"
            raise _BadScalar(
                None,
                None,
                f"cannot read {shown} as {node.tag.rsplit(':', 1)[-1]} ({exc})",
                node.start_mark,
            ) from None


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text safely; every failure is a :class:`ConfigError` naming the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            f"config holds a value YAML cannot read: {exc.problem}",
            where=f"{where}, line {mark.line + 1}" if mark is not None else where,
            fix=getattr(exc, "fix", "write plain YAML: no !!python tags, only scalar keys"),
        ) from None
    except yaml.reader.ReaderError as exc:  # a control character; no line mark
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            f"config holds the control character U+{int(exc.character):04X}",
            where=f"{where}, line {line}",
            fix='delete it, or write it as an escape inside double quotes (e.g. "\\t")',
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"config is not valid YAML: {getattr(exc, 'problem', None) or exc}",
            where=f"{where}, line {mark.line + 1}" if mark is not None else where,
            fix="check the indentation (spaces, not tabs), brackets and quotes on that line",
        ) from None
    except RecursionError:
        raise ConfigError(
            "config is nested too deeply to read", where=where, fix="flatten the document"
        ) from None


def read_yaml(path: str | Path) -> Any:
    """Read a YAML document from ``path`` with clear errors (not found, not UTF-8, invalid)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(
            f"{str(p)!r} is a directory, not a config file",
            where=str(p),
            fix="pass the YAML file itself (a run directory keeps it as config.yaml)",
        )
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist", fix="check the path")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start})",
            where=str(p),
            fix="save the file as UTF-8",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file: {exc.strerror}",
            where=str(p),
            fix="check the file's permissions",
        ) from None
    doc = parse_yaml(text, str(p))
    if doc is None:
        raise ConfigError(
            "config file is empty",
            where=str(p),
            fix="write at least data: {target: ...} and model: {backbone: ...} (see README.md)",
        )
    return doc
