"""TrainConfig validation, seeded epoch permutations, evaluate_predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.engine.tiny import collate, make_blobs, make_method
from transferkit.engine import EpochPermutationSampler, TrainConfig, evaluate_predictions
from transferkit.engine.data import build_train_loader
from transferkit.errors import ConfigError, DataError


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("lr", 0.0, "TrainConfig.lr"),
        ("lr", float("nan"), "TrainConfig.lr"),
        ("optimizer", "adam", "adamw, sgd"),
        ("schedule", "linear", "constant, cosine"),
        ("mixed_precision", "fp8", "TrainConfig.mixed_precision"),
        ("epochs", 0, "integer >= 1"),
        ("grad_accum_steps", 1.5, "integer >= 1"),
        ("warmup_ratio", 1.0, r"\[0.0, 1.0\)"),
        ("cut_frac", 0.0, "cut_frac"),
        ("clip_grad_norm", -1.0, "clip_grad_norm"),
        ("max_steps", 0, "max_steps"),
        ("mode", "up", "max, min"),
        ("seed", -1, "integer >= 0"),
    ],
)
def test_bad_settings_are_config_errors(field: str, value: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_nesterov_needs_sgd_with_momentum() -> None:
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig(nesterov=True)
    TrainConfig(optimizer="sgd", nesterov=True, momentum=0.9)


def test_precision_resolution_on_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    assert TrainConfig(mixed_precision="auto").resolved_precision() == "no"
    assert TrainConfig(mixed_precision="bf16").resolved_precision() == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        TrainConfig(mixed_precision="fp16").resolved_precision()


def test_config_round_trips_through_dict() -> None:
    c = TrainConfig(lr=0.3, betas=(0.8, 0.9), early_stopping=True, monitor="val_f1")
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainConfig.from_dict({**c.to_dict(), "learning_rate": 1.0})


def test_warmup_length() -> None:
    assert TrainConfig(warmup_ratio=0.1).warmup_for(25) == 3  # ceil(2.5)
    assert TrainConfig(warmup_ratio=0.5, warmup_steps=4).warmup_for(25) == 4


def test_epoch_permutation_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochPermutationSampler(50, seed=3), EpochPermutationSampler(50, seed=3)
    b.set_epoch(1)
    list(iter(b))  # drawing epochs out of order changes nothing
    b.set_epoch(0)
    assert list(a) == list(b)
    assert sorted(a) == list(range(50))
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(EpochPermutationSampler(50, seed=4)) != list(b)


def test_train_loader_leaves_global_rng_alone() -> None:
    loader, sampler = build_train_loader(make_blobs(20), collate, batch_size=6, seed=0)
    state = torch.get_rng_state()
    batches = list(loader)
    assert torch.equal(torch.get_rng_state(), state)
    seen = torch.cat([b["x"] for b in batches])
    assert len(batches) == 4 and torch.equal(seen, make_blobs(20).x[sampler.permutation()])


def test_empty_dataset_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no batch"):
        build_train_loader(make_blobs(5), collate, batch_size=8, seed=0, drop_last=True)


def test_evaluate_predictions_in_order_eval_mode() -> None:
    method = make_method(dropout=0.5)
    method.train()
    data = make_blobs(23)
    outputs, targets = evaluate_predictions(method, data, collate, batch_size=5)
    assert method.training  # restored
    method.eval()
    with torch.no_grad():
        expected = method.predict(data.x).numpy()
    assert outputs.dtype == np.float32 and outputs.shape == (23, 3)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-6)
    assert targets is not None and np.array_equal(targets, data.y.numpy())


def test_evaluate_predictions_without_targets() -> None:
    method = make_method()
    data = make_blobs(7)

    def collate_x(items: list[Any]) -> dict[str, torch.Tensor]:
        return {"x": torch.stack([x for x, _ in items])}

    outputs, targets = evaluate_predictions(method, data, collate_x, batch_size=4)
    assert outputs.shape == (7, 3) and targets is None
