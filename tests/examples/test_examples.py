"""The examples: one per registered method, each valid, each runnable through the real CLI.

Every example runs in the smoke mode of ``tools/gen_docs.py`` (``train.max_steps=5`` on
200 examples, one seed, no baselines), in process through ``transferkit.cli.main`` (the
console script's entry point), and must exit normally and write a ``metrics.json``.
A newly registered method fails ``test_every_registered_method_has_its_example`` until
``examples/<family>/<method>.yaml`` exists.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from transferkit.cli import main
from transferkit.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT / "tools"))
from gen_docs import SMOKE_SETS, SMOKE_TEXT_SETS  # noqa: E402  (tools/ is not a package)

FILES = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*/*.yaml"))
SOURCE = "fine-tuning/pretrain_source.yaml"


def _doc(example: str) -> dict:
    return yaml.safe_load((EXAMPLES / example).read_text(encoding="utf-8"))


def _cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_every_registered_method_has_its_example() -> None:
    missing = [
        f"examples/{cls.family}/{name}.yaml"
        for name, cls in METHODS.items()
        if not (EXAMPLES / cls.family / f"{name}.yaml").is_file()
    ]
    assert not missing, f"registered methods without an example: {missing}"


def test_examples_sit_in_their_family_and_use_registered_methods() -> None:
    assert len(FILES) >= len(METHODS.names())
    for ex in FILES:
        name = (_doc(ex).get("method") or {}).get("name", "finetune")
        assert name in METHODS, f"examples/{ex}: unknown method {name!r}"
        assert ex.split("/")[0] == METHODS.get(name).family, f"examples/{ex}: wrong folder"
        first = (EXAMPLES / ex).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), f"examples/{ex}: start with a comment saying what it shows"


def test_results_table_covers_exactly_the_examples() -> None:
    rows = yaml.safe_load((EXAMPLES / "results.yaml").read_text(encoding="utf-8"))
    listed = [r["example"] for r in rows]
    assert sorted(listed) == FILES, set(listed) ^ set(FILES)
    for r in rows:
        assert r["shows"] and r["result"] and r["source"], r["example"]
        if "benchmark" in r:
            assert (ROOT / "docs" / r["benchmark"]).is_file(), r["benchmark"]


def test_readme_documents_the_smoke_mode() -> None:
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for s in (*SMOKE_SETS, *SMOKE_TEXT_SETS):
        assert f"--set {s}" in text, s


@pytest.mark.parametrize("example", FILES)
def test_example_validates(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["validate", str(EXAMPLES / example)]) == 0, capsys.readouterr().err
    assert "config OK" in capsys.readouterr().out


def _smoke_args(example: str, out: Path, source: Path | None) -> list[str]:
    args = ["run", str(EXAMPLES / example), "--out", str(out), "--quiet"]
    sets = list(SMOKE_SETS)
    doc = _doc(example)
    if str((doc.get("model") or {}).get("backbone", "")).startswith("packaged:minilm"):
        sets += SMOKE_TEXT_SETS
    if source is not None and (doc.get("model") or {}).get("source_run"):
        sets.append(f"model.source_run={source}")
    for s in sets:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke-mode source model that the fine-tuning examples on digits start from."""
    out = tmp_path_factory.mktemp("examples") / "source"
    assert _cli(_smoke_args(SOURCE, out, None)) == 0
    return out


@pytest.mark.parametrize("example", FILES)
def test_example_runs_in_smoke_mode(example: str, source_run: Path, tmp_path: Path) -> None:
    out = source_run if example == SOURCE else tmp_path / "run"
    if example != SOURCE:
        code = _cli(_smoke_args(example, out, source_run))
        assert code == 0, f"examples/{example} exited with {code}"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    doc = _doc(example)
    assert metrics["method"] == doc["method"]["name"]
    assert metrics["family"] == example.split("/")[0]
    score = metrics["target"][metrics["primary_metric"]]
    assert math.isfinite(score) and 0.0 <= score <= 1.0
    assert metrics["seeds"] == [0]
    assert (out / "config.yaml").is_file() and (out / "log.jsonl").is_file()
