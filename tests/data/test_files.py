"""Bring-your-own data: tables, .npz, image folders, and every bad-input error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transferkit.data import load_dataset, load_full_dataset
from transferkit.errors import DataError

ROWS = [("good film", "pos"), ("bad film", "neg"), ("great", "pos"), ("awful", "neg")] * 10


def _csv(path: Path, rows=ROWS, header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    return path


def _png(path: Path, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _image_folder(root: Path) -> Path:
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(6):
            _png(root / cls / f"{i:02d}.png", (8 + i, 6 + 2 * i), value)  # mixed sizes
    return root


# ---- good input ---------------------------------------------------------------------


def test_csv_text_and_labels_in_sorted_class_order(tmp_path) -> None:
    ds = load_full_dataset(_csv(tmp_path / "r.csv"))
    assert ds.modality == "text" and ds.classes == ["neg", "pos"]
    assert ds.x[:2] == ["good film", "bad film"] and ds.y[:2].tolist() == [1, 0]
    assert ds.name == "r"


def test_declared_classes_fix_the_ids(tmp_path) -> None:
    ds = load_full_dataset(_csv(tmp_path / "r.csv"), classes=["pos", "neg", "meh"])
    assert ds.classes == ["pos", "neg", "meh"] and ds.y[:2].tolist() == [0, 1]


def test_numeric_labels_sort_numerically(tmp_path) -> None:
    rows = [(f"t{i}", lab) for i, lab in enumerate([10, 2, 1, 2, 10, 1] * 5)]
    ds = load_full_dataset(_csv(tmp_path / "n.csv", rows))
    assert ds.classes == ["1", "2", "10"] and ds.y[:3].tolist() == [2, 1, 0]


def test_mapping_spec_jsonl_tsv_parquet(tmp_path) -> None:
    recs = [{"body": t, "stars": lab} for t, lab in ROWS]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    spec = {"path": str(tmp_path / "r.jsonl"), "text_column": "body", "label_column": "stars"}
    s = load_dataset(spec, seed=0)
    assert s.train.classes == ["neg", "pos"] and len(s.train) + len(s.val) + len(s.test) == 40
    df = pd.DataFrame(recs)
    df.to_csv(tmp_path / "r.tsv", sep="\t", index=False)
    df.to_parquet(tmp_path / "r.parquet")
    for name in ("r.tsv", "r.parquet"):
        ds = load_full_dataset(tmp_path / name, text_column="body", label_column="stars")
        assert ds.x == [t for t, _ in ROWS]


def test_regression_task_and_feature_columns(tmp_path) -> None:
    df = pd.DataFrame({"a": np.arange(30.0), "b": np.ones(30), "y": np.linspace(0, 1, 30)})
    df.to_csv(tmp_path / "t.csv", index=False)
    ds = load_full_dataset(
        tmp_path / "t.csv", feature_columns=["a", "b"], label_column="y", task="regression"
    )
    assert ds.modality == "tabular" and ds.x.shape == (30, 2) and ds.x.dtype == np.float32
    assert ds.task == "regression" and ds.y.dtype == np.float32 and ds.classes is None


def test_npz_image_and_tabular(tmp_path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "img.npz",
        x=rng.integers(0, 255, (20, 5, 5), dtype=np.uint8),
        y=np.array(["a", "b"] * 10),
    )
    np.savez(tmp_path / "tab.npz", x=rng.normal(size=(20, 3)), y=np.array([0, 1] * 10))
    img = load_full_dataset(tmp_path / "img.npz")
    tab = load_full_dataset(tmp_path / "tab.npz")
    assert img.modality == "image" and img.x.dtype == np.uint8 and img.classes == ["a", "b"]
    assert tab.modality == "tabular" and tab.x.dtype == np.float32 and tab.classes == ["0", "1"]


def test_image_folder_sorted_paths_and_mixed_sizes(tmp_path) -> None:
    root = _image_folder(tmp_path / "imgs")
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "README.md").write_text("ignored: not an image, not in a class folder")
    _png(root / "cat" / ".ipynb_checkpoints" / "00-checkpoint.png", (4, 4), 0)
    ds = load_full_dataset(root)
    assert ds.modality == "image" and ds.classes == ["cat", "dog"]
    assert ds.x == sorted(ds.x) and len(ds.x) == 12
    assert Path(ds.x[0]).is_absolute() and ds.x[0].endswith("cat/00.png")
    assert ds.y.tolist() == [0] * 6 + [1] * 6


# ---- bad input ----------------------------------------------------------------------


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match="file not found") as err:
        load_dataset(str(tmp_path / "nope.csv"))
    assert err.value.where == str(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="file not found"):
        load_dataset({"path": tmp_path / "nope.csv"})
    with pytest.raises(DataError, match="no built-in dataset or file") as err:
        load_dataset(str(tmp_path / "folder_that_is_not_there"))
    assert "digits" in err.value.fix


def test_unsupported_extension(tmp_path) -> None:
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'") as err:
        load_dataset(tmp_path / "data.xlsx")
    assert ".csv" in err.value.fix


def test_missing_column_lists_columns_and_suggests(tmp_path) -> None:
    path = _csv(tmp_path / "r.csv", header="text,labels")
    with pytest.raises(DataError, match="no column 'label'") as err:
        load_dataset(path)
    assert "label_column='labels'" in err.value.fix and "text, labels" in err.value.fix
    assert str(path) in err.value.where


@pytest.mark.parametrize("content", ["", "\n\n", "text,label\n"])
def test_empty_file_or_no_rows(tmp_path, content) -> None:
    (tmp_path / "e.csv").write_text(content)
    with pytest.raises(DataError, match=r"empty|no data rows"):
        load_dataset(tmp_path / "e.csv")


def test_only_one_class(tmp_path) -> None:
    path = _csv(tmp_path / "one.csv", [("a", "pos"), ("b", "pos"), ("c", "pos")])
    with pytest.raises(DataError, match="only one class"):
        load_dataset(path)


def test_label_outside_declared_set_names_the_row(tmp_path) -> None:
    path = _csv(tmp_path / "r.csv", [*ROWS[:5], ("odd", "neutral"), *ROWS[5:]])
    with pytest.raises(DataError, match="'neutral' is not one of") as err:
        load_dataset(path, classes=["neg", "pos"])
    assert err.value.where.endswith("row 6")


def test_nan_label_names_the_row(tmp_path) -> None:
    path = _csv(tmp_path / "r.csv", [*ROWS[:3], ("no label", ""), *ROWS[3:]])
    with pytest.raises(DataError, match="missing") as err:
        load_dataset(path)
    assert "row 4" in err.value.where and "'label'" in err.value.where


def test_undecodable_text_names_file_line_and_encoding(tmp_path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text,label\ngood,pos\ncaf\xe9,neg\n")
    with pytest.raises(DataError, match="utf-8") as err:
        load_dataset(path)
    assert str(path) in err.value.where and "line 3" in err.value.where
    assert "latin-1" in err.value.fix
    ds = load_full_dataset(path, encoding="latin-1")
    assert ds.x[1] == "café"


def test_bad_jsonl_line_is_named(tmp_path) -> None:
    (tmp_path / "r.jsonl").write_text('{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match="invalid JSON") as err:
        load_dataset(tmp_path / "r.jsonl")
    assert err.value.where.endswith("line 2")


def test_unreadable_image_is_named(tmp_path) -> None:
    root = _image_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="unreadable image") as err:
        load_dataset(root)
    assert err.value.where.endswith("broken.png")


def test_non_image_file_in_class_folder_is_reported(tmp_path) -> None:
    root = _image_folder(tmp_path / "imgs")
    (root / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not an image file") as err:
        load_dataset(root)
    assert err.value.where.endswith("notes.txt")


def test_image_folder_structure_errors(tmp_path) -> None:
    loose = tmp_path / "loose"
    _png(loose / "a.png", (4, 4), 0)
    with pytest.raises(DataError, match="outside any class sub-folder"):
        load_dataset(loose)
    empty = _image_folder(tmp_path / "imgs")
    (empty / "zebra").mkdir()
    with pytest.raises(DataError, match="'zebra' holds no images"):
        load_dataset(empty)


def test_npz_errors(tmp_path) -> None:
    np.savez(tmp_path / "nox.npz", inputs=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="no array 'x'") as err:
        load_dataset(tmp_path / "nox.npz")
    assert "inputs" in err.value.fix
    np.savez(tmp_path / "nan.npz", x=np.zeros((4, 2)), y=np.array([0.0, np.nan, 1.0, 0.0]))
    with pytest.raises(DataError, match="missing") as err:
        load_dataset(tmp_path / "nan.npz")
    assert "index 1" in err.value.where
    x = np.zeros((4, 2))
    x[2, 1] = np.inf
    np.savez(tmp_path / "inf.npz", x=x, y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="NaN or infinite") as err:
        load_dataset(tmp_path / "inf.npz")
    assert "index 2" in err.value.where


def test_non_numeric_regression_target_and_bad_task(tmp_path) -> None:
    path = _csv(tmp_path / "r.csv")
    with pytest.raises(DataError, match="not a number") as err:
        load_dataset(path, task="regression")
    assert err.value.where.endswith("row 1")
    with pytest.raises(DataError, match="unknown task"):
        load_dataset(path, task="ranking")


def test_unknown_option_and_bad_mapping(tmp_path) -> None:
    path = _csv(tmp_path / "r.csv")
    with pytest.raises(DataError, match="unknown option 'text_col'") as err:
        load_dataset(path, text_col="body")
    assert "'text_column'" in err.value.fix
    with pytest.raises(DataError, match="needs a 'name'"):
        load_dataset({"text_column": "body"})
    assert load_full_dataset({"path": path, "name": "reviews"}).name == "reviews"


def test_na_like_text_stays_text(tmp_path) -> None:
    ds = load_full_dataset(_csv(tmp_path / "r.csv", [("NA", "pos"), ("null", "neg"), *ROWS]))
    assert ds.x[:2] == ["NA", "null"]


def test_npz_shape_errors(tmp_path) -> None:
    np.savez(tmp_path / "flat.npz", x=np.zeros(4), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match=r"x has shape \(4,\)"):
        load_dataset(tmp_path / "flat.npz")
    np.savez(tmp_path / "short.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="one label per row"):
        load_dataset(tmp_path / "short.npz")
