"""Weak and strong stochastic augmentations of *prepared* batches, one recipe per modality.

Self-training methods (FixMatch, Sohn et al. 2020, https://arxiv.org/abs/2001.07685) need
two views of the same unlabelled example: a *weak* one whose prediction becomes the
pseudo-label, and a *strong* one trained to agree with it. The batches reaching a method are
already tensors (see :mod:`transferkit.backbones.base`), so these functions work on tensors,
keep shapes, dtypes and devices, never modify their input, and draw every random number from
``generator`` (or from the global RNG of the input's device when it is ``None``).

* images ``[B, C, H, W]`` (normalised floats): weak = horizontal flip (p = 1/2) + random
  translation by up to 12.5 % of the size (reflect-pad, random crop); strong = weak + two
  RandAugment-like colour operations with random magnitudes + cutout. Colour operations run
  in a per-image value range: each image is mapped to ``[0, 1]`` by its own min and max,
  changed with ``torchvision.transforms.v2.functional`` and mapped back, so they behave the
  same whatever mean/std normalisation was used.
* text ``{"input_ids", "attention_mask", ...}`` ``[B, L]``: weak = token dropout p = 0.1
  (the token's ``attention_mask`` becomes 0); strong = dropout p = 0.3 plus, when
  ``mask_token_id`` is given, 15 % of the tokens replaced by it. The first and the last
  attended token ([CLS]/[SEP] or <s>/</s>) and padding are never touched, with right or
  left padding alike.
* the token-level text operations (:func:`eligible_tokens`, :func:`token_dropout`,
  :func:`replace_tokens`, :func:`swap_adjacent`, :func:`delete_span`,
  :func:`delete_positions`) live in :mod:`transferkit.augment_text` and are re-exported here.
* vectors ``[B, F]``: weak = Gaussian noise with ``sigma = 0.05 * std_f`` (the per-feature
  standard deviation of the batch); strong = noise ``0.2 * std_f`` then inverted feature
  dropout p = 0.2 (kept values scaled by ``1 / 0.8``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from transferkit.augment_text import (
    delete_positions,
    delete_span,
    eligible_tokens,
    replace_tokens,
    swap_adjacent,
    token_dropout,
    uniform_like,
)
from transferkit.errors import ConfigError, DataError

__all__ = [
    "Strength",
    "augment",
    "augment_image",
    "augment_text",
    "augment_vector",
    "colour_ops",
    "cutout",
    "delete_positions",
    "delete_span",
    "eligible_tokens",
    "feature_dropout",
    "flip_translate",
    "gaussian_noise",
    "replace_tokens",
    "swap_adjacent",
    "token_dropout",
]

Strength = Literal["weak", "strong"]

MAX_SHIFT = 0.125
TEXT_DROP = {"weak": 0.1, "strong": 0.3}
TEXT_REPLACE = 0.15
VECTOR_SIGMA = {"weak": 0.05, "strong": 0.2}
VECTOR_DROP = 0.2


# ----------------------------------------------------------------------------- random draws
def _scalar_device(generator: torch.Generator | None) -> torch.device:
    """Small per-sample parameters are drawn where the generator lives (else the CPU RNG)."""
    return generator.device if generator is not None else torch.device("cpu")


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = generator.device if generator is not None else like.device
    out = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> list[float]:
    u = torch.rand(n, generator=generator, device=_scalar_device(generator))
    return (lo + (hi - lo) * u).tolist()


def _describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def _check_strength(strength: str) -> None:
    if strength not in ("weak", "strong"):
        raise ConfigError(
            f"unknown augmentation strength {strength!r}",
            where="augment(strength=...)",
            fix="use 'weak' or 'strong'",
        )


# ----------------------------------------------------------------------------- images
def flip_translate(
    x: Tensor, max_shift: float = MAX_SHIFT, generator: torch.Generator | None = None
) -> Tensor:
    """Flip each image horizontally with p = 1/2, then shift it by up to ``max_shift`` of its
    height/width: reflect-pad by ``p = floor(max_shift * size)`` pixels and crop ``[H, W]``
    at a random offset in ``[0, 2p]`` (offset ``p`` = no shift)."""
    b, _, h, w = x.shape
    dev = _scalar_device(generator)
    flip = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)
    out = torch.where(flip[:, None, None, None], x.flip(-1), x)
    ph, pw = min(int(max_shift * h), h - 1), min(int(max_shift * w), w - 1)
    if ph == 0 and pw == 0:
        return out
    padded = F.pad(out, (pw, pw, ph, ph), mode="reflect")
    oy = torch.randint(0, 2 * ph + 1, (b,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, 2 * pw + 1, (b,), generator=generator, device=dev).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


_Op = tuple[str, Callable[[Tensor, float], Tensor], float, float, tuple[int, ...] | None]


def _op_table() -> list[_Op]:
    """``(name, fn(image in [0, 1], magnitude), lo, hi, channels)``: magnitudes are drawn in
    ``[lo, hi]``; ``channels`` lists the channel counts the op supports (``None``: any)."""
    return [
        ("brightness", TF.adjust_brightness, 0.4, 1.6, (1, 3)),
        ("contrast", TF.adjust_contrast, 0.3, 1.7, (1, 3)),
        ("saturation", TF.adjust_saturation, 0.0, 2.0, (3,)),
        ("sharpness", TF.adjust_sharpness, 0.0, 2.0, (1, 3)),
        ("blur", lambda im, s: TF.gaussian_blur(im, [3, 3], [s, s]), 0.3, 1.5, None),
        ("posterize", lambda im, bits: TF.posterize(im, int(bits)), 2.0, 5.0, None),
        ("solarize", TF.solarize, 0.5, 1.0, None),
        ("autocontrast", lambda im, _: TF.autocontrast(im), 0.0, 1.0, (1, 3)),
    ]


OP_NAMES = tuple(op[0] for op in _op_table())


def _ops_for(channels: int) -> list[_Op]:
    return [op for op in _op_table() if op[4] is None or channels in op[4]]


def colour_ops(x: Tensor, num_ops: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """Apply ``num_ops`` colour operations, chosen uniformly (with replacement) from
    :data:`OP_NAMES` with uniformly random magnitudes, to each image of ``x [B, C, H, W]``.
    Images with 2 or more than 3 channels get only blur, posterize and solarize; 1-channel
    images no saturation.

    Each image ``x_b`` is mapped to ``u = (x_b - lo_b) / (hi_b - lo_b)`` with its own min
    ``lo_b`` and max ``hi_b``, transformed in ``[0, 1]`` and mapped back, so the ops are
    sensible on mean/std-normalised inputs. Saturation is a no-op on 1-channel images.
    """
    table = _ops_for(x.shape[1])
    b = x.shape[0]
    dev = _scalar_device(generator)
    choice = torch.randint(0, len(table), (b, num_ops), generator=generator, device=dev).tolist()
    u01 = torch.rand(b, num_ops, generator=generator, device=dev).tolist()
    flat = x.detach().float().flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    scale = (hi - lo).clamp_min(1e-6)
    unit = ((x.float() - lo[:, None, None, None]) / scale[:, None, None, None]).clamp(0, 1)
    images = []
    for i in range(b):
        img = unit[i]
        for k, u in zip(choice[i], u01[i], strict=True):
            _, fn, m_lo, m_hi, _ = table[k]
            img = fn(img, m_lo + (m_hi - m_lo) * u)
        images.append(img)
    out = torch.stack(images) * scale[:, None, None, None] + lo[:, None, None, None]
    return out.to(x.dtype)


def cutout(
    x: Tensor,
    size_range: tuple[float, float] = (0.2, 0.5),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill one random square per image (side ``s * min(H, W)``, ``s ~ U(size_range)``,
    centre uniform, clipped at the border) with the image's per-channel mean."""
    b, _, h, w = x.shape
    dev = _scalar_device(generator)
    side = torch.tensor(_uniform(b, *size_range, generator), device=dev) * min(h, w)
    cy = torch.rand(b, generator=generator, device=dev) * h
    cx = torch.rand(b, generator=generator, device=dev) * w
    half = (side / 2).to(x.device)
    cy, cx = cy.to(x.device), cx.to(x.device)
    ys = torch.arange(h, device=x.device) + 0.5
    xs = torch.arange(w, device=x.device) + 0.5
    in_y = (ys[None, :] - cy[:, None]).abs() <= half[:, None]  # [B, H]
    in_x = (xs[None, :] - cx[:, None]).abs() <= half[:, None]  # [B, W]
    box = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # [B, 1, H, W]
    fill = x.mean(dim=(2, 3), keepdim=True)
    return torch.where(box, fill, x)


