"""Fixtures for the backbone tests: a tiny BERT + tokenizer written to disk, built in code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

WORDS = [
    "a",
    "man",
    "is",
    "playing",
    "guitar",
    "someone",
    "plays",
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "runs",
    "in",
    "park",
    "stock",
    "market",
    "fell",
    "sharply",
    "today",
    "music",
    "loud",
]


def write_tiny_bert(
    path: Path, *, layers: int = 2, hidden: int = 16, words: Sequence[str] = WORDS
) -> Path:
    """A ``layers``-deep, ``hidden``-wide BERT (random init) + a WordPiece tokenizer over
    ``words`` saved to ``path``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
