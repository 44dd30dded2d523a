"""rank_models / write_scores: order, controls, layers, LEEP with a head, errors, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.advisor.conftest import FEATURES, Toy
from tests.conftest import TinyVectorBackbone
from transferkit.advisor.candidates import classifier_head, parse_candidate, source_probs
from transferkit.advisor.ranking import rank_models, score_names, sort_rows, write_scores
from transferkit.data.types import Dataset, Splits
from transferkit.diagnostics.transferability import SCORES
from transferkit.errors import BackboneError, ConfigError, DataError


def test_parse_candidate() -> None:
    c = parse_candidate(" random:file:/x.safetensors ")
    assert (c.label, c.spec, c.pretrained) == (
        "random:file:/x.safetensors",
        "file:/x.safetensors",
        False,
    )
    assert parse_candidate("tk:mlp").pretrained
    with pytest.raises(ConfigError, match="names no backbone"):
        parse_candidate("random:")


def test_informative_checkpoint_ranks_above_random_and_unrelated(toy: Toy, tmp_path: Path) -> None:
    specs = [f"random:{toy.good}", toy.unrelated, toy.good]
    rows = rank_models(specs, toy.target, layers=True, max_examples=200)
    assert rows[0]["model"] == toy.good
    by = {r["model"]: r for r in rows}
    assert by[toy.good]["score"] > by[f"random:{toy.good}"]["score"] + 0.1
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert by[f"random:{toy.good}"]["control"] and not by[toy.good]["control"]
    good = by[toy.good]
    assert good["params"] == FEATURES * 16 + 16 + 16 * 16 + 16 and good["num_features"] == 16
    assert set(good["scores"]) == {"logme", "hscore", "gbc"}
    assert good["score"] == good["scores"]["logme"]
    assert any("leep skipped" in n for n in good["notes"])
    assert [layer["name"] for layer in good["layers"]] == ["linear0", "linear1"]
    assert good["best_layer"] in (0, 1)
    assert good["layers"][-1]["score"] == pytest.approx(good["score"])  # last group = forward

    json_path, png = write_scores(rows, tmp_path, data=toy.target, metric="logme")
    doc = json.loads(json_path.read_text())
    assert doc["metric"] == "logme" and doc["higher_is_better"] is True
    assert doc["data"] == str(toy.target)
    assert [r["model"] for r in doc["rows"]] == [r["model"] for r in rows]
    assert doc["rows"][0]["scores"]["logme"] == pytest.approx(rows[0]["score"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranking_is_deterministic_and_respects_the_cap(toy: Toy) -> None:
    a = rank_models([toy.good, "random:tk:mlp"], toy.target, max_examples=100, seed=3)
    b = rank_models([toy.good, "random:tk:mlp"], toy.target, max_examples=100, seed=3)
    assert [r["scores"] for r in a] == [r["scores"] for r in b]
    c = rank_models([toy.good], toy.target, max_examples=150, seed=3)
    assert c[0]["score"] != a[0]["score"]  # a different subset of the data


def test_sort_rows_puts_missing_scores_last() -> None:
    rows = [{"score": None}, {"score": 0.1}, {"score": 0.5}]
    assert [r["score"] for r in sort_rows(rows, "logme")] == [0.5, 0.1, None]


def test_score_names_skip_notes() -> None:
    names, notes = score_names("logme", has_head=False, task="classification")
    assert names == ["logme", "hscore", "gbc"] and len(notes) == 2
    names, notes = score_names("leep", has_head=True, task="classification")
    assert names == ["leep", "logme", "hscore", "gbc", "nce"] and not notes
    names, _ = score_names("logme", has_head=False, task="regression")
    assert names == ["logme"]


class HeadedBackbone(TinyVectorBackbone):
    """A tiny backbone that keeps a 3-class source classifier (like EfficientNet-Lite0)."""

    def __init__(self) -> None:
        super().__init__(in_features=FEATURES, width=8)
        self.spec = "test:headed"
        g = torch.Generator().manual_seed(0)
        self.register_buffer("imagenet_weight", torch.randn(3, 8, generator=g))
        self.register_buffer("imagenet_bias", torch.zeros(3))


def _splits(x: np.ndarray, y: np.ndarray) -> Splits:
    ds = Dataset("toy", "tabular", x, y, classes=["a", "b", "c", "d"])
    return Splits(ds, ds.subset(range(10)), ds.subset(range(10)))


def test_leep_and_nce_use_the_source_head(toy: Toy) -> None:
    from transferkit.engine.extract import extract_features

    data = np.load(toy.target)
    splits = _splits(data["x"][:200], data["y"][:200])
    torch.manual_seed(0)
    bb = HeadedBackbone()
    rows = rank_models([bb], splits, metric="leep")
    row = rows[0]
    assert set(row["scores"]) == {"leep", "logme", "hscore", "gbc", "nce"}
    head = classifier_head(bb)
    assert head is not None and head[0].shape == (3, 8)
    f = extract_features(bb, splits.train.x)
    probs = source_probs(f, head)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    expected = SCORES.get("leep")(None, splits.train.y, source_probs=probs)
    assert row["score"] == pytest.approx(expected)
    # random-init controls never use a head (their "source classes" mean nothing)
    assert classifier_head(TinyVectorBackbone()) is None


def test_leep_without_any_head_is_a_config_error(toy: Toy) -> None:
    with pytest.raises(ConfigError, match="source classifier head"):
        rank_models([toy.good], toy.target, metric="leep")


def test_modality_mismatch_names_model_and_data(toy: Toy) -> None:
    with pytest.raises(ConfigError) as exc:
        rank_models(["tk:smallcnn"], toy.target)
    msg = exc.value.message
    assert "tk:smallcnn" in msg and "image" in msg and "tabular" in msg and "tk:mlp" in msg


def test_bad_inputs_raise_clear_errors(toy: Toy, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown transferability score"):
        rank_models([toy.good], toy.target, metric="logmee")
    with pytest.raises(ConfigError, match="no models"):
        rank_models([], toy.target)
    with pytest.raises(BackboneError, match="no such checkpoint"):
        rank_models([f"file:{tmp_path / 'missing.safetensors'}"], toy.target)
    with pytest.raises(DataError, match="file not found"):
        rank_models([toy.good], tmp_path / "nope.npz")
    reg = tmp_path / "reg.npz"
    np.savez(reg, x=np.zeros((30, FEATURES), np.float32), y=np.arange(30, dtype=np.float32))
    with pytest.raises(ConfigError, match="needs class labels"):
        rank_models([toy.good], {"path": str(reg), "task": "regression"}, metric="gbc")