def _check_image(x: Any) -> None:
    if not (isinstance(x, Tensor) and x.ndim == 4 and x.is_floating_point()):
        got = _describe(x)
        raise DataError(
            f"image augmentation needs a float tensor [B, C, H, W], got {got}",
            where="augment_image(x)",
            fix="pass prepared images (the backbone's prepare() output)",
        )


def augment_image(
    x: Tensor, strength: Strength, generator: torch.Generator | None = None
) -> Tensor:
    """Weak: :func:`flip_translate`. Strong: weak, then :func:`colour_ops` (2 ops), then
    :func:`cutout`. ``[B, C, H, W] -> [B, C, H, W]``, same dtype and device."""
    _check_strength(strength)
    _check_image(x)
    out = flip_translate(x, generator=generator)
    if strength == "strong":
        out = cutout(colour_ops(out, generator=generator), generator=generator)
    return out


# ----------------------------------------------------------------------------- text
def _check_text(x: Any) -> None:
    ids = x.get("input_ids") if isinstance(x, Mapping) else None
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        raise DataError(
            "text augmentation needs a dict with an 'input_ids' tensor [B, L], got keys "
            f"{sorted(x) if isinstance(x, Mapping) else type(x).__name__}",
            where="augment_text(x)",
            fix="pass the tokenizer output (the backbone's prepare() result)",
        )
    mask = x.get("attention_mask")
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape != ids.shape):
        raise DataError(
            "attention_mask does not have the shape of input_ids",
            where='augment_text(x)["attention_mask"]',
            fix="pass the tokenizer output unchanged",
        )


