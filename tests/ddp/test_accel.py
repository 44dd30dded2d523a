"""The cross-process helpers of ``engine.accel`` in one process (the launches test the rest)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from transferkit.engine import accel
from transferkit.engine.data import build_train_loader
from transferkit.errors import CheckpointError, ConfigError, TransferkitError


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
    monkeypatch.setattr(accel, "num_processes", lambda: world)
    monkeypatch.setattr(accel, "process_index", lambda: rank)


@pytest.mark.parametrize(
    ("n", "world", "expected"),
    [
        (10, 3, [(0, 4), (4, 7), (7, 10)]),  # 10 = 4 + 3 + 3
        (8, 2, [(0, 4), (4, 8)]),
        (1, 2, [(0, 1), (1, 1)]),  # rank 1 gets nothing
        (0, 2, [(0, 0), (0, 0)]),
    ],
)
def test_shard_bounds_cover_the_items_once_in_rank_order(
    monkeypatch: pytest.MonkeyPatch, n: int, world: int, expected: list[tuple[int, int]]
) -> None:
    got = []
    for rank in range(world):
        _as_rank(monkeypatch, rank, world)
        got.append(accel.shard_bounds(n))
    assert got == expected


def test_without_a_launcher_the_helpers_are_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not accel.launched()
    assert accel.num_processes() == 1 and accel.process_index() == 0
    assert accel.is_main_process()
    obj = {"a": [1, 2]}
    assert accel.broadcast(obj) is obj
    x = np.arange(6.0).reshape(3, 2)
    assert accel.gather_arrays(x) is x
    assert accel.on_main(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(CheckpointError, match="nope"):
        accel.on_main(_raise, CheckpointError("nope", where="w", fix="f"))
    accel.barrier()


def _raise(exc: BaseException) -> None:
    raise exc


def test_an_error_of_the_main_process_is_rebuilt_on_the_others() -> None:
    err = CheckpointError("the directory exists", where="/runs/x", fix="pass --overwrite")
    again = accel._rebuild(accel._describe(err))
    assert type(again) is CheckpointError
    assert (again.what, again.where, again.fix) == (err.what, err.where, err.fix)
    assert str(again) == str(err)
    other = accel._rebuild(accel._describe(KeyError("k")))
    assert isinstance(other, RuntimeError) and "KeyError" in str(other)

    class Odd(TransferkitError):
        def __init__(self, code: int) -> None:
            super().__init__(f"odd {code}")

    odd = accel._rebuild(accel._describe(Odd(3)))
    assert type(odd) is TransferkitError and odd.what == "odd 3"


def test_a_global_batch_must_split_evenly() -> None:
    accel._check_global_batch(8, 2)
    accel._check_global_batch(7, 1)
    with pytest.raises(ConfigError) as info:
        accel._check_global_batch(7, 2)
    err = info.value
    assert "batch_size 7" in err.what and "2 processes" in err.what
    assert err.where is not None and "batch_size" in err.where
    assert err.fix is not None and "6" in err.fix and "8" in err.fix


def test_short_last_batch_is_announced_only_under_several_processes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = torch.utils.data.TensorDataset(torch.zeros(10, 2))
    with caplog.at_level(logging.WARNING, logger="transferkit.engine.data"):
        build_train_loader(data, None, batch_size=4, seed=0)  # 1 process: no warning
        _as_rank(monkeypatch, 0, 2)
        build_train_loader(data, None, batch_size=5, seed=0)  # 10 = 2 x 5: no warning
        build_train_loader(data, None, batch_size=4, seed=0, drop_last=True)
        assert not caplog.records
        build_train_loader(data, None, batch_size=4, seed=0)
    assert len(caplog.records) == 1
    assert "holds 2 of 4 examples; with 2 processes" in caplog.records[0].getMessage()


class _Linear(torch.nn.Module):
    """``predict(x) = x W`` on ``[B, 3]`` vectors: per-example, like eval-mode models."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(6.0).reshape(3, 2) / 7)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def test_sharded_predictions_put_back_together_equal_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transferkit.data.types import Dataset
    from transferkit.experiment import stages

    rng = np.random.default_rng(0)
    ds = Dataset("d", "tabular", rng.normal(size=(11, 3)).astype(np.float32), np.zeros(11))
    prepare = lambda raw: torch.as_tensor(np.asarray(raw))  # noqa: E731
    model = _Linear()
    full = stages.predict(model, ds, prepare, batch_size=4)
    assert full.shape == (11, 2)
    np.testing.assert_array_equal(stages.predict_distributed(model, ds, prepare, 4), full)
    shards = []
    monkeypatch.setattr(accel, "launched", lambda: True)
    monkeypatch.setattr(accel, "gather_arrays", lambda local: shards.append(local) or local)
    for rank in range(3):
        _as_rank(monkeypatch, rank, 3)
        stages.predict_distributed(model, ds, prepare, batch_size=4)
    assert [len(s) for s in shards] == [4, 4, 3]
    np.testing.assert_allclose(np.concatenate(shards), full, rtol=0, atol=1e-6)
