"""Every code block of the documentation is tested (docs/**/*.md and README.md).

* ``python``: the blocks of a page run in order, in one namespace, in a temporary working
  directory (they are written to be fast: small data, few steps);
* ``yaml``: each config, config fragment or included config validates with the loader;
* shell (``bash``, ``sh``, ``console`` or unlabelled): each ``transferkit`` command parses
  with the real CLI, its sub-command's ``--help`` works, and an ``examples/...yaml`` it
  names exists.

A block is skipped only with ``<!-- skip-test: reason -->`` above it (see
``tests/docs/blocks.py``); the skips are counted and must each state a reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.docs.blocks import (
    SHELLS,
    Block,
    extract_blocks,
    local_references,
    parse_command,
    transferkit_commands,
    yaml_configs,
)

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")] + ["README.md"]
)
#: README.md's Python block runs ``experiment.yaml``: the test writes README's own
#: experiment there, cut to a smoke run (one seed, a few steps, short texts).
README_FAST = (
    "seeds=[0]",
    "train.max_steps=5",
    "data.max_examples=300",
    "data.max_eval_examples=100",
    "baselines.random_init=false",
    "report=false",
    "model.backbone_options.max_length=32",
)
MAX_SKIPS = 3


def _blocks(page: str) -> list[Block]:
    return extract_blocks((ROOT / page).read_text(encoding="utf-8"), page)


def _all_blocks() -> list[Block]:
    return [b for page in PAGES for b in _blocks(page)]


def _ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def _readme_setup(cwd: Path, blocks: list[Block]) -> None:
    from transferkit.experiment.config import apply_overrides

    first = next(b for b in blocks if b.lang == "yaml")
    doc = apply_overrides(yaml.safe_load(first.code), README_FAST)
    (cwd / "experiment.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")


SETUP = {"README.md": _readme_setup}
PY_PAGES = [p for p in PAGES if any(b.lang == "python" and not b.skip for b in _blocks(p))]


@pytest.mark.parametrize("page", PY_PAGES)
def test_python_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    blocks = _blocks(page)
    for b in blocks:
        if b.file:
            (tmp_path / b.file).write_text(b.code, encoding="utf-8")
    if page in SETUP:
        SETUP[page](tmp_path, blocks)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for b in blocks:
        if b.lang == "python" and not b.skip:
            exec(compile(b.code, b.where, "exec"), namespace)  # the page's own code


YAML_BLOCKS = [b for b in _all_blocks() if b.lang in ("yaml", "yml") and not b.skip]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
def test_yaml_blocks_validate(block: Block) -> None:
    from transferkit.experiment.config import validate_config

    docs = yaml_configs(block, ROOT)
    for kind, doc in docs:
        if kind != "other":
            validate_config(doc, f"{block.where} ({kind})")
    if block.page.startswith(("docs/guides", "docs/getting", "docs/methods")):
        assert all(k != "other" for k, _ in docs), f"{block.where}: not a transferkit config"


SHELL_BLOCKS = [b for b in _all_blocks() if b.lang in SHELLS and not b.skip]
COMMANDS = [(b, args) for b in SHELL_BLOCKS for args in transferkit_commands(b.code)]


@pytest.mark.parametrize(
    ("block", "args"), COMMANDS, ids=[f"{b.where}:{a[0] if a else ''}" for b, a in COMMANDS]
)
def test_transferkit_commands_parse(block: Block, args: list[str]) -> None:
    from transferkit.cli import app

    name = parse_command(args)
    res = CliRunner().invoke(app, [name, "--help"])
    assert res.exit_code == 0, f"{block.where}: transferkit {name} --help: {res.output}"
    for a in args:
        if a.startswith("examples/") and a.endswith(".yaml"):
            assert (ROOT / a).is_file(), f"{block.where}: {a} does not exist"


def test_scripts_and_make_targets_of_shell_blocks_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for b in SHELL_BLOCKS:
        scripts, targets = local_references(b.code)
        for script in scripts:
            assert (ROOT / script).is_file(), f"{b.where}: {script} does not exist"
        for target in targets:
            assert f"\n{target}:" in makefile, f"{b.where}: no make target {target!r}"


def test_every_page_is_covered_and_skips_are_justified() -> None:
    blocks = _all_blocks()
    skipped = [b for b in blocks if b.skip is not None]
    for b in skipped:
        print(f"skipped {b.where} ({b.lang}): {b.skip}")
        assert len(b.skip) >= 10, f"{b.where}: a skip needs a stated reason"
    assert len(skipped) <= MAX_SKIPS, [b.where for b in skipped]
    counts = {lang: sum(b.lang == lang for b in blocks) for lang in ("python", "yaml")}
    assert counts["python"] >= 10 and counts["yaml"] >= 20, counts
    assert COMMANDS, "no transferkit command found in any shell block"
    assert "README.md" in PY_PAGES and "docs/getting-started.md" in PY_PAGES


def test_extractor_marks_and_commands() -> None:
    text = (
        "x\n<!-- file: a.yaml -->\n```yaml\nk: 1\n```\n\n<!-- skip-test: needs 4 GPUs here -->"
        "\n\n```python\nboom()\n```\n```bash\nOMP_NUM_THREADS=1 .venv/bin/transferkit run a.yaml "
        "\\\n  --set seeds=[0]  # note\nmake test && transferkit methods | head\n"
        "accelerate launch -m transferkit.cli run b.yaml --out r\n```\n"
    )
    a, b, c = extract_blocks(text, "p.md")
    assert (a.lang, a.file, a.line, a.code) == ("yaml", "a.yaml", 3, "k: 1")
    assert b.skip == "needs 4 GPUs here" and b.file is None
    assert transferkit_commands(c.code) == [
        ["run", "a.yaml", "--set", "seeds=[0]"],
        ["methods"],
        ["run", "b.yaml", "--out", "r"],
    ]
    scripts, targets = local_references(
        c.code + "\nnice -n 10 .venv/bin/python benchmarks/x.py --a"
    )
    assert scripts == ["benchmarks/x.py"] and targets == ["test"]
    assert parse_command(["run", "a.yaml", "--set", "seeds=[0]"]) == "run"
    with pytest.raises(Exception, match="--sett"):
        parse_command(["run", "a.yaml", "--sett", "x=1"])
    with pytest.raises(ValueError, match="unknown sub-command"):
        parse_command(["frobnicate"])


def test_yaml_kinds_fragments_and_elisions() -> None:
    code = (
        "data: {source: digits, target: mnist5k}\nmethod: {name: dann}\n---\n"
        "model: {backbone: tk:mlp, ...}\n---\nnot_a_config: 1\n---\n"
        "data: {target: digits}\nmodel: {backbone: tk:smallcnn}\n"
    )
    docs = yaml_configs(Block("p.md", 1, "yaml", code), ROOT)
    assert [k for k, _ in docs] == ["fragment", "fragment", "other", "config"]
    assert docs[0][1] == {
        "data": {"source": "digits", "target": "mnist5k"},
        "model": {"backbone": "tk:smallcnn"},
        "method": {"name": "dann"},
    }
    assert docs[1][1]["model"] == {"backbone": "tk:mlp"}  # the elision is dropped
    inc = Block("p.md", 1, "yaml", '--8<-- "examples/multi-task/multitask.yaml"')
    ((kind, doc),) = yaml_configs(inc, ROOT)
    assert kind == "include" and doc["method"]["name"] == "multitask"
