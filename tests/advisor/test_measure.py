"""Measurements: one forward pass for probe + LogME, control statistics, random-init twins."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.advisor.conftest import FEATURES, Toy, quadrant
from tests.conftest import TinyVectorBackbone
from transferkit.advisor.candidates import build_candidate
from transferkit.advisor.measure import final_and_probe, is_random_init, transferability
from transferkit.advisor.ranking import score_candidate
from transferkit.data.types import Dataset
from transferkit.diagnostics.transferability import logme
from transferkit.engine.extract import clear_memory_cache


def _data(n: int, seed: int) -> Dataset:
    x = np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)
    return Dataset("toy", "tabular", x, quadrant(x, 0, 1), classes=list("abcd"))


def _counting(bb: TinyVectorBackbone) -> list[int]:
    calls: list[int] = []
    bb.block1.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_probe_and_logme_share_one_forward_pass_per_batch() -> None:
    clear_memory_cache()
    torch.manual_seed(0)
    bb = TinyVectorBackbone()
    calls = _counting(bb)
    train, val = _data(150, 0), _data(70, 1)
    final, probe = final_and_probe(bb, train, val, seed=0, batch_size=32)
    assert len(calls) == math.ceil(150 / 32) + math.ceil(70 / 32)
    assert probe is not None and probe.groups == ["block1", "block2"]
    with torch.no_grad():
        expected = bb.eval()(torch.as_tensor(train.x)).numpy()
    np.testing.assert_allclose(final, expected, rtol=1e-5, atol=1e-6)


def test_ranking_with_layers_is_one_pass_too() -> None:
    clear_memory_cache()
    torch.manual_seed(1)
    bb = TinyVectorBackbone()
    calls = _counting(bb)
    row = score_candidate(bb, _data(100, 2), layers=True, batch_size=25)
    assert len(calls) == 4 and [g["name"] for g in row["layers"]] == ["block1", "block2"]


def test_transferability_record_math() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(80, 5))
    y = (f[:, 0] > 0).astype(np.int64)
    rec = transferability(f, [0.1, 0.2, 0.6], y)
    assert rec["pretrained"] == pytest.approx(logme(f, y))
    assert rec["random_init"] == pytest.approx(0.3)
    assert rec["random_init_sd"] == pytest.approx(np.sqrt(((0.2) ** 2 + 0.1**2 + 0.3**2) / 2))
    assert rec["gap"] == pytest.approx(rec["pretrained"] - 0.3)
    assert transferability(f, [0.5], y)["random_init_sd"] == 0.0  # one control: no spread


def test_is_random_init_tells_tk_specs_from_checkpoints(toy: Toy) -> None:
    x = np.load(toy.target)["x"][:50]
    data = Dataset("t", "tabular", x, quadrant(x, 0, 1), classes=list("abcd"))
    mlp, _ = build_candidate("tk:mlp", data, seed=4)
    assert mlp.init_kwargs["in_features"] == FEATURES
    assert is_random_init(mlp, "tk:mlp", data, seed=4)
    assert not is_random_init(mlp, "tk:mlp", data, seed=5)  # another seed: other weights
    trained, cand = build_candidate(toy.good, data, seed=4)
    assert cand.pretrained and not is_random_init(trained, cand.spec, data, seed=4)
