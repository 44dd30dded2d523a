"""Full hint maps from one pass agree with the backbones' own pooled intermediates."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TinyVectorBackbone
from tests.distill.conftest import cnn
from transferkit.backbones import create_backbone
from transferkit.backbones.base import Backbone
from transferkit.distill.features import HintTap, forward_with_hints, hint_dims, pool_map
from transferkit.errors import ConfigError


def test_conv_maps_pool_to_forward_intermediates() -> None:
    bb = cnn(width=4, depth=3).eval()
    x = torch.randn(2, 1, 8, 8)
    final, maps = forward_with_hints(bb, x, [0, 1, -1])
    assert [tuple(m.shape) for m in maps] == [(2, 4, 8, 8), (2, 8, 4, 4), (2, 16, 2, 2)]
    assert hint_dims(bb, [0, 1, -1]) == [4, 8, 16]
    pooled = bb.forward_intermediates(x, [0, 1, 2])
    for m, p in zip(maps, pooled, strict=True):
        torch.testing.assert_close(pool_map(m), p)
    torch.testing.assert_close(final, bb(x))
    f2, pooled_hints = forward_with_hints(bb, x, [1], pool=True)
    torch.testing.assert_close(pooled_hints[0], pooled[1])
    torch.testing.assert_close(f2, final)


def test_maps_carry_gradients_and_hooks_are_removed() -> None:
    bb = cnn(width=4, depth=2)
    with HintTap(bb, [0]) as tap:
        final = bb(torch.randn(3, 1, 8, 8))
    (m,) = tap.maps(final)
    m.pow(2).sum().backward()
    assert bb.model[0][0].weight.grad is not None
    assert all(not mod._forward_pre_hooks and not mod._forward_hooks for mod in bb.modules())


def test_vector_backbones_use_the_final_output_for_the_last_group() -> None:
    mlp = create_backbone("tk:mlp", in_features=5, hidden=[7, 6]).eval()
    x = torch.randn(4, 5)
    final, maps = forward_with_hints(mlp, x, [0, 1])
    torch.testing.assert_close(maps[1], final)  # after the last ReLU, not before
    torch.testing.assert_close(maps[0], mlp.forward_intermediates(x, [0])[0])
    tiny: Backbone = TinyVectorBackbone().eval()
    _, (h1,) = forward_with_hints(tiny, torch.randn(4, 6), [0])
    assert h1.shape == (4, 8)


def test_token_maps_of_a_transformer(bert_teacher: Backbone) -> None:
    bb = bert_teacher.eval()
    x = bb.prepare(["good movie", "bad boring plot actor"])
    final, maps = forward_with_hints(bb, x, [0, 2, -1])
    length = x["input_ids"].shape[1]
    assert all(tuple(m.shape) == (2, length, 32) for m in maps)
    mask = x["attention_mask"].unsqueeze(-1).float()
    pooled = bb.forward_intermediates(x, [0, 2, -1])
    for m, p in zip(maps, pooled, strict=True):
        torch.testing.assert_close((m * mask).sum(1) / mask.sum(1), p)
    torch.testing.assert_close(final, pooled[-1])


def test_bad_indices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="out of range"):
        HintTap(cnn(4, 2), [5])
