"""Generated documentation is current, and the generators get the details right.

``tools/gen_docs.py --check`` fails when a method, a parameter, a config key, a CLI option
or an example result changed without the pages being regenerated.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import gen_docs  # noqa: E402  (tools/ is not a package)
from docgen_fields import code_cell, field_rows, type_name  # noqa: E402
from griffe_rst import rst_to_markdown  # noqa: E402


def test_generated_pages_are_current(capsys: typing.Any) -> None:
    code = gen_docs.main(["--check"])
    assert code == 0, capsys.readouterr().out


def test_every_registered_method_has_a_page_and_a_nav_entry() -> None:
    from transferkit.methods import METHODS

    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for name in METHODS.names():
        assert (ROOT / "docs" / "methods" / f"{name}.md").is_file(), name
        assert f"- {name}: methods/{name}.md" in nav, name


def test_rst_math_and_roles_become_markdown() -> None:
    doc = (
        "Loss:\n\n.. math::\n\n    L = a + \\\\lambda b\n    + c\n\nwith "
        ":class:`~transferkit.errors.ConfigError` and :func:`transferkit.run`, :math:`x^2`."
    )
    out = rst_to_markdown(doc)
    assert "$$\nL = a + \\\\lambda b\n+ c\n$$" in out
    assert "`ConfigError`" in out and "`transferkit.run`" in out and "$x^2$" in out
    assert ".. math::" not in out and ":class:" not in out
    indented = rst_to_markdown("A\n    .. math::\n\n        x = 1\n    after")
    assert indented == "A\n    $$\n    x = 1\n    $$\n\n    after"


class _Inner(BaseModel):
    alpha: float = Field(0.5, description="weight")


class _Outer(BaseModel):
    kind: Literal["a", "b"] = "a"
    size: int | None = None
    inner: _Inner | None = None
    items: list[_Inner] = Field(default_factory=list)
    need: str


def test_field_rows_expand_nested_models_with_types_and_defaults() -> None:
    rows = {key: (kind, default, desc) for key, kind, default, desc in field_rows(_Outer)}
    assert rows["kind"][:2] == ('"a" | "b"', '"a"')
    assert rows["size"][:2] == ("int | None", "null")
    assert rows["inner"][:2] == ("mapping | None", "null")
    assert rows["inner.alpha"] == ("float", "0.5", "weight")
    assert rows["items[].alpha"][0] == "float" and rows["items"][1] == "[]"
    assert rows["need"][1] == "required"
    assert type_name(dict[str, list[int]]) == "dict[str, list[int]]"
    assert code_cell('"a" | "b"') == '`"a"` or `"b"`'


def test_examples_table_links_benchmarks_from_both_places() -> None:
    docs_table, readme_table = gen_docs.examples_table(""), gen_docs.examples_table("../docs/")
    assert "](da_benchmark.md)" in docs_table and "](../docs/da_benchmark.md)" in readme_table
    assert docs_table.count("\n") == readme_table.count("\n")
