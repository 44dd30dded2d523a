"""Code blocks of Markdown pages, and the checks the docs tests run on them.

A fenced block is taken with its language and line. Two HTML comments on the closest
non-blank line above a fence change how it is tested:

* ``<!-- file: NAME -->``: the block's text is also written to ``NAME`` in the page's
  working directory before its Python blocks run (a config the page then loads);
* ``<!-- skip-test: REASON -->``: the block is not run; the reason is required and
  ``tests/docs/test_code_blocks.py`` counts and prints every skip.

YAML: each document of a block is an experiment config (validated by the config loader), a
fragment of one (validated on top of a minimal base config; keys written ``...`` are
elisions), a ``--8<-- "path"`` include of a config file, or no config at all (no top-level
key of ``ExperimentConfig``). Shell: every ``transferkit`` command (also as
``.venv/bin/transferkit`` or ``python -m transferkit.cli``) is parsed by the real click
command, so an unknown sub-command or option fails.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
MARK = re.compile(r"<!--\s*(file|skip-test)\s*:\s*(.*?)\s*-->")
SNIPPET = re.compile(r'^--8<--\s+"([^"]+)"\s*$')
SHELLS = {"bash", "sh", "shell", "console", ""}
BASE_CONFIG = {"data": {"target": "digits"}, "model": {"backbone": "tk:smallcnn"}}


@dataclass
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    file: str | None = None
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _marks(lines: list[str], fence: int) -> dict[str, str]:
    """The ``file`` / ``skip-test`` comments on the closest non-blank line above a fence."""
    i = fence - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    return {k: v for k, v in MARK.findall(lines[i])} if i >= 0 else {}


def extract_blocks(text: str, page: str) -> list[Block]:
    """Every fenced block of a Markdown text, in order."""
    lines, blocks, i = text.split("\n"), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        marks = _marks(lines, i)
        blocks.append(
            Block(page, i + 1, lang, "\n".join(body), marks.get("file"), marks.get("skip-test"))
        )
        i = j + 1
    return blocks


# ----------------------------------------------------------------------------------- YAML


def _drop_elisions(node: Any) -> Any:
    """``node`` without the ``...`` keys that docs use for "and so on"."""
    if isinstance(node, dict):
        return {k: _drop_elisions(v) for k, v in node.items() if k != "..."}
    if isinstance(node, list):
        return [_drop_elisions(v) for v in node]
    return node


def yaml_configs(block: Block, root: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """``(kind, document)`` per YAML document: kind is config, fragment, include or other."""
    from transferkit.experiment.config import ExperimentConfig, read_yaml

    inc = SNIPPET.match(block.code.strip())
    if inc:
        return [("include", read_yaml(root / inc.group(1)))]
    out: list[tuple[str, dict[str, Any] | None]] = []
    for doc in yaml.safe_load_all(block.code):
        if not isinstance(doc, dict) or not set(doc) & set(ExperimentConfig.model_fields):
            out.append(("other", None))
        elif {"data", "model"} <= set(doc):
            out.append(("config", doc))
        else:
            out.append(("fragment", {**BASE_CONFIG, **_drop_elisions(doc)}))
    return out


# ---------------------------------------------------------------------------------- shell


def _logical_lines(code: str) -> list[str]:
    """Shell lines with ``\\`` continuations joined."""
    out, cur = [], ""
    for raw in code.split("\n"):
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
        else:
            out.append(cur + raw)
            cur = ""
    return [*out, cur] if cur else out


def transferkit_commands(code: str) -> list[list[str]]:
    """The argument lists of every ``transferkit`` invocation in a shell block."""
    found = [_after_entry_point(c) for c in shell_commands(code)]
    return [args for args in found if args is not None]


def local_references(code: str) -> tuple[list[str], list[str]]:
    """``(scripts, make targets)`` a shell block runs: ``python path.py`` / ``make target``."""
    scripts, targets = [], []
    for cmd in shell_commands(code):
        for k, tok in enumerate(cmd):
            if tok.endswith(".py") and k > 0 and Path(cmd[k - 1]).name.startswith("python"):
                scripts.append(tok)
        if cmd and cmd[0] == "make":
            targets += [t for t in cmd[1:] if not t.startswith("-") and "=" not in t]
    return scripts, targets


def shell_commands(code: str) -> list[list[str]]:
    """Every simple command (tokens) of a shell block, comments and operators removed."""
    found = []
    for line in _logical_lines(code):
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        command: list[str] = []
        for tok in [*tokens, ";"]:
            if tok in {"|", "||", "&&", ";", "&"}:
                if command:
                    found.append(command)
                command = []
            else:
                command.append(tok)
    return found


def _after_entry_point(tokens: list[str]) -> list[str] | None:
    for k, tok in enumerate(tokens):
        if Path(tok).name == "transferkit":
            return tokens[k + 1 :]
        if tok == "transferkit.cli" and k > 0 and tokens[k - 1] == "-m":
            return tokens[k + 1 :]
    return None


def parse_command(args: list[str]) -> str:
    """Parse ``transferkit ARGS`` with the real click commands (nothing runs); the
    sub-command name. Raises click's usage errors for unknown commands or options."""
    import typer

    from transferkit.cli import app

    group = typer.main.get_command(app)
    rest = [a for a in args if a != "--debug"]
    if not rest:
        raise ValueError("`transferkit` without a sub-command")
    name, sub_args = rest[0], rest[1:]
    if name not in group.commands:
        raise ValueError(f"unknown sub-command {name!r} (known: {', '.join(group.commands)})")
    root = typer.Context(group, info_name="transferkit")
    if "--help" not in sub_args:
        group.commands[name].make_context(name, list(sub_args), parent=root)
    return name
