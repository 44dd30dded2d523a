"""Modality from inputs: arrays / DataFrames, strings (a tiny BERT), PIL images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.backbones.conftest import write_tiny_bert
from tests.sklearn.conftest import FAST
from transferkit.sklearn import EstimatorInputError, TransferClassifier
from transferkit.sklearn._inputs import detect_modality, read_y


def test_detect_modality_from_the_inputs() -> None:
    img = Image.new("L", (4, 4))
    assert detect_modality(np.zeros((3, 2))) == "tabular"
    assert detect_modality(pd.DataFrame({"a": [1.0], "b": [2.0]})) == "tabular"
    assert detect_modality([[1, 2], [3, 4]]) == "tabular"
    assert detect_modality(np.zeros(3)) == "tabular"  # 1-D numbers: rejected later as 1-D
    assert detect_modality(["a b", "c"]) == "text"
    assert detect_modality(np.array(["a", "b"])) == "text"
    assert detect_modality(pd.Series(["a", "b"])) == "text"
    assert detect_modality(pd.DataFrame({"review": ["good", "bad"]})) == "text"
    assert detect_modality([img, img]) == "image"
    assert detect_modality(pd.Series([img, img])) == "image"
    assert detect_modality(np.zeros((2, 8, 8), np.uint8)) == "image"
    assert detect_modality(np.zeros((2, 8, 8, 3), np.float32)) == "image"


def test_mixed_inputs_and_bad_targets_name_the_row() -> None:
    clf = TransferClassifier(**FAST)
    with pytest.raises(EstimatorInputError) as info:
        clf.fit(["good", "bad", 3.0], [0, 1, 0])
    assert info.value.where is not None and info.value.where.startswith("X[2]")
    with pytest.raises(EstimatorInputError, match="requires y"):
        read_y(None, 3, numeric=False)
    with pytest.raises(EstimatorInputError, match="inconsistent numbers of samples"):
        read_y([0, 1], 3, numeric=False)
    with pytest.warns(Warning, match="column-vector y"):
        assert read_y(np.array([[0], [1]]), 2, numeric=False).shape == (2,)


def _images(n: int) -> tuple[list[Image.Image], np.ndarray, np.ndarray]:
    """Dark (class 0) and bright (class 1) 8x8 grayscale images with a little noise."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    arr = (40 + 170 * y[:, None, None] + rng.integers(0, 40, (n, 8, 8))).astype(np.uint8)
    return [Image.fromarray(a, mode="L") for a in arr], arr, y


def test_pil_images_train_a_small_cnn_and_match_the_array_path() -> None:
    imgs, arr, y = _images(32)
    opts = {"in_chans": 1, "width": 4, "depth": 2}
    clf = TransferClassifier(**{**FAST, "backbone": "tk:smallcnn", "backbone_options": opts})
    clf.fit(imgs, y)
    assert clf.modality_ == "image" and not hasattr(clf, "n_features_in_")
    assert clf.score(imgs, y) == 1.0
    assert clf.transform(imgs).shape == (32, 8)
    # the same pixels as a [N, H, W] uint8 array give the same probabilities
    np.testing.assert_allclose(clf.predict_proba(arr), clf.predict_proba(imgs), atol=1e-6)
    with pytest.raises(EstimatorInputError, match="fitted on image inputs"):
        clf.predict(np.zeros((2, 3)))


def test_strings_train_a_text_backbone_from_a_pandas_column(tmp_path) -> None:
    bert = write_tiny_bert(tmp_path / "bert", layers=1, hidden=16)
    pos = ["the cat sat on the mat", "a man is playing guitar", "music loud today"]
    neg = ["stock market fell sharply", "the dog runs in park today", "someone plays"]
    df = pd.DataFrame({"sentence": pos * 4 + neg * 4})
    y = np.array([1] * 12 + [0] * 12)
    clf = TransferClassifier(
        f"hf:{bert}", "finetune", {"backbone_lr_mult": 1.0}, lr=1e-2, epochs=6, random_state=0
    ).fit(df, y)
    assert clf.modality_ == "text" and clf.backbone_ == f"hf:{bert}"
    assert not hasattr(clf, "n_features_in_") and list(clf.feature_names_in_) == ["sentence"]
    assert clf.transform(df["sentence"][:5]).shape == (5, 16)  # a Series works too
    assert clf.score(df, y) == 1.0
    assert list(clf.predict(["the cat sat on the mat", "stock market fell sharply"])) == [1, 0]
    with pytest.raises(EstimatorInputError, match="named 'text'"):
        clf.predict(df.rename(columns={"sentence": "text"}))
    with pytest.raises(EstimatorInputError, match="fitted on text inputs"):
        clf.predict(np.zeros((2, 16)))