def augment_text(
    x: Mapping[str, Tensor],
    strength: Strength,
    generator: torch.Generator | None = None,
    mask_token_id: int | None = None,
) -> dict[str, Tensor]:
    """Weak: token dropout p = 0.1. Strong: dropout p = 0.3 and, with ``mask_token_id``,
    15 % of the tokens replaced by it (see :func:`token_dropout`)."""
    _check_strength(strength)
    _check_text(x)
    p_replace = TEXT_REPLACE if strength == "strong" else 0.0
    return token_dropout(x, TEXT_DROP[strength], p_replace, mask_token_id, generator)


# ----------------------------------------------------------------------------- vectors
def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + sigma * std_f * eps`` with ``std_f`` the per-feature (population) standard
    deviation of the batch ``[B, F]`` and ``eps ~ N(0, 1)``; a one-row batch is unchanged."""
    std = (
        x.detach().std(0, unbiased=False, keepdim=True)
        if x.shape[0] > 1
        else torch.zeros_like(x[:1])
    )
    return x + sigma * std * _randn(tuple(x.shape), generator, x)


def feature_dropout(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout of single entries: each kept with probability ``1 - p`` and scaled by
    ``1 / (1 - p)``, so the expectation is ``x``."""
    keep = uniform_like(tuple(x.shape), generator, x) >= p
    return torch.where(keep, x / (1.0 - p), torch.zeros_like(x))


def _check_vector(x: Any) -> None:
    if not (isinstance(x, Tensor) and x.ndim == 2 and x.is_floating_point()):
        got = _describe(x)
        raise DataError(
            f"vector augmentation needs a float tensor [B, F], got {got}",
            where="augment_vector(x)",
            fix="pass prepared feature vectors",
        )


def augment_vector(
    x: Tensor, strength: Strength, generator: torch.Generator | None = None
) -> Tensor:
    """Weak: :func:`gaussian_noise` with sigma 0.05. Strong: noise 0.2, then
    :func:`feature_dropout` with p = 0.2."""
    _check_strength(strength)
    _check_vector(x)
    out = gaussian_noise(x, VECTOR_SIGMA[strength], generator)
    if strength == "strong":
        out = feature_dropout(out, VECTOR_DROP, generator)
    return out


# ----------------------------------------------------------------------------- dispatch
def augment(
    x: Any,
    strength: Strength,
    *,
    generator: torch.Generator | None = None,
    mask_token_id: int | None = None,
) -> Any:
    """Augment a prepared batch by modality: a dict with ``input_ids`` is text, a float
    ``[B, C, H, W]`` tensor images, a float ``[B, F]`` tensor vectors.

    Raises:
        DataError: any other input (integer tensors, other ranks, other types).
        ConfigError: ``strength`` is not ``"weak"`` or ``"strong"``.
    """
    _check_strength(strength)
    if isinstance(x, Mapping):
        return augment_text(x, strength, generator, mask_token_id)
    if isinstance(x, Tensor) and x.is_floating_point() and x.ndim == 4:
        return augment_image(x, strength, generator)
    if isinstance(x, Tensor) and x.is_floating_point() and x.ndim == 2:
        return augment_vector(x, strength, generator)
    raise DataError(
        f"cannot augment {_describe(x)}",
        where="augment(x)",
        fix="pass prepared inputs: float images [B, C, H, W], float vectors [B, F] or a "
        "tokenizer dict with 'input_ids' [B, L]",
    )
