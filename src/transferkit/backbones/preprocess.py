"""Raw inputs -> the tensors a backbone's ``forward`` takes, shared by every family.

Images (:func:`prepare_images`) may be given as

* a list of PIL images, of uint8/float numpy arrays ``HxW`` / ``HxWxC``, or of image file
  paths (``str`` / ``Path``, decoded with PIL);
* one numpy array ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` (uint8 0..255 or
  float 0..1);
* a float tensor ``[N, C, H, W]``, taken as already prepared and passed through.

Images are resized with antialiasing so that they cover ``(H / crop_pct, W / crop_pct)``
keeping their aspect ratio and centre-cropped to the model's ``(H, W)`` (timm's evaluation
transform; ``crop_pct = 1`` on a square image is a plain resize) -- with PIL for 8-bit
images, as torchvision and timm do (about 10x faster than resizing floats), with
``torch.nn.functional.interpolate`` for float ones. Each becomes float ``[C, H, W]`` in
[0, 1]; grayscale is repeated to 3 channels for RGB models and RGB is reduced to luma
``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as PIL's ``"L"`` mode) for 1-channel
models; an alpha channel is dropped. Last, channel-wise ``x' = (x - mean) / std``.

Texts (:func:`check_texts`) must be a list of ``str``; vectors (:func:`prepare_vectors`) a
finite float array ``[N, F]``. Every bad input raises :class:`DataError` naming the
offending item.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from transferkit.backbones.base import Preprocess
from transferkit.errors import BackboneError, DataError

LUMA = (0.299, 0.587, 0.114)
_FIX_IMAGES = (
    "pass a list of PIL images, uint8 arrays HxW / HxWxC, image file paths, or one array "
    "[N, H, W] / [N, H, W, C] (uint8 0..255 or float 0..1)"
)


def _array_to_unit(arr: np.ndarray, where: str) -> np.ndarray:
    """Pixel values -> float32 in [0, 1] (uint8 / 16-bit integers scaled, floats checked)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(
                f"integer pixel values must lie in 0..255, got {lo}..{hi}",
                where=where,
                fix="pass uint8 images, or floats scaled to [0, 1]",
            )
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if arr.size and not np.isfinite(arr).all():
            raise DataError(
                "image holds NaN or infinite values",
                where=where,
                fix="clean the pixels (e.g. numpy.nan_to_num) or drop the image",
            )
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise DataError(
                f"float pixel values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]",
                where=where,
                fix="divide 0..255 images by 255, or pass them as uint8",
            )
        return np.clip(arr, 0.0, 1.0)
    raise DataError(f"unsupported pixel dtype {arr.dtype}", where=where, fix=_FIX_IMAGES)


