"""write_report on full, minimal, regression and damaged run directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.report.checks import assert_self_contained, parse
from tests.report.fakes import classification_metrics, make_run
from transferkit.errors import CheckpointError
from transferkit.report import write_report


def _report(run_dir: Path) -> str:
    out = write_report(run_dir)
    assert out == run_dir / "report.html" and out.is_file()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # atomic, no leftovers
    return out.read_text(encoding="utf-8")


def test_full_report(tmp_path: Path) -> None:
    text = _report(make_run(tmp_path, "full"))
    images = assert_self_contained(text)
    assert len(images) == 2  # learning curves + confusion matrix
    # the verdict banner comes first, coloured as positive, with the documented sentence
    assert text.index('id="verdict"') < text.index('id="metrics-table"')
    assert re.search(r'class="verdict positive"', text)
    assert (
        "Transfer helped: +11.0 points accuracy vs the best target-only baseline (TF-IDF +"
        " logistic regression), 95% CI [+6.0, +16.0]." in parse(text).text
    )
    # metrics table: target + 2 baselines + difference row; best baseline marked, best bold
    table = text[text.index('id="metrics-table"') :].split("</table>")[0]
    assert table.count("<tr") == 1 + 4
    assert "best baseline</span>" in table and "<strong>81.00%</strong>" in table
    assert "+11.0 pts" in table
    # per-seed rows with the gain, per-class table, timing, extras, config
    seeds = text[text.index('id="per-seed-table"') :].split("</table>")[0]
    assert seeds.count("<tr") == 4 and "+12.0 pts" in seeds
    assert 'id="per-class-table"' in text and "82.50%" in text
    assert "2 min 03 s" in text and "stages · random init" in text
    assert 'id="extra-deployment"' in text and "latency_ms" in text
    assert 'id="extra-calibration_by_group"' in text
    assert "forgetting" not in text.lower().split("<main>")[1]
    assert "label_budget: 32" in text
    assert "Incomplete run directory" not in text


def test_user_text_is_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    m = classification_metrics(name=f"tweets {evil}")
    m["details"]["classes"] = [evil, "ok & fine"]
    m["details"]["per_class"] = {evil: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}}
    m["baselines"]["tfidf_logreg"]["description"] = '"><img src=x onerror=alert(1)>'
    m["notes_from_user"] = {evil: evil}
    d = make_run(tmp_path, "full", metrics=m)
    (d / "config.yaml").write_text(f"name: {evil}\n")
    text = _report(d)
    assert "<script" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert_self_contained(text)


@pytest.mark.parametrize(
    ("verdict", "delta", "ci", "css", "head"),
    [
        ("negative", -0.05, (-0.08, -0.02), "negative", "Negative transfer: −5.0 points"),
        ("inconclusive", 0.01, (-0.02, 0.04), "inconclusive", "Inconclusive: +1.0 points"),
    ],
)
def test_banner_colour_and_text_follow_the_verdict(
    tmp_path: Path, verdict: str, delta: float, ci: tuple[float, float], css: str, head: str
) -> None:
    m = classification_metrics(delta=delta, ci=ci, verdict=verdict)
    text = _report(make_run(tmp_path, "full", metrics=m))
    assert f'class="verdict {css}"' in text and head in text


def test_minimal_report_says_what_is_missing(tmp_path: Path) -> None:
    text = _report(make_run(tmp_path, "minimal"))
    assert_self_contained(text)
    assert 'class="verdict none"' in text and "No verdict" in text
    assert "config.yaml is missing." in text and "log.jsonl is missing." in text
    assert "66.00%" in text and "<img" not in text


def test_regression_report(tmp_path: Path) -> None:
    text = _report(make_run(tmp_path, "regression"))
    assert len(assert_self_contained(text)) == 1  # learning curves only, no confusion matrix
    assert 'class="verdict inconclusive"' in text
    assert "Inconclusive: +0.012 R²" in text
    assert "Validation R²" not in text  # the plot title lives in the PNG, not the HTML
    assert 'id="per-class-table"' not in text and "0.4120" in text
    # lower-is-better metrics: the transfer model's lower MAE is the bold one
    assert "<strong>1.0200</strong>" in text and "<strong>1.0500</strong>" not in text


def test_missing_log_and_corrupt_log(tmp_path: Path) -> None:
    text = _report(make_run(tmp_path, "missing_log"))
    assert "log.jsonl is missing." in text and "No learning curves" in text
    assert len(assert_self_contained(text)) == 1
    text = _report(make_run(tmp_path, "corrupt_log"))
    assert "were not valid JSON records and were skipped" in text
    assert len(assert_self_contained(text)) == 2


def test_unreadable_metrics_still_render(tmp_path: Path) -> None:
    d = make_run(tmp_path, "full")
    (d / "metrics.json").write_text('{"method": "finetune", "target": {"accu')
    text = _report(d)
    assert 'class="verdict none"' in text and "metrics.json is not valid JSON" in text
    assert len(assert_self_contained(text)) == 1  # the log still gives learning curves


def test_mistyped_keys_degrade_gracefully(tmp_path: Path) -> None:
    m = {
        "method": ["not", "a", "string"],
        "dataset": "tweets",
        "target": [0.5],
        "baselines": {"a": 3, "b": {"accuracy": "high"}},
        "transfer_gain": {"delta": 0.1, "ci95": "wide", "verdict": "maybe"},
        "target_per_seed": [1, {"seed": 0}],
        "details": {"confusion_matrix": [[1, 2], [3]], "classes": 5, "per_class": [1]},
        "timing": {"total_s": "long"},
        "seeds": "all",
        "primary_metric": 7,
    }
    text = _report(make_run(tmp_path, "minimal", metrics=m))
    assert_self_contained(text)
    assert "Verdict unknown: +0.100 metric" in text  # no metric name known: raw units
    assert "The confusion matrix is malformed" in text


def test_not_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        write_report(tmp_path)


def test_report_is_rewritten_not_appended(tmp_path: Path) -> None:
    d = make_run(tmp_path, "full")
    first = _report(d)
    m = json.loads((d / "metrics.json").read_text())
    m["method"] = "lwf"
    (d / "metrics.json").write_text(json.dumps(m))
    second = _report(d)
    assert "<h1>lwf on" in second and "<h1>finetune on" not in second
    assert abs(len(second) - len(first)) < 2000
