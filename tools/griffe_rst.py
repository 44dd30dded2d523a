"""A griffe extension that turns the reStructuredText idioms of transferkit's docstrings into
Markdown before mkdocstrings renders them.

transferkit's docstrings are Google style (``Args:``, ``Returns:``) but write math and cross
references the Sphinx way. Rendered as Markdown, ``.. math::`` would be a literal paragraph
followed by a code block, and ``:class:`~a.B``` would keep its role prefix. This extension
rewrites, in every docstring:

* ``.. math::`` + an indented block -> a ``$$ ... $$`` display block (``pymdownx.arithmatex``
  then hands it to MathJax);
* ``:math:`x``` -> ``$x$`` (inline math);
* ``:class:`a.b.C```, ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``,
  ``:exc:``, ``:obj:`` -> a code span of the path (``~a.b.C`` -> ``C``, as in Sphinx).

Enabled in ``mkdocs.yml`` under ``plugins.mkdocstrings.handlers.python.options.extensions``.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
INLINE_MATH = re.compile(r":math:`([^`]+)`")


def _role(match: re.Match[str]) -> str:
    tilde, path = match.group(1), match.group(2).strip()
    return f"`{path.rsplit('.', 1)[-1] if tilde else path}`"


def _math_blocks(text: str) -> str:
    """Replace each ``.. math::`` directive and its indented body by a ``$$`` block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != ".. math::":
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        body: list[str] = []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        math = textwrap.dedent("\n".join(body)).strip("\n")
        pad = " " * indent
        out += [f"{pad}$$", *(pad + m for m in math.split("\n")), f"{pad}$$", ""]
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST math and cross-reference roles in Markdown."""
    text = _math_blocks(text)
    text = INLINE_MATH.sub(lambda m: f"${m.group(1)}$", text)
    return ROLE.sub(_role, text)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring once, when griffe creates its object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
