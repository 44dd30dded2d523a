"""Shared input preparation: hand-computed values for channels, resizing, cropping and
normalisation, and clear DataErrors for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.backbones import Preprocess, create_backbone
from transferkit.backbones.preprocess import (
    check_texts,
    prepare_images,
    prepare_vectors,
    resize_crop,
    resize_crop_pil,
)
from transferkit.errors import DataError

RGB = Preprocess("image", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_size=(3, 4, 4))
GRAY = Preprocess("image", mean=(0.0,), std=(1.0,), input_size=(1, 4, 4))


def test_gray_uint8_expands_to_three_normalised_channels() -> None:
    x = prepare_images([np.full((4, 4), 51, np.uint8)], RGB)  # 51 / 255 = 0.2
    assert x.shape == (1, 3, 4, 4)
    torch.testing.assert_close(x, torch.full((1, 3, 4, 4), (0.2 - 0.5) / 0.25))


def test_rgb_reduces_to_bt601_luma_for_one_channel_models() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 102, 51  # 1.0, 0.4, 0.2
    x = prepare_images(img[None], GRAY)
    torch.testing.assert_close(x, torch.full((1, 1, 4, 4), 0.299 + 0.587 * 0.4 + 0.114 * 0.2))


def test_uint8_pil_path_and_channels_first_agree_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)  # resized to 4x4
    path = tmp_path / "x.png"
    Image.fromarray(img).save(path)
    ref = prepare_images(img[None], RGB)
    for raw in (
        [img],
        [Image.fromarray(img)],
        [path],
        [str(path)],
        img.transpose(2, 0, 1)[None],
        torch.from_numpy(img[None]),
    ):
        torch.testing.assert_close(prepare_images(raw, RGB), ref, atol=0, rtol=0)
    # floats are resized in torch, 8-bit images in PIL: same filter up to 8-bit rounding
    for raw in (img[None].astype(np.float64) / 255, [img.tolist()]):
        torch.testing.assert_close(prepare_images(raw, RGB), ref, atol=0.03, rtol=0)
    same_size = Preprocess("image", mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(3, 5, 6))
    exact = (img.astype(np.float32) / 255 - 0.5) / 0.25
    for raw in (img[None], [img], img[None] / 255.0):
        out = prepare_images(raw, same_size)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(out, exact, atol=1e-6)


def test_alpha_is_dropped_and_palette_images_become_rgb() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    x = prepare_images([Image.fromarray(rgba, "RGBA")], RGB)
    torch.testing.assert_close(x[0, 0], torch.full((4, 4), 2.0))  # (1 - .5) / .25
    pal = Image.fromarray(rgba[..., :3]).convert("P")
    torch.testing.assert_close(prepare_images([pal], RGB), x)


def test_resize_crop_takes_the_centre_window() -> None:
    x = torch.arange(32.0).view(1, 1, 4, 8) / 32
    # scale = max(4 / 4, 4 / 8) = 1: no resize, columns 2..5 are kept
    torch.testing.assert_close(resize_crop(x, (4, 4)), x[..., 2:6])
    y = torch.arange(64.0).view(1, 1, 8, 8) / 64
    # crop_pct 0.5: cover 8x8 (already), crop the middle 4x4
    torch.testing.assert_close(resize_crop(y, (4, 4), crop_pct=0.5), y[..., 2:6, 2:6])
    arr = np.arange(32, dtype=np.uint8).reshape(4, 8)
    np.testing.assert_array_equal(
        np.asarray(resize_crop_pil(Image.fromarray(arr), (4, 4))), arr[:, 2:6]
    )
    const = torch.full((1, 3, 9, 13), 0.3)
    out = resize_crop(const, (5, 5), interpolation="bicubic")
    assert out.shape == (1, 3, 5, 5)
    torch.testing.assert_close(out, torch.full((1, 3, 5, 5), 0.3))


def test_antialiased_downsampling_averages() -> None:
    # a 2x2 checkerboard of 0/1 pixels shrunk 4x -> every output pixel is ~0.5
    board = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2
    out = resize_crop(board.float().view(1, 1, 8, 8), (2, 2))
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 0.5), atol=0.02, rtol=0)


def test_float_tensor_nchw_passes_through_unchanged() -> None:
    t = torch.randn(2, 3, 7, 7)
    assert prepare_images(t, RGB) is t
    with pytest.raises(DataError, match="3 channels"):
        prepare_images(torch.randn(2, 5, 7, 7), RGB)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (np.full((2, 4, 4), 2.0), r"\[0, 1\]"),
        (np.full((2, 4, 4), -3, np.int64), "0..255"),
        ([np.zeros((5, 5, 2))], "HxW or HxWxC"),
        ([{"a": 1}], "not an image"),
        ({"input_ids": [1]}, "dict"),
        ([], "empty"),
        (np.array(["a", "b"]), "text"),
        (["A man is playing a guitar."], "not found"),
        ([np.full((4, 4), np.nan)], "NaN"),
    ],
)
def test_bad_images_raise_data_error(raw: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        prepare_images(raw, RGB)


def test_text_given_to_image_backbone_points_to_text_backbones() -> None:
    with pytest.raises(DataError) as err:
        prepare_images(["A man is playing a guitar."], RGB)
    assert "packaged:minilm-l6" in str(err.value)


def test_unreadable_image_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"broken\.png") as err:
        prepare_images([bad], RGB)
    assert "unreadable" in str(err.value)


def test_native_size_needs_uniform_images_unless_input_size_given() -> None:
    cnn = create_backbone("tk:smallcnn", width=2, depth=1)
    mixed = [np.zeros((8, 8), np.uint8), np.zeros((28, 28), np.uint8)]
    assert cnn.prepare(mixed[:1]).shape == (1, 1, 8, 8)  # native size kept
    with pytest.raises(DataError, match="different sizes"):
        cnn.prepare(mixed)
    sized = create_backbone("tk:smallcnn", width=2, depth=1, input_size=16)
    assert sized.prepare(mixed).shape == (2, 1, 16, 16)
    assert cnn.prepare(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 1, 8, 8)  # RGB -> gray


def test_check_texts() -> None:
    assert check_texts("one") == ["one"]
    assert check_texts(np.array(["a", "b"])) == ["a", "b"]
    with pytest.raises(DataError, match="#1 is a float") as err:
        check_texts(["ok", float("nan")])
    assert "item 1" in str(err.value)
    with pytest.raises(DataError, match="images or numbers"):
        check_texts(np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match="empty"):
        check_texts([])


def test_prepare_vectors() -> None:
    x = prepare_vectors([[1, 2, 3], [4, 5, 6]], 3)
    assert x.dtype == torch.float32 and x.shape == (2, 3)
    assert prepare_vectors(np.arange(3.0), 3).shape == (1, 3)
    with pytest.raises(DataError, match=r"\[N, 4\]"):
        prepare_vectors(np.zeros((2, 3)), 4)
    with pytest.raises(DataError, match="NaN") as err:
        prepare_vectors([[0, 0, 0], [0, np.nan, 0]], 3)
    assert "row 1" in str(err.value)
    with pytest.raises(DataError, match="numeric"):
        prepare_vectors(["a", "b"], 1)
