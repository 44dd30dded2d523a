"""Layer probing: one forward per batch, one probe per group, recommendation rule, outputs."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TinyVectorBackbone
from transferkit.data.types import Dataset, Splits
from transferkit.diagnostics.probing import (
    ProbeResult,
    layer_probe,
    load_probe,
    recommend,
    run_probe,
)
from transferkit.engine.extract import clear_memory_cache
from transferkit.errors import DataError


def _flat_weights_hash(backbone: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in backbone.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _data(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return Dataset("toy", "tabular", x, y, classes=["neg", "pos"])


def _backbone_informative_then_blind() -> TinyVectorBackbone:
    """Group 0 keeps x_0 linearly (units 0/1 = relu(+-x_0)); group 1 outputs zeros."""
    torch.manual_seed(0)
    bb = TinyVectorBackbone()
    with torch.no_grad():
        w = torch.zeros(8, 6)
        w[0, 0], w[1, 0] = 1.0, -1.0
        w[2:7, 1:] = torch.eye(5)
        bb.block1[0].weight.copy_(w)
        bb.block1[0].bias.zero_()
        bb.block2[0].weight.zero_()
        bb.block2[0].bias.zero_()
    return bb


@pytest.mark.parametrize("head", ["logreg", "knn"])
def test_one_probe_per_group_and_best_group(head: str) -> None:
    clear_memory_cache()
    bb = _backbone_informative_then_blind()
    calls = []
    hook = bb.block1.register_forward_hook(lambda *a: calls.append(1))
    train, val = _data(150, 0), _data(70, 1)
    res = layer_probe(bb, train, val, head=head, batch_size=32)
    hook.remove()
    assert len(calls) == math.ceil(150 / 32) + math.ceil(70 / 32)  # ONE pass per batch
    assert res.groups == ["block1", "block2"] and res.dims == [8, 8]
    assert len(res.val_metric) == len(res.fit_seconds) == len(res.selected) == 2
    assert res.val_metric[0] > 0.85
    majority = max(val.y.mean(), 1 - val.y.mean())
    assert res.val_metric[1] <= majority + 0.1  # constant features: chance level
    assert res.best_index == res.argmax_index == 0 and res.freeze_to == 1
    assert res.n_train == 150 and res.n_val == 70 and res.metric == "accuracy"


def test_cached_second_probe_runs_no_forward(tmp_path: Path) -> None:
    clear_memory_cache()
    bb = _backbone_informative_then_blind()
    train, val = _data(60, 0), _data(30, 1)
    first = layer_probe(bb, train, val, cache_dir=tmp_path)
    clear_memory_cache()
    calls = []
    bb.block1.register_forward_hook(lambda *a: calls.append(1))
    second = layer_probe(bb, train, val, cache_dir=tmp_path)
    assert calls == [] and second.val_metric == first.val_metric


def test_recommend_prefers_shallower_within_half_a_point() -> None:
    assert recommend([0.80, 0.897, 0.90]) == 1  # 0.3 points below the best: shallower wins
    assert recommend([0.80, 0.894, 0.90]) == 2  # 0.6 points below: the best wins
    assert recommend([0.95, 0.90, 0.949]) == 0
    assert recommend([float("nan"), 0.5, 0.6]) == 2
    assert recommend([0.5, 0.5]) == 0


def test_max_examples_caps_each_split() -> None:
    clear_memory_cache()
    res = layer_probe(
        _backbone_informative_then_blind(), _data(200, 0), _data(90, 1), max_examples=50
    )
    assert (res.n_train, res.n_val) == (50, 50)


def test_unlabelled_split_is_a_data_error() -> None:
    with pytest.raises(DataError, match="val"):
        layer_probe(TinyVectorBackbone(), _data(20, 0), _data(20, 1).unlabelled())


def _result() -> ProbeResult:
    return ProbeResult(
        model="test:tiny",
        dataset="toy",
        task="classification",
        metric="accuracy",
        head="logreg",
        groups=["a", "b", "c"],
        dims=[4, 8, 8],
        val_metric=[0.7, 0.9, 0.898],
        selected=[1.0, 0.1, 10.0],
        fit_seconds=[0.01, 0.02, 0.03],
        extract_seconds=0.5,
        n_train=100,
        n_val=40,
        best_index=1,
        argmax_index=1,
    )


def test_to_dict_json_round_trip(tmp_path: Path) -> None:
    res = _result()
    d = json.loads(json.dumps(res.to_dict()))
    assert d["freeze_to"] == 2 and d["best_group"] == "b" and d["tolerance"] == 0.005
    assert ProbeResult.from_dict(d) == res
    (tmp_path / "p.json").write_text(json.dumps(d))
    assert load_probe(tmp_path / "p.json") == res


def test_plot_writes_png(tmp_path: Path) -> None:
    out = _result().plot(tmp_path / "sub" / "probe.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert [p.name for p in out.parent.iterdir()] == ["probe.png"]  # no temp file left


def test_run_probe_writes_json_and_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transferkit.backbones as backbones
    import transferkit.data as data

    clear_memory_cache()
    seen = {}

    def fake_load(name: str, *, seed: int, label_budget: int | None) -> Splits:
        seen.update(name=name, seed=seed, label_budget=label_budget)
        return Splits(_data(120, seed), _data(60, seed + 1), _data(10, 9))

    monkeypatch.setattr(
        backbones, "create_backbone", lambda spec: _backbone_informative_then_blind(), raising=False
    )
    monkeypatch.setattr(data, "load_dataset", fake_load)
    res = run_probe("test:tiny", "toy", seed=3, label_budget=40, max_examples=100, out_dir=tmp_path)
    assert seen == {"name": "toy", "seed": 3, "label_budget": 40}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.json", "probe.png"]
    assert load_probe(tmp_path / "probe.json") == res
    assert res.n_train == 100 and res.best_index == 0
