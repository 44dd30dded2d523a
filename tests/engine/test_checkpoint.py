"""Checkpoint files: tied weights, RNG states, atomic pointer, pickle-free state."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.engine import CheckpointStore
from transferkit.engine.checkpoint import (
    capture_rng_state,
    load_weights,
    restore_rng_state,
    save_weights,
)
from transferkit.errors import CheckpointError


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.out = nn.Linear(4, 5, bias=False)
        self.out.weight = self.embed.weight  # weight tying: two keys, one storage
        self.register_buffer("view", torch.arange(10.0)[2:6])  # a view into a bigger storage


def test_tied_and_view_tensors_round_trip(tmp_path: Path) -> None:
    model = Tied()
    sd = model.state_dict()
    assert sd["embed.weight"].data_ptr() == sd["out.weight"].data_ptr()
    sha = save_weights(tmp_path / "w.safetensors", sd)
    loaded = load_weights(tmp_path / "w.safetensors", sha)
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    fresh = Tied()
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh.out.weight, model.embed.weight)
    with pytest.raises(CheckpointError, match="sha256"):
        load_weights(tmp_path / "w.safetensors", "0" * 64)


def test_rng_states_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.randn(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (random.random(), np.random.randn(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_store_points_latest_at_newest_and_prunes(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.latest() is None
    w = {"a": torch.ones(2)}
    store.save("ckpt-00000001-step", w, {"global_step": 1})
    store.save("ckpt-00000002-step", {"a": torch.zeros(2)}, {"global_step": 2})
    latest = store.latest()
    assert latest is not None and latest.name == "ckpt-00000002-step"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000002-step", "latest"]
    weights, state = store.load(latest)
    assert torch.equal(weights["a"], torch.zeros(2)) and state["global_step"] == 2
    store.clear()
    assert list(tmp_path.iterdir()) == []
