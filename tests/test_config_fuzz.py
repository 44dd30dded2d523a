"""Fuzz the config loader through the CLI: for any YAML document, ``transferkit validate``
exits 0 (a valid config) or 2 (a clear error), and never shows a traceback (issue #9).

Four generators mixed into one strategy, derandomised so CI is reproducible: random nested
documents with known and unknown keys and values of every YAML type; a valid config with
random keys set to random values (reaching the semantic checks behind the schema); raw
text and bytes built from YAML's own punctuation (mostly invalid YAML); random ``--set``
overrides. Each CLI call costs ~25 ms (typer builds the command every time), so the CLI
test draws 150 cases and the library-level twin 400.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.errors import TransferkitError
from transferkit.experiment.config import ExperimentConfig, dump_config, load_config

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def _section_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``X | None``, ``list[X]``, ``X``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _section_models(a)]


def _known_keys(model: type[BaseModel] = ExperimentConfig) -> set[str]:
    keys = set(model.model_fields)
    for field in model.model_fields.values():
        for sub in _section_models(field.annotation):
            keys |= _known_keys(sub)
    return keys


KNOWN = sorted(_known_keys())
WORDS = [
    "digits", "mnist5k", "tk:smallcnn", "tk:mlp", "timm:resnet18", "resnet18", "source",
    "finetune", "linear_probe", "dann", "distill", "multitask", "auto", "val_accuracy",
    "cosine", "adamw", "parity", "yes", "~", "", "freeze", "all_but_head",
]  # fmt: skip
TOKENS = [
    "[", "]", "{", "}", ":", ": ", "-", "- ", "?", ",", "&a ", "*a", "!!int ", "!!binary ",
    "!!python/object ", "!x ", "|", ">", "'", '"', "\t", "\n", "  ", "#", "%YAML 1.1\n",
    "---\n", "...\n", "<<: ", "2020-13-45", "0x", "1e-3", ".inf", "data", "model", "train",
    "seeds", "target", "backbone", "digits", "tk:smallcnn", "\\", "\u00e9", "\ufeff",
]  # fmt: skip

keys = st.one_of(st.sampled_from(KNOWN), st.text(max_size=8), st.integers(-3, 3))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
values = st.recursive(
    scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=4)),
    max_leaves=12,
)
BASE: dict[str, Any] = {
    "data": {"target": "digits"},
    "model": {"backbone": "tk:smallcnn"},
    "seeds": [0],
}


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """The valid ``BASE`` with 1-4 random key paths (known keys) set to random values."""
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.lists(st.sampled_from(KNOWN), min_size=1, max_size=3))
        node = doc
        for k in path[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[path[-1]] = draw(values)
    return doc


Case = tuple[bytes, tuple[str, ...]]  # (config file content, extra CLI flags)


def _dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")


overrides = st.lists(
    st.tuples(
        st.lists(st.sampled_from(KNOWN), min_size=1, max_size=3).map(".".join),
        st.sampled_from(["=", "", "=="]),
        st.lists(st.sampled_from(TOKENS), max_size=8).map("".join),
    ).map("".join),
    min_size=1,
    max_size=3,
)
raw_text = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=30).map(lambda t: "".join(t).encode("utf-8")),
    st.text(max_size=60).map(lambda t: t.encode("utf-8")),
    st.binary(max_size=60),
)
cases: st.SearchStrategy[Case] = st.one_of(
    st.one_of(st.dictionaries(keys, values, max_size=6), values).map(lambda d: (_dump(d), ())),
    near_valid().map(lambda d: (_dump(d), ())),
    raw_text.map(lambda b: (b, ())),
    overrides.map(lambda o: (_dump(BASE), tuple(f"--set={x}" for x in o))),
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write(workdir: Path, content: bytes) -> Path:
    path = workdir / "fuzz.yaml"
    path.write_bytes(content)
    return path


def _validate(path: Path, *flags: str) -> int:
    """``transferkit validate`` in-process; checks the outcome is 0 or 2 and readable."""
    result = CliRunner().invoke(app, ["validate", str(path), *flags])
    out = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r} for {path.read_bytes()[:300]!r} {flags}"
    )
    assert result.exit_code in (0, 2), f"exit {result.exit_code}: {out}"
    assert "Traceback" not in out, out
    if result.exit_code == 0:
        assert "config OK" in out, out
    else:
        assert out.startswith(("error:", "Usage:")) and ("Fix:" in out or "--help" in out), out
    return result.exit_code


@FUZZ
@given(case=cases)
def test_cli_validate_never_shows_a_traceback(workdir: Path, case: Case) -> None:
    content, flags = case
    _validate(_write(workdir, content), *flags)


@settings(FUZZ, max_examples=400)
@given(case=cases)
def test_loader_raises_only_transferkit_errors(workdir: Path, case: Case) -> None:
    """The same inputs straight into ``load_config`` (cheap, so more of them): a config or
    a :class:`TransferkitError`, never another exception."""
    content, flags = case
    path = _write(workdir, content)
    try:
        cfg = load_config(path, [f.removeprefix("--set=") for f in flags])
    except TransferkitError as exc:
        assert exc.what and exc.fix, exc.message
    else:
        assert load_config(yaml.safe_load(dump_config(cfg))) == cfg  # round-trips


def test_the_generators_reach_both_outcomes(workdir: Path) -> None:
    """The fuzzed path is not trivially failing: the base config passes, one change fails."""
    path = _write(workdir, _dump(BASE))
    assert _validate(path) == 0
    assert _validate(path, "--set=train.lr=0") == 2