def _hwc_to_chw(arr: np.ndarray, where: str) -> torch.Tensor:
    """One image ``HxW`` / ``HxWxC`` / ``CxHxW`` array -> float tensor ``[C, H, W]``."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise DataError(
            f"an image must be HxW or HxWxC with C in 1, 3, 4; got shape {tuple(arr.shape)}",
            where=where,
            fix=_FIX_IMAGES,
        )
    unit = _array_to_unit(arr, where)
    return torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))


_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def _pil_8bit(img: Image.Image) -> Image.Image | None:
    """The image in mode L, RGB or RGBA; ``None`` for 16-bit / float images."""
    if img.mode in ("L", "RGB", "RGBA"):
        return img
    if img.mode in ("1", "LA"):
        return img.convert("L")
    if img.mode.startswith("I") or img.mode == "F":
        return None
    return img.convert("RGB")


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """A 16-bit or float PIL image -> uint16 / float32 array ``HxW``."""
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)
    return np.clip(np.asarray(img), 0, 65535).astype(np.uint16)


def load_image_file(path: str | os.PathLike[str]) -> Image.Image:
    """Decode one image file with PIL; unreadable or missing files raise :class:`DataError`."""
    p = Path(path)
    if not p.is_file():
        looks_like_text = isinstance(path, str) and (" " in path or len(path) > 255)
        raise DataError(
            f"image file not found: {str(path)[:120]!r}",
            where=str(path)[:200],
            fix="image backbones take images or image file paths; text needs a text backbone "
            "(e.g. packaged:minilm-l6)"
            if looks_like_text
            else "check the path (relative paths are resolved from the working directory)",
        )
    try:
        with Image.open(p) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"unreadable image file ({type(exc).__name__}: {exc})",
            where=str(p),
            fix="remove or replace the file; PIL must be able to open it",
        ) from exc


def _decode(item: Any, i: int) -> Image.Image | torch.Tensor:
    """One raw image -> an 8-bit PIL image, or a float tensor ``[C, H, W]`` in [0, 1]."""
    where = f"image #{i}"
    if isinstance(item, str | os.PathLike):
        where, item = str(item), load_image_file(item)
    if isinstance(item, Image.Image):
        img = _pil_8bit(item)
        return img if img is not None else _hwc_to_chw(_pil_to_array(item), where)
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if not isinstance(item, np.ndarray | list | tuple):
        raise DataError(f"{where} is a {type(item).__name__}, not an image", fix=_FIX_IMAGES)
    arr = np.asarray(item)
    if arr.dtype.kind in "USO":
        raise DataError(f"{where} is not an image (dtype {arr.dtype})", fix=_FIX_IMAGES)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        return Image.fromarray(np.ascontiguousarray(arr))
    return _hwc_to_chw(arr, where)


def _batch_array(arr: np.ndarray) -> np.ndarray:
    """A batch array ``[N,H,W]`` / ``[N,H,W,C]`` / ``[N,C,H,W]`` -> ``[N, H, W, C]``."""
    where = f"image array of shape {tuple(arr.shape)}"
    if arr.dtype.kind in "USO":
        raise DataError(
            f"an image backbone got an array of {arr.dtype} (text?)",
            where=where,
            fix="text needs a text backbone (e.g. packaged:minilm-l6); " + _FIX_IMAGES,
        )
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3):
        arr = np.moveaxis(arr, 1, -1)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise DataError("cannot read this array as a batch of images", where=where, fix=_FIX_IMAGES)
    return arr


def match_channels(x: torch.Tensor, channels: int, where: str = "images") -> torch.Tensor:
    """``[N, C_in, H, W]`` -> ``[N, channels, H, W]``: drop alpha, gray->RGB, RGB->luma."""
    if x.shape[1] == 4:
        x = x[:, :3]
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and channels == 1:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    raise DataError(
        f"images have {x.shape[1]} channels but the model takes {channels}",
        where=where,
        fix="pass grayscale or RGB images to a model built for 1 or 3 channels "
        "(YAML: model.backbone_options.in_chans)",
    )


def cover_size(hw: tuple[int, int], size: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """Size ``(h', w')`` that keeps the aspect of ``hw`` and covers ``size / crop_pct``."""
    (h, w), (out_h, out_w) = hw, size
    scale = max(out_h / (crop_pct * h), out_w / (crop_pct * w))
    return max(out_h, round(h * scale)), max(out_w, round(w * scale))


def resize_crop(
    x: torch.Tensor, size: tuple[int, int], crop_pct: float = 1.0, interpolation: str = "bilinear"
) -> torch.Tensor:
    """Resize ``[N, C, h, w]`` to cover ``size / crop_pct`` (aspect kept), centre-crop ``size``.

    The scale is ``s = max(H / (crop_pct h), W / (crop_pct w))``; the crop takes the middle
    ``H x W`` window. Downsampling is antialiased; bicubic overshoot is clamped to [0, 1].
    """
    (out_h, out_w), (h, w) = size, x.shape[-2:]
    new_h, new_w = cover_size((h, w), size, crop_pct)
    if (new_h, new_w) != (h, w):
        mode = interpolation if interpolation in ("bilinear", "bicubic") else "nearest"
        extra = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, **extra)
        if mode == "bicubic":
            x = x.clamp_(0.0, 1.0)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    return x[..., top : top + out_h, left : left + out_w]


def resize_crop_pil(
    img: Image.Image, size: tuple[int, int], crop_pct: float = 1.0, interpolation: str = "bilinear"
) -> Image.Image:
    """:func:`resize_crop` for 8-bit PIL images (PIL's antialiased filters, ~10x faster)."""
    (out_h, out_w), (w, h) = size, img.size
    new_h, new_w = cover_size((h, w), size, crop_pct)
    if (new_h, new_w) != (h, w):
        img = img.resize((new_w, new_h), _PIL_FILTERS.get(interpolation, Image.Resampling.BILINEAR))
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    return img.crop((left, top, left + out_w, top + out_h))


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Channel-wise ``(x - mean) / std`` on ``[N, C, H, W]``."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def _as_image_list(raw: Any) -> list[Any] | np.ndarray:
    if isinstance(raw, str | os.PathLike | Image.Image):
        return [raw]
    if isinstance(raw, np.ndarray):
        return raw
    if isinstance(raw, torch.Tensor):
        return raw.detach().cpu().numpy()
    if isinstance(raw, Sequence) and not isinstance(raw, bytes):
        if len(raw) == 0:
            raise DataError("no images given (empty batch)", fix=_FIX_IMAGES)
        return list(raw)
    if isinstance(raw, dict) or hasattr(raw, "keys"):
        raise DataError(
            "an image backbone got a dict (tokenizer output?)",
            fix="text needs a text backbone (e.g. packaged:minilm-l6); " + _FIX_IMAGES,
        )
    raise DataError(f"cannot read a {type(raw).__name__} as images", fix=_FIX_IMAGES)


def _one(item: Any, i: int, pre: Preprocess) -> torch.Tensor:
    """One raw image -> float ``[1, C, H, W]`` in [0, 1], resized/cropped when sized."""
    _, out_h, out_w = pre.input_size or (0, 0, 0)
    crop = float(pre.extra.get("crop_pct", 1.0))
    img = _decode(item, i)
    if isinstance(img, Image.Image):
        if out_h > 0 and out_w > 0:
            img = resize_crop_pil(img, (out_h, out_w), crop, pre.interpolation)
        t = _hwc_to_chw(np.asarray(img), f"image #{i}")[None]
    else:
        t = img[None]
        if out_h > 0 and out_w > 0:
            t = resize_crop(t, (out_h, out_w), crop, pre.interpolation)
    return match_channels(t, pre.input_size[0] if pre.input_size else 3, f"image #{i}")


def prepare_images(raw: Any, pre: Preprocess) -> torch.Tensor:
    """Raw images -> normalised float ``[N, C, H, W]`` following ``pre`` (see module doc).

    ``pre.input_size`` is ``(C, H, W)``; ``H = W = 0`` keeps each image's native size
    (then all images in the batch must share it). ``pre.extra["crop_pct"]`` defaults to 1.
    """
    assert pre.input_size is not None and pre.mean is not None and pre.std is not None
    channels, out_h, out_w = pre.input_size
    if isinstance(raw, torch.Tensor) and raw.is_floating_point() and raw.ndim == 4:
        if raw.shape[1] != channels:
            raise DataError(
                f"a prepared image tensor must have {channels} channels, got shape "
                f"{tuple(raw.shape)}",
                fix="pass raw images (the backbone converts them) or [N, C, H, W] tensors",
            )
        return raw
    items = _as_image_list(raw)
    if isinstance(items, np.ndarray):
        arr = _batch_array(items)
        crop = float(pre.extra.get("crop_pct", 1.0))
        keep = (out_h, out_w) == (0, 0) or ((out_h, out_w) == arr.shape[1:3] and crop == 1.0)
        if arr.dtype != np.uint8 or keep:  # one vectorised pass, no per-image work
            unit = _array_to_unit(arr, f"image array of shape {tuple(items.shape)}")
            x = torch.from_numpy(np.ascontiguousarray(unit.transpose(0, 3, 1, 2)))
            if not keep:
                x = resize_crop(x, (out_h, out_w), crop, pre.interpolation)
            return normalize(match_channels(x, channels), pre.mean, pre.std).contiguous()
        items = list(arr)
    batch = [_one(it, i, pre) for i, it in enumerate(items)]
    if not all(b.shape == batch[0].shape for b in batch):
        sizes = sorted({tuple(b.shape[-2:]) for b in batch})
        raise DataError(
            f"images of different sizes {sizes[:4]} in one batch and no input size to resize to",
            fix="pass input_size=<pixels> when creating the backbone, or resize the images",
        )
    return normalize(torch.cat(batch), pre.mean, pre.std).contiguous()


def check_texts(raw: Any) -> list[str]:
    """A batch of texts as ``list[str]``; anything else raises :class:`DataError`."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "UO":
        raw = raw.tolist()
    if isinstance(raw, np.ndarray | torch.Tensor | Image.Image):
        raise DataError(
            f"a text backbone got {type(raw).__name__} input (images or numbers?)",
            fix="text backbones take a list of strings; use an image backbone "
            "(e.g. packaged:efficientnet-lite0) for images",
        )
    if not isinstance(raw, Sequence) or isinstance(raw, bytes):
        raise DataError(f"a text backbone got a {type(raw).__name__}", fix="pass a list of str")
    if len(raw) == 0:
        raise DataError("no texts given (empty batch)", fix="pass a non-empty list of str")
    for i, s in enumerate(raw):
        if not isinstance(s, str):
            raise DataError(
                f"text input #{i} is a {type(s).__name__}, not a str",
                where=f"item {i}: {str(s)[:60]!r}",
                fix="convert every example to str (missing values: drop or fill them)",
            )
    return list(raw)


def prepare_vectors(raw: Any, in_features: int) -> torch.Tensor:
    """A batch of feature vectors -> finite float32 ``[N, in_features]``."""
    if isinstance(raw, torch.Tensor):
        x = raw.detach().cpu().float() if not raw.is_floating_point() else raw
    else:
        try:
            arr = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"cannot read the input as numeric feature vectors ({exc})",
                fix=f"pass a float array [N, {in_features}]",
            ) from exc
        x = torch.from_numpy(arr)
    if x.ndim == 1 and in_features > 0 and x.numel() == in_features:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != in_features:
        cols = f"the data has {x.shape[1]} feature columns: " if x.ndim == 2 else ""
        raise DataError(
            f"feature vectors must have shape [N, {in_features}], got {tuple(x.shape)}",
            fix=f"{cols}set in_features to the data's column count "
            "(YAML: model.backbone_options.in_features)",
        )
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0, 0])
        raise DataError(
            "feature vectors hold NaN or infinite values",
            where=f"row {bad}",
            fix="impute or drop missing values first",
        )
    return x


def parse_size(value: Any, where: str) -> tuple[int, int]:
    """``224`` / ``(224, 224)`` / ``(3, 224, 224)`` -> ``(H, W)``."""
    vals = [value] * 2 if isinstance(value, int | float) else list(value)[-2:]
    if len(vals) != 2 or any(not float(v).is_integer() or v < 1 for v in vals):
        raise BackboneError(f"invalid input size {value!r}", where=where, fix="use e.g. 224")
    return int(vals[0]), int(vals[1])


def crop_from_resize(crop: int, resize: int) -> float:
    """torchvision's "resize shorter side to ``resize``, centre-crop ``crop``" as a crop_pct."""
    return min(1.0, crop / resize) if resize > 0 else 1.0
