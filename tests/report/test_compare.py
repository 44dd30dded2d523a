"""compare_runs: one row per run, charts embedded, incomplete runs tolerated."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.checks import assert_self_contained, parse
from tests.report.fakes import classification_metrics, make_run
from transferkit.errors import CheckpointError, TransferkitError
from transferkit.report import compare_runs, write_report


def _rows(text: str) -> list[str]:
    table = text[text.index('id="compare-table"') :].split("</table>")[0]
    return table.split("<tbody>")[1].split("<tr")[1:]


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    neg = classification_metrics(delta=-0.05, ci=(-0.08, -0.02), verdict="negative")
    neg["method"] = "dann"
    return [
        make_run(tmp_path / "runs", "full", name="finetune"),
        make_run(tmp_path / "runs", "full", name="dann", metrics=neg),
        make_run(tmp_path / "runs", "minimal", name="probe"),
    ]


def test_one_row_per_run_with_gain_ci_and_verdict(tmp_path: Path, runs: list[Path]) -> None:
    write_report(runs[0])
    out = compare_runs(runs, tmp_path / "cmp" / "comparison.html")
    text = out.read_text(encoding="utf-8")
    images = assert_self_contained(text)
    assert len(images) == 2  # bar charts + overlaid validation curves
    rows = _rows(text)
    assert len(rows) == 3
    assert "+11.0 pts" in rows[0] and "[+6.0, +16.0]" in rows[0] and "pill positive" in rows[0]
    assert "dann" in rows[1] and "−5.0 pts" in rows[1] and "pill negative" in rows[1]
    assert "66.00%" in rows[2] and "pill none" in rows[2]
    assert "2 min 03 s" in rows[0] and "tfidf_logreg" in rows[0]
    # the first run has a report: linked relatively, the others are plain text
    hrefs = [v for tag, attr, v in parse(text).urls if attr == "href"]
    assert hrefs == ["../runs/finetune/report.html"]
    assert "1 positive, 1 negative transfer, 1 no verdict" in text
    assert "probe: config.yaml is missing." in text
    assert "Dataset</th>" not in text  # all runs on one dataset: shown once in the header


def test_out_directory_and_clashing_names(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", "full", name="run")
    b = make_run(tmp_path / "b", "regression", name="run")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = compare_runs([a, b], out_dir)
    assert out == out_dir / "comparison.html"
    text = out.read_text(encoding="utf-8")
    rows = _rows(text)
    assert len(rows) == 2 and "a/run" in rows[0] and "b/run" in rows[1]
    assert "R² 0.4120" in rows[1]  # a different primary metric is named in its cell
    assert "Dataset</th>" in text and "Not charted (no target accuracy): b/run." in text
    assert_self_contained(text)


def test_escaping_in_comparison(tmp_path: Path) -> None:
    m = classification_metrics(name="<script>x</script>")
    d = make_run(tmp_path, "full", name='<b>bold & "q"', metrics=m)
    text = compare_runs([d], tmp_path / "c.html").read_text(encoding="utf-8")
    assert "<script" not in text and "<b>bold" not in text and "&lt;b&gt;bold" in text


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(TransferkitError, match="no run directories"):
        compare_runs([], tmp_path / "c.html")
    with pytest.raises(CheckpointError):
        compare_runs([tmp_path / "missing"], tmp_path / "c.html")
    assert not (tmp_path / "c.html").exists()
