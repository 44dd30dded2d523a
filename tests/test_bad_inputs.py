"""A catalogue of bad inputs across the CLI, the config and the data (issue #9).

Each row builds one bad input under ``tmp_path`` (a YAML config, a CSV / JSONL / .npz
file, an image folder, a run directory) and returns the command line; the real CLI runs
in-process through ``typer.testing.CliRunner``. Every row must end with exit status 2, no
traceback, a message holding the row's substrings (what was wrong and where) and a fix
(``Fix:`` for transferkit errors, the ``--help`` pointer for command-line usage errors).
Rows not marked ``builds_model`` must fail before any model is built or trained.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from transferkit.cli import app


class Row(NamedTuple):
    id: str
    build: Callable[[Path], list[str]]  # writes the bad input under tmp_path, returns argv
    expect: tuple[str, ...]  # substrings of the message: the problem, the key/file, the fix
    builds_model: bool = False  # the error comes from the model (after "<stage>: training")


# --------------------------------------------------------------------------------- builders

BASE = "data: {target: digits}\nmodel: {backbone: tk:smallcnn}\n"
SMALL_RUN = "seeds: [0]\nbaselines: {enabled: false}\nreport: false\n"


def _q(path: Path) -> str:
    """A path as a YAML double-quoted scalar."""
    return json.dumps(str(path))


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _yaml(tmp: Path, text: str | bytes) -> Path:
    return _write(tmp / "c.yaml", text)


def _validate(text: str | bytes) -> Callable[[Path], list[str]]:
    return lambda tmp: ["validate", str(_yaml(tmp, text))]


def _run_cfg(tmp: Path, text: str) -> list[str]:
    return ["run", str(_yaml(tmp, text)), "--out", str(tmp / "run"), "-q"]


def _run_data(
    make: Callable[[Path], Path], options: str = "", model: str = "{backbone: tk:smallcnn}"
) -> Callable[[Path], list[str]]:
    """``transferkit run`` on a config whose target is the file or folder ``make`` writes."""

    def build(tmp: Path) -> list[str]:
        opts = f", target_options: {options}" if options else ""
        text = f"data: {{target: {_q(make(tmp))}{opts}}}\nmodel: {model}\n{SMALL_RUN}"
        return _run_cfg(tmp, text)

    return build


def _csv(text: str | bytes, name: str = "t.csv") -> Callable[[Path], Path]:
    return lambda tmp: _write(tmp / name, text)


def _texts(tmp: Path, n: int = 40, name: str = "texts.csv") -> Path:
    rows = "".join(f"review number {i},{'ab'[i % 2]}\n" for i in range(n))
    return _write(tmp / name, "text,label\n" + rows)


def _npz(x: np.ndarray, y: np.ndarray | None, name: str = "d.npz") -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        arrays = {"x": x} if y is None else {"x": x, "y": y}
        np.savez(tmp / name, **arrays)  # type: ignore[arg-type]
        return tmp / name

    return make


def _vectors(tmp: Path, features: int, name: str, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    np.savez(tmp / name, x=rng.normal(size=(n, features)).astype(np.float32), y=np.arange(n) % 2)
    return tmp / name


def _images(
    classes: str = "ab", n: int = 12, sizes: tuple[int, ...] = (8,), extra: str | None = None
) -> Callable[[Path], Path]:
    """An image folder ``imgs/<class>/<i>.png`` (sizes cycle over ``sizes``); ``extra``
    adds a bad entry: ``unreadable``, ``text_file``, ``loose`` or ``empty_class``."""

    def make(tmp: Path) -> Path:
        root = tmp / "imgs"
        for c in classes:
            (root / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                s = sizes[i % len(sizes)]
                Image.fromarray(np.full((s, s), 20 * i, np.uint8)).save(root / c / f"{i}.png")
        if extra == "unreadable":
            _write(root / "a" / "broken.png", b"\x89PNG but not really")
        elif extra == "text_file":
            _write(root / "a" / "notes.txt", "not an image")
        elif extra == "loose":
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "stray.png")
        elif extra == "empty_class":
            (root / "c").mkdir()
        return root

    return make


def _check_data(
    make: Callable[[Path], Path], model: str | Callable[[Path], str]
) -> Callable[[Path], list[str]]:
    """``transferkit validate --data`` on the data ``make`` writes and the backbone ``model``."""

    def build(tmp: Path) -> list[str]:
        spec = model if isinstance(model, str) else model(tmp)
        text = f"data: {{target: {_q(make(tmp))}}}\nmodel: {spec}\n"
        return ["validate", str(_yaml(tmp, text)), "--data"]

    return build


def _tiny_bert(tmp: Path) -> Path:
    """A one-layer BERT with a WordPiece tokenizer, random weights, written in code."""
    from tests.backbones.conftest import write_tiny_bert

    return write_tiny_bert(tmp / "bert", layers=1, hidden=8)


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _run_dir(tmp: Path, config: str = BASE, metrics: str | None = None) -> Path:
    """A run directory holding ``config.yaml`` (and ``metrics.json`` if given), no model."""
    d = tmp / "done"
    _write(d / "config.yaml", config)
    if metrics is not None:
        _write(d / "metrics.json", metrics)
    return d


def _da(
    target: Callable[[Path], Path], source: Callable[[Path], Path], model: str, *flags: str
) -> Callable[[Path], list[str]]:
    """A domain-adaptation (dann) config: ``run`` it, or ``validate`` it with ``flags``."""

    def build(tmp: Path) -> list[str]:
        text = (
            f"data: {{target: {_q(target(tmp))}, source: {_q(source(tmp))}}}\n"
            f"model: {model}\nmethod: {{name: dann}}\n{SMALL_RUN}"
        )
        cfg = _yaml(tmp, text)
        if flags:
            return ["validate", str(cfg), *flags]
        return ["run", str(cfg), "--out", str(tmp / "run"), "-q"]

    return build


RNG = np.random.default_rng(0)
LABELS = np.arange(40) % 2
MLP3 = "{backbone: tk:mlp, backbone_options: {in_features: 3}}"

# ------------------------------------------------------- config: `transferkit validate`

D, M = "data: {target: digits}\n", "model: {backbone: tk:smallcnn}\n"
# (id, config text, expected fragments); the first rows are BASE plus one bad section
VALIDATE_TABLE: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("unknown-top-key", BASE + "trian: {}\n", ("trian", "did you mean 'train'")),
    ("unknown-nested-key", BASE + "train: {bach_size: 8}\n", ("did you mean 'train.batch_size'",)),
    (
        "unknown-key-in-optional-section",
        BASE + "method: {name: distill}\nteacher: {backbon: tk:smallcnn}\n",
        ("teacher.backbon", "did you mean 'teacher.backbone'"),
    ),
    (
        "unknown-key-in-list-item",
        BASE + "method: {name: multitask}\ntasks: [{nme: digit}]\n",
        ("tasks.0.nme", "did you mean 'tasks.0.name'"),
    ),
    ("lr-wrong-type", BASE + "train: {lr: fast}\n", ("train.lr", "valid number")),
    ("lr-negative", BASE + "train: {lr: -0.1}\n", ("train.lr", "greater than 0")),
    ("lr-infinite", BASE + "train: {lr: .inf}\n", ("train.lr", "finite number")),
    ("boolean-as-number", BASE + "train: {epochs: yes}\n", ("train.epochs", "boolean true")),
    ("batch-size-zero", BASE + "train: {batch_size: 0}\n", ("train.batch_size", "greater than 0")),
    ("epochs-fractional", BASE + "train: {epochs: 1.5}\n", ("train.epochs", "fractional part")),
    ("seeds-empty", BASE + "seeds: []\n", ("seeds", "at least 1 item")),
    ("seeds-repeated", BASE + "seeds: [1, 1]\n", ("seeds", "distinct")),
    ("seeds-negative", BASE + "seeds: [-1]\n", ("seeds.0", "greater than or equal to 0")),
    ("seeds-not-a-list", BASE + "seeds: abc\n", ("seeds", "valid list")),
    ("confidence-low", BASE + "confidence: 0.3\n", ("confidence", "greater than 0.5")),
    ("label-budget-zero", "data: {target: x, label_budget: 0}\n" + M, ("data.label_budget",)),
    ("target-wrong-type", "data: {target: 5}\n" + M, ("data.target", "got int 5")),
    ("section-not-a-mapping", "data: digits\n" + M, ("data", "valid dictionary")),
    ("required-section-missing", D, ("model: required key is missing",)),
    ("head-literal", D + "model: {backbone: tk:mlp, head: conv}\n", ("'linear' or 'mlp'",)),
    ("unknown-method", BASE + "method: {name: finetnue}\n", ("did you mean finetune",)),
    (
        "unknown-method-parameter",
        BASE + "method: {params: {freez: none}}\n",
        ("method.params.freez", "did you mean 'freeze'"),
    ),
    (
        "early-stopping-monitor",
        BASE + "train: {early_stopping: {monitor: accuracy}}\n",
        ("train.early_stopping.monitor", "val_accuracy"),
    ),
    (
        "source-without-adaptation-method",
        "data: {target: digits, source: mnist5k}\n" + M,
        ("data.source is set", "domain-adaptation method"),
    ),
    ("adaptation-without-source", BASE + "method: {name: dann}\n", ("data.source is not set",)),
    (
        "teacher-without-distillation",
        BASE + "teacher: {backbone: tk:smallcnn}\n",
        ("a teacher is set", "method: distill"),
    ),
    ("distillation-without-teacher", BASE + "method: {name: distill}\n", ("needs a teacher",)),
    ("multitask-without-tasks", BASE + "method: {name: multitask}\n", ("needs tasks:",)),
    ("tasks-with-single-task-method", BASE + "tasks: [{name: a}]\n", ("single-task",)),
    ("invalid-yaml", "data: [\n", ("not valid YAML", "line 2")),
    ("tab-indentation", "data:\n\ttarget: digits\n", ("'\\t'", "spaces, not tabs")),
    (
        "duplicate-key",
        BASE + "data: {target: mnist5k}\n",
        ("the key 'data' appears twice (first on line 1)", "line 3"),
    ),
    ("impossible-date", BASE + "name: 2020-13-45\n", ("month must be in 1..12", "quote the")),
    ("empty-int-tag", BASE + "seeds: [!!int ]\n", ("cannot read '' as int", "line 3")),
    ("control-character", BASE + "name: a\x1fb\n", ("control character U+001F", "line 3")),
    ("python-object-tag", "a: !!python/object:os.system {}\n", ("could not determine",)),
    ("nested-too-deeply", "a: " + "[" * 700 + "]" * 700 + "\n", ("nested too deeply",)),
    ("empty-file", "", ("config file is empty",)),
    ("top-level-list", "- 1\n- 2\n", ("must be a mapping of sections, got list",)),
    ("config-not-utf8", "name: caf\u00e9\n".encode("latin-1"), ("not UTF-8", "byte 0xe9")),
]

CONFIG_ROWS = [Row(i, _validate(text), expect) for i, text, expect in VALIDATE_TABLE] + [
    Row(
        "split-fractions-leave-no-training-data",
        lambda tmp: _run_cfg(
            tmp, "data: {target: digits, val_fraction: 0.5, test_fraction: 0.5}\n" + M
        ),
        ("val_fraction + test_fraction = 1", "leaves nothing to train on"),
    ),
    Row(
        "backbone-family-typo",
        lambda tmp: _run_cfg(tmp, D + "model: {backbone: 'timn:resnet18'}\n"),
        ("model.backbone", "unknown backbone family 'timn'", "timm:resnet18"),
    ),
    Row("config-missing", lambda tmp: ["validate", str(tmp / "nope.yaml")], ("does not exist",)),
    Row("config-is-a-directory", lambda tmp: ["run", str(tmp)], ("is a directory",)),
    Row(
        "set-without-equals",
        lambda tmp: ["run", str(_yaml(tmp, BASE)), "--set", "train.lr"],
        ("override 'train.lr' has no '='",),
    ),
    Row(
        "set-into-a-value",
        lambda tmp: ["validate", str(_yaml(tmp, BASE)), "--set", "model.backbone.x=1"],
        ("'backbone' is not a section",),
    ),
    Row(
        "set-negative-lr",
        lambda tmp: ["validate", str(_yaml(tmp, BASE)), "-s", "train.lr=-1"],
        ("train.lr", "greater than 0"),
    ),
]

# ----------------------------------------------------------------------------------- data

H = "text,label\n"
# (id, file written under tmp_path, its content, data.target_options, expected fragments)
FILE_TABLE: list[tuple[str, str, str | bytes, str, tuple[str, ...]]] = [
    ("csv-empty", "t.csv", "", "", ("the file is empty", "t.csv")),
    ("csv-header-only", "t.csv", H, "", ("no data rows",)),
    ("one-class", "t.csv", H + "same,a\n" * 20, "", ("only one class ('a')", "column 'label'")),
    ("label-column-missing", "t.csv", "text,lable\n" + "x,a\n" * 9, "", ("label_column='lable'",)),
    ("csv-unclosed-quote", "t.csv", H + '"x,a\ny,b\n', "", ("cannot parse the table", "quoting")),
    ("too-few-examples", "t.csv", H + "x,a\ny,b\n", "", ("2 examples are too few",)),
    (
        "jsonl-invalid-line",
        "t.jsonl",
        '{"text": "a"}\n{oops\n',
        "",
        ("invalid JSON", "t.jsonl, line 2"),
    ),
    ("jsonl-not-objects", "t.jsonl", "[1, 2]\n", "", ("each line must be a JSON object", "line 1")),
    ("unsupported-file-type", "d.xlsx", "x", "", ("unsupported file type '.xlsx'",)),
    ("npz-not-a-zip", "d.npz", b"plain bytes", "", ("not an .npz archive", "savez")),
    (
        "csv-not-utf8",
        "t.csv",
        (H + "caf\u00e9,a\nbar,b\n" * 10).encode("latin-1"),
        "",
        ("cannot decode byte 0xe9 as utf-8", "line 2", "encoding='latin-1'"),
    ),
    (
        "label-outside-declared-classes",
        "t.csv",
        H + "x,a\ny,b\nz,c\n" * 8,
        "{classes: [a, b]}",
        ("label 'c' is not one of the declared classes", "row 3"),
    ),
    (
        "regression-target-not-a-number",
        "t.csv",
        H + "x,1.5\ny,abc\n" * 10,
        "{task: regression}",
        ("regression target 'abc' is not a number", "row 2"),
    ),
    ("unknown-task", "t.csv", H + "x,1\ny,2\n" * 10, "{task: regresion}", ("'regresion'",)),
    (
        "unknown-data-option",
        "t.csv",
        H + "x,a\ny,b\n" * 10,
        "{text_col: body}",
        ("unknown option 'text_col'", "did you mean 'text_column'"),
    ),
]

DATA_ROWS = [Row(i, _run_data(_csv(c, f), o), e) for i, f, c, o, e in FILE_TABLE] + [
    Row("data-file-missing", _run_data(lambda t: t / "missing.csv"), ("file not found",)),
    Row(
        "builtin-name-typo",
        lambda tmp: _run_cfg(tmp, "data: {target: digts}\n" + M),
        ("no built-in dataset or file named 'digts'", "did you mean digits"),
    ),
    Row(
        "nan-feature",
        _run_data(
            _csv("a,b,label\n" + "1,2,x\n3,,y\n" * 10),
            "{feature_columns: [a, b]}",
            "{backbone: tk:mlp, backbone_options: {in_features: 2}}",
        ),
        ("an empty field", "column 'b', row 2"),
    ),
    Row(
        "inf-feature",
        _run_data(_npz(np.where(np.arange(120).reshape(40, 3) == 16, np.inf, 1), LABELS)),
        ("NaN or infinite", "index 5"),
    ),
    Row("npz-without-labels", _run_data(_npz(np.zeros((4, 2)), None)), ("no array 'y'",)),
    Row(
        "npz-label-count",
        _run_data(_npz(np.zeros((4, 2)), np.zeros(3))),
        ("y has shape (3,) but x has 4 examples",),
    ),
    Row(
        "images-two-channels",
        _run_data(_npz(RNG.integers(0, 255, (40, 8, 8, 2)).astype(np.uint8), LABELS)),
        ("images must have 1, 3 or 4 channels, got 2",),
    ),
    Row(
        "images-without-pixels",
        _run_data(_npz(np.zeros((40, 0, 8), np.uint8), LABELS)),
        ("images have no pixels (height x width 0 x 8)",),
    ),
    Row(
        "label-budget-huge",
        lambda tmp: _run_cfg(
            tmp, f"data: {{target: {_q(_texts(tmp))}, label_budget: 100000}}\n" + M + SMALL_RUN
        ),
        ("label_budget=100000 per class", "use label_budget <= 13"),
    ),
]

IMAGE_ROWS = [
    Row(
        "image-unreadable",
        _run_data(_images(extra="unreadable")),
        ("unreadable image file", "broken.png"),
    ),
    Row("image-folder-text-file", _run_data(_images(extra="text_file")), ("notes.txt",)),
    Row(
        "image-folder-loose-files",
        _run_data(_images(extra="loose")),
        ("outside any class sub-folder", "stray.png"),
    ),
    Row("image-folder-empty", _run_data(_empty_dir), ("the folder has no class sub-folders",)),
    Row(
        "image-class-folder-empty",
        _run_data(_images(extra="empty_class")),
        ("class folder 'c' holds no images",),
    ),
    Row(
        "image-folder-one-class",
        _run_data(_images(classes="a")),
        ("only one class ('a')", "class sub-folders"),
    ),
    Row(
        "images-mixed-sizes",
        lambda tmp: _run_cfg(
            tmp,
            f"data: {{target: {_q(_images(sizes=(8, 10))(tmp))}}}\n"
            "model: {backbone: tk:smallcnn}\ntrain: {max_steps: 1, batch_size: 64}\n" + SMALL_RUN,
        ),
        ("images of different sizes [(8, 8), (10, 10)]", "input_size"),
        builds_model=True,
    ),
]

# ----------------------------------------------------------------- data meets the model

MODEL_ROWS = [
    Row(
        "text-data-image-model",
        _run_data(lambda t: _texts(t)),
        ("reads image inputs", "is text", "model.backbone"),
        builds_model=True,
    ),
    Row(
        "image-data-vector-model",
        _check_data(_images(), "{backbone: tk:mlp, backbone_options: {in_features: 64}}"),
        ("reads vector inputs", "is image"),
    ),
    Row(
        "text-model-given-images",
        _check_data(_images(), lambda t: f"{{backbone: {_q(Path(f'hf:{_tiny_bert(t)}'))}}}"),
        ("reads text inputs", "is image"),
    ),
    Row(
        "feature-count-mismatch",
        _check_data(lambda t: _vectors(t, 3, "v.npz"), MLP3.replace("3", "5")),
        ("target data", "[N, 5]", "the data has 3 feature columns", "in_features"),
    ),
    Row(
        "image-channels-vs-model",
        _check_data(_images(), "{backbone: tk:smallcnn, backbone_options: {in_chans: 2}}"),
        ("images have 1 channels but the model takes 2", "in_chans"),
    ),
    Row(
        "source-target-feature-dims",
        _da(
            lambda t: _vectors(t, 4, "t4.npz"),
            lambda t: _vectors(t, 3, "s3.npz"),
            "{backbone: tk:mlp, backbone_options: {in_features: 4}}",
            "--data",
        ),
        ("source data", "[N, 4]", "3 feature columns"),
    ),
    Row(
        "source-target-modalities",
        _da(
            lambda t: _vectors(t, 4, "t4.npz"),
            lambda t: _texts(t),
            "{backbone: tk:mlp, backbone_options: {in_features: 4}}",
        ),
        ("source is text data but target is tabular",),
    ),
    Row(
        "source-target-classes",
        _da(
            lambda t: _vectors(t, 4, "t4.npz"),
            _npz(RNG.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3, "s.npz"),
            "{backbone: tk:mlp, backbone_options: {in_features: 4}}",
        ),
        ("different classes", "only in source ['2']"),
    ),
]

# ------------------------------------------------------------------- other commands

COMMAND_ROWS = [
    Row(
        "out-dir-not-writable",
        lambda tmp: [*_run_cfg(tmp, BASE)[:3], str(_write(tmp / "f", "x") / "sub"), "-q"],
        ("cannot create run directory", "writable --out"),
    ),
    Row(
        "out-dir-not-empty",
        lambda tmp: [*_run_cfg(tmp, BASE)[:3], str(_write(tmp / "o" / "x", "x").parent)],
        ("already exists and is not empty", "--overwrite"),
    ),
    Row("resume-not-a-run", lambda tmp: ["resume", str(tmp)], ("not a transferkit run",)),
    Row(
        "resume-corrupt-config",
        lambda tmp: ["resume", str(_run_dir(tmp, config="data: [\n"))],
        ("not valid YAML", "config.yaml, line 2"),
    ),
    Row("report-no-metrics", lambda tmp: ["report", str(tmp)], ("has no metrics.json",)),
    Row(
        "report-corrupt-metrics",
        lambda tmp: ["report", str(_run_dir(tmp, metrics="{not json"))],
        ("metrics.json is not valid JSON",),
    ),
    Row(
        "export-unknown-format",
        lambda tmp: ["export", str(tmp), "--format", "pdf"],
        ("unknown export format 'pdf'", "onnx"),
    ),
    Row("export-not-a-run", lambda tmp: ["export", str(tmp)], ("not a transferkit run",)),
    Row(
        "export-unfinished-run",
        lambda tmp: ["export", str(_run_dir(tmp))],
        ("the run has no final model", "transferkit resume"),
    ),
    Row(
        "score-unknown-metric",
        lambda tmp: ["score", "-m", "tk:smallcnn", "-d", "digits", "--metric", "auc"],
        ("unknown transferability score 'auc'", "logme"),
    ),
    Row(
        "score-no-models",
        lambda tmp: ["score", "-m", "", "-d", "digits", "-o", str(tmp)],
        ("no models to score",),
    ),
    Row(
        "score-model-typo",
        lambda tmp: ["score", "-m", "tk:smalcnn", "-d", "digits", "-o", str(tmp)],
        ("unknown tk model 'smalcnn'", "did you mean tk:smallcnn"),
    ),
    Row(
        "score-data-missing",
        lambda tmp: ["score", "-m", "tk:smallcnn", "-d", str(tmp / "x.csv"), "-o", str(tmp)],
        ("file not found", "x.csv"),
    ),
    Row(
        "advise-seeds-empty",
        lambda tmp: ["advise", "-m", "tk:smallcnn", "-t", "digits", "--seeds", "", "-o", str(tmp)],
        ("invalid seeds ''", "--seeds"),
    ),
    Row(
        "advise-target-missing",
        lambda tmp: ["advise", "-m", "tk:smallcnn", "-t", str(tmp / "t.csv"), "-o", str(tmp)],
        ("file not found", "t.csv"),
    ),
    Row(
        "probe-unknown-head",
        lambda tmp: ["probe", "-m", "tk:smallcnn", "-d", "digits", "--head", "svm", "-o", str(tmp)],
        ("unknown probe head 'svm'", "logreg"),
    ),
    Row(
        "probe-negative-budget",
        lambda tmp: ["probe", "-m", "tk:smallcnn", "-d", "digits", "--label-budget", "-1"],
        ("label_budget must be a positive integer",),
    ),
    Row("unknown-command", lambda tmp: ["frobnicate"], ("No such command 'frobnicate'",)),
    Row(
        "missing-required-option",
        lambda tmp: ["score", "-m", "tk:smallcnn"],
        ("Missing option", "--data"),
    ),
    Row(
        "option-wrong-type",
        lambda tmp: ["score", "-m", "tk:smallcnn", "-d", "digits", "--max-examples", "many"],
        ("Invalid value for '--max-examples'",),
    ),
]

ROWS = [*CONFIG_ROWS, *DATA_ROWS, *IMAGE_ROWS, *MODEL_ROWS, *COMMAND_ROWS]


def test_catalogue_is_large_and_ids_are_unique() -> None:
    assert len(ROWS) >= 45
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # commands with default output folders write here
    argv = row.build(tmp_path)
    result = CliRunner().invoke(app, argv)
    out = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {out}\n{result.exception!r}"
    assert "Traceback" not in out
    for fragment in row.expect:
        assert fragment in out, f"{fragment!r} not in: {out}"
    assert "Fix:" in out or "--help" in out, f"no fix given: {out}"
    if not row.builds_model:
        assert ": training" not in out, f"failed only after training began: {out}"


def test_valid_config_validates(tmp_path: Path) -> None:
    """The control: the same command on a good config and good data succeeds."""
    ok = CliRunner().invoke(app, ["validate", str(_yaml(tmp_path, BASE))])
    assert ok.exit_code == 0 and "config OK" in ok.output
    vec = _vectors(tmp_path, 3, "v.npz")
    text = f"data: {{target: {_q(vec)}}}\nmodel: {MLP3}\n"
    ok = CliRunner().invoke(app, ["validate", str(_yaml(tmp_path, text)), "--data"])
    assert ok.exit_code == 0, ok.output
    assert "target 'v': tabular classification" in ok.output and "reads target" in ok.output
