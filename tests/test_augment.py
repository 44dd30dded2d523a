"""Weak/strong augmentation of prepared batches: invariants, hand-checked geometry, errors."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from transferkit.augment import (
    augment,
    augment_text,
    colour_ops,
    cutout,
    feature_dropout,
    flip_translate,
    gaussian_noise,
)
from transferkit.errors import ConfigError, DataError

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core machine the
    thread barriers of BatchNorm/softmax made each toy step ~10x slower in CPU time."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth_images(b: int = 6, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Normalised-looking images with low-frequency content (upsampled 4x4 noise), so a small
    translation changes them only a little."""
    coarse = torch.randn(b, c, 4, 4, generator=_gen(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _text() -> dict[str, torch.Tensor]:
    """Two right-padded rows and one left-padded row; 101/102 are the special tokens."""
    ids = torch.tensor(
        [
            [101, *range(1000, 1018), 102, 0, 0, 0, 0],
            [101, *range(2000, 2010), 102, *[0] * 12],
            [0, 0, 0, 0, 0, 0, 101, *range(3000, 3015), 102, 0][:24],
        ]
    )
    mask = (ids != 0).long()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


# ----------------------------------------------------------------------------- contracts
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strength", ["weak", "strong"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_kept_and_input_untouched(
    device: str, strength: str, dtype: torch.dtype
) -> None:
    img = _smooth_images().to(device, dtype)
    vec = torch.randn(16, 5, dtype=dtype, device=device)
    txt = {k: v.to(device) for k, v in _text().items()}
    for x in (img, vec, txt):
        before = {k: v.clone() for k, v in x.items()} if isinstance(x, dict) else x.clone()
        y = augment(x, strength, mask_token_id=103)  # type: ignore[arg-type]
        pairs = [(x[k], y[k]) for k in x] if isinstance(x, dict) else [(x, y)]
        for a, b in pairs:
            assert b.shape == a.shape and b.dtype == a.dtype and b.device == a.device
        if isinstance(x, dict):
            assert y.keys() == x.keys()
            assert all(torch.equal(before[k], x[k]) for k in x)
        else:
            assert torch.equal(before, x)


def _undo_flip(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Each image of ``y`` or its mirror image, whichever is closer to ``x``."""
    pick = [min((a, a.flip(-1)), key=lambda z: _mad(z, b)) for a, b in zip(y, x, strict=True)]
    return torch.stack(pick)


def test_weak_is_close_and_strong_is_further() -> None:
    """Mean absolute change: 0 < weak < strong; weak is small against the distance between
    two different examples (images compared up to the horizontal flip)."""
    img, vec, txt = _smooth_images(16), torch.randn(64, 8, generator=_gen(1)), _text()
    for x in (img, vec):
        weak, strong = (
            augment(x, "weak", generator=_gen(2)),
            augment(x, "strong", generator=_gen(2)),
        )
        if x.ndim == 4:
            weak, strong = _undo_flip(weak, x), _undo_flip(strong, x)
        d_weak, d_strong = _mad(weak, x), _mad(strong, x)
        other = _mad(x.roll(1, 0), x)  # distance to a different example
        assert 0 < d_weak < d_strong, (d_weak, d_strong)
        assert d_weak < 0.5 * other, (d_weak, other)
    dropped = {
        s: sum(
            int(
                (txt["attention_mask"] - augment(txt, s, generator=_gen(i))["attention_mask"]).sum()
            )
            for i in range(20)
        )
        for s in ("weak", "strong")
    }
    assert 0 < dropped["weak"] < dropped["strong"]


@pytest.mark.parametrize(
    "x", [_smooth_images(3), torch.randn(8, 4), _text()], ids=["image", "vector", "text"]
)
def test_seeded_generator_is_deterministic_and_global_rng_is_used(x: object) -> None:
    def run(**kw: object) -> list[torch.Tensor]:
        y = augment(x, "strong", mask_token_id=103, **kw)  # type: ignore[arg-type]
        return list(y.values()) if isinstance(y, dict) else [y]

    a, b, c = run(generator=_gen(5)), run(generator=_gen(5)), run(generator=_gen(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))
    torch.manual_seed(3)
    g1 = run()
    torch.manual_seed(3)
    g2 = run()
    assert all(torch.equal(u, v) for u, v in zip(g1, g2, strict=True))


# ----------------------------------------------------------------------------- images
def test_flip_translate_is_a_crop_of_the_reflect_padded_image() -> None:
    """8x8 images, 12.5 % -> 1 pixel of reflect padding: each output must be one of the 18
    crops (3 x 3 offsets, flipped or not); with ``max_shift=0`` only flips remain."""
    x = torch.randn(12, 2, 8, 8, generator=_gen(0))
    y = flip_translate(x, generator=_gen(1))
    offsets = set()
    for i in range(len(x)):
        found = [
            (flip, dy, dx)
            for flip, dy, dx in itertools.product((False, True), range(3), range(3))
            if torch.equal(
                F.pad((x[i].flip(-1) if flip else x[i])[None], (1, 1, 1, 1), mode="reflect")[
                    0, :, dy : dy + 8, dx : dx + 8
                ],
                y[i],
            )
        ]
        assert found, i
        offsets.add(found[0])
    assert len(offsets) > 3  # the draws vary across the batch
    z = flip_translate(x, max_shift=0.0, generator=_gen(1))
    assert all(torch.equal(z[i], x[i]) or torch.equal(z[i], x[i].flip(-1)) for i in range(12))


def test_colour_ops_work_in_each_images_own_range() -> None:
    """Ops act on ``(x - min) / (max - min)``, so (i) outputs stay in each image's
    ``[min, max]`` and (ii) an affine change of normalisation ``a x + b`` (``a > 0``)
    commutes with them: the same draws give ``a f(x) + b``."""
    x = _smooth_images(8, seed=3)
    y = colour_ops(x, generator=_gen(4))
    lo, hi = x.flatten(1).min(1).values, x.flatten(1).max(1).values
    assert (y.flatten(1).min(1).values >= lo - 1e-5).all()
    assert (y.flatten(1).max(1).values <= hi + 1e-5).all()
    y2 = colour_ops(2.5 * x - 0.7, generator=_gen(4))
    torch.testing.assert_close(y2, 2.5 * y - 0.7, atol=1e-4, rtol=1e-4)
    assert _mad(y, x) > 0.01


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_colour_ops_support_any_channel_count(channels: int) -> None:
    x = _smooth_images(6, c=channels)
    y = augment(x, "strong", generator=_gen(0))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_cutout_fills_one_square_with_the_channel_mean() -> None:
    x = torch.randn(10, 3, 16, 16, generator=_gen(0)) + 5.0
    y = cutout(x, size_range=(0.25, 0.5), generator=_gen(1))
    for i in range(10):
        changed = (y[i] != x[i]).any(0)  # [H, W]
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # one solid rectangle
        assert int(box.shape[0]) <= 9 and int(box.shape[1]) <= 9  # side <= 0.5 * 16 + 1
        mean = x[i].mean(dim=(1, 2))
        torch.testing.assert_close(y[i][:, changed], mean[:, None].expand(3, int(changed.sum())))


# ----------------------------------------------------------------------------- text
@pytest.mark.parametrize("strength", ["weak", "strong"])
def test_token_dropout_keeps_specials_and_padding(strength: str) -> None:
    x = _text()
    mask = x["attention_mask"]
    first = torch.tensor([0, 0, 6])
    last = torch.tensor([19, 11, 22])
    for seed in range(30):
        y = augment_text(x, strength, generator=_gen(seed))  # type: ignore[arg-type]
        assert torch.equal(y["input_ids"], x["input_ids"])  # no mask token -> ids untouched
        assert torch.equal(y["token_type_ids"], x["token_type_ids"])
        new = y["attention_mask"]
        assert ((new == 0) | (mask == 1)).all()  # padding stays padding
        rows = torch.arange(3)
        assert (new[rows, first] == 1).all() and (new[rows, last] == 1).all()


def test_mask_token_replaces_only_eligible_tokens() -> None:
    x = _text()
    eligible = x["attention_mask"].bool().clone()
    eligible[[0, 1, 2], [0, 0, 6]] = False
    eligible[[0, 1, 2], [19, 11, 22]] = False
    replaced = dropped = 0
    for seed in range(30):
        y = augment_text(x, "strong", generator=_gen(seed), mask_token_id=103)
        swapped = y["input_ids"] != x["input_ids"]
        gone = y["attention_mask"] != x["attention_mask"]
        assert (y["input_ids"][swapped] == 103).all()
        assert not (swapped & ~eligible).any() and not (swapped & gone).any()
        replaced, dropped = replaced + int(swapped.sum()), dropped + int(gone.sum())
    n = 30 * int(eligible.sum())
    assert 0.08 < replaced / n < 0.22 and 0.22 < dropped / n < 0.38  # p = 0.15, 0.3


def test_text_without_attention_mask_gets_one() -> None:
    ids = torch.tensor([[101, 7, 8, 9, 102]])
    y = augment({"input_ids": ids}, "strong", generator=_gen(0))
    mask = y["attention_mask"]
    assert mask.shape == ids.shape and mask[0, 0] == mask[0, 4] == 1


# ----------------------------------------------------------------------------- vectors
def test_vector_noise_and_dropout_statistics() -> None:
    """Noise sd is sigma times each feature's batch sd; inverted dropout keeps the mean."""
    x = torch.randn(4000, 3, generator=_gen(0)) * torch.tensor([0.1, 1.0, 10.0])
    rel = (gaussian_noise(x, 0.2, _gen(1)) - x) / x.std(0, unbiased=False)
    torch.testing.assert_close(rel.std(0), torch.full((3,), 0.2), atol=0.01, rtol=0)
    ones = torch.ones(4000, 3)
    d = feature_dropout(ones, 0.2, _gen(2))
    assert set(d.unique().tolist()) == {0.0, 1.25}
    assert abs(float((d == 0).float().mean()) - 0.2) < 0.02
    assert abs(float(d.mean()) - 1.0) < 0.03
    one_row = torch.randn(1, 3)
    assert torch.equal(augment(one_row, "weak", generator=_gen(0)), one_row)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "bad",
    [[1.0, 2.0], torch.zeros(4, 3, 8), torch.zeros(4, 3, 8, 8, dtype=torch.uint8), {"ids": 1}],
    ids=["list", "3d", "uint8-images", "dict-without-input_ids"],
)
def test_unsupported_inputs_are_data_errors(bad: object) -> None:
    with pytest.raises(DataError) as info:
        augment(bad, "weak")
    assert info.value.where and info.value.fix


def test_bad_strength_and_mismatched_mask() -> None:
    with pytest.raises(ConfigError, match="medium"):
        augment(torch.zeros(2, 3), "medium")  # type: ignore[arg-type]
    bad = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 4)}
    with pytest.raises(DataError, match="attention_mask"):
        augment(bad, "weak")
