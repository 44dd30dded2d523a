"""Augmentation policies: which augmentations a training run applies, configured per modality.

:class:`AugmentConfig` (pydantic, round-trips to YAML) has one optional section per modality;
:class:`BatchAugmenter` applies the section matching the backbone to *prepared* training
batches, ``(x, y) -> (x', y')``, and never to evaluation batches (methods call it from
``training_step`` only). YAML::

    method: {name: finetune, params: {augment: {image: {policy: randaugment, hflip: true}}}}

Images ``[B, C, H, W]`` arrive normalised by the backbone's :class:`Preprocess`,
``x = (u - mean) / std`` with pixels ``u`` in ``[0, 1]``. In order:

1. ``random_resized_crop`` (torchvision ``RandomResizedCrop``: area fraction in
   ``crop_scale``, aspect ratio in ``[3/4, 4/3]``, resized back to ``H x W``) and ``hflip``
   (p = 1/2) run on the normalised tensor: both are linear in the pixels, so they commute
   with the normalisation.
2. ``policy``: ``flip_crop`` is :func:`transferkit.augment.flip_translate` (flip + shift by
   up to 12.5 %, the CIFAR recipe); ``randaugment`` (Cubuk et al. 2020,
   https://arxiv.org/abs/1909.13719, ``num_ops`` ops at ``magnitude``) and
   ``trivialaugment`` (Mueller & Hutter 2021, https://arxiv.org/abs/2103.10044) are
   torchvision's, which need pixels in ``[0, 1]``: the batch is DE-normalised with the
   preprocess statistics, ``u = clamp(x * std + mean, 0, 1)``, augmented, and re-normalised.
   Areas uncovered by rotations/shears are filled with ``mean`` (0 after re-normalising).
   Without statistics each image is mapped to ``[0, 1]`` by its own min and max instead.
3. ``mixup_alpha`` / ``cutmix_alpha`` > 0: torchvision ``MixUp`` (Zhang et al. 2018,
   https://arxiv.org/abs/1710.09412) / ``CutMix`` (Yun et al. 2019,
   https://arxiv.org/abs/1905.04899), one of them per batch when both are set. Each image
   is mixed with its neighbour in the batch (``roll(1)``), ``lam ~ Beta(alpha, alpha)``, and
   the labels become soft targets ``y' = lam * onehot(y) + (1 - lam) * onehot(y_rolled)``
   ``[B, C]`` (CutMix: ``lam`` = the kept area fraction), which
   :func:`transferkit.methods.supervised.task_loss` accepts. Classification only.

Text ``{"input_ids", "attention_mask", ...}`` ``[B, L]``: ``span_delete`` (one span per row,
:func:`~transferkit.augment.delete_span`), ``swap_prob``
(:func:`~transferkit.augment.swap_adjacent`), ``mask_prob`` (ids -> the tokenizer's mask
token) and ``token_dropout`` (``attention_mask`` -> 0), in that order. Special tokens
(the tokenizer's ``all_special_ids``: [CLS], [SEP], <s>, EOS, PAD, ...) and padding are never
changed; without a tokenizer the first and last attended token of each row are protected.

Vectors ``[B, F]``: Gaussian ``noise`` (in units of each feature's batch std), inverted
``dropout``, and ``mixup_alpha`` as for images.

Randomness: every draw comes from ``generator`` when given, else from the global RNG (as
seeded, checkpointed and restored by the trainer), so equal seeds give equal batches.
torchvision transforms draw from the global CPU RNG; they run inside
``torch.random.fork_rng`` seeded from ``generator``, which leaves the global state alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor
from torchvision.transforms import v2

from transferkit.augment import (
    delete_span,
    eligible_tokens,
    feature_dropout,
    flip_translate,
    gaussian_noise,
    replace_tokens,
    swap_adjacent,
    token_dropout,
)
from transferkit.backbones.base import Preprocess
from transferkit.errors import ConfigError, DataError

__all__ = [
    "AugmentConfig",
    "BatchAugmenter",
    "ImageAugment",
    "TextAugment",
    "VectorAugment",
    "auto_augment",
    "forked_rng",
    "mix_batch",
    "random_hflip",
    "random_resized_crop",
    "to_unit",
]

ImagePolicy = Literal["none", "flip_crop", "randaugment", "trivialaugment"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ImageAugment(_Section):
    """Image augmentation (see the module docstring for order and maths)."""

    policy: ImagePolicy = Field("none", description="none|flip_crop|randaugment|trivialaugment")
    random_resized_crop: bool = Field(False, description="random crop of area crop_scale, resized")
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="crop area fraction range")
    hflip: bool = Field(False, description="horizontal flip with p = 1/2")
    num_ops: int = Field(2, ge=1, le=10, description="RandAugment: ops per image")
    magnitude: int = Field(9, ge=0, le=30, description="RandAugment: magnitude (of 31 bins)")
    mixup_alpha: float = Field(0.0, ge=0, description="MixUp Beta(alpha, alpha); 0 = off")
    cutmix_alpha: float = Field(0.0, ge=0, description="CutMix Beta(alpha, alpha); 0 = off")

    @model_validator(mode="after")
    def _scale(self) -> ImageAugment:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        return self


class TextAugment(_Section):
    """Text augmentation on token ids (special tokens and padding are never changed)."""

    token_dropout: float = Field(0.0, ge=0, lt=1, description="p of attention_mask -> 0")
    mask_prob: float = Field(0.0, ge=0, lt=1, description="p of id -> the mask token")
    span_delete: float = Field(0.0, ge=0, lt=1, description="span length / longest run")
    swap_prob: float = Field(0.0, ge=0, le=1, description="p of swapping a neighbour pair")


class VectorAugment(_Section):
    """Feature-vector augmentation."""

    noise: float = Field(0.0, ge=0, description="Gaussian sigma in per-feature std units")
    dropout: float = Field(0.0, ge=0, lt=1, description="inverted dropout of single entries")
    mixup_alpha: float = Field(0.0, ge=0, description="MixUp Beta(alpha, alpha); 0 = off")


class AugmentConfig(_Section):
    """One optional section per modality; the backbone's modality picks the one applied."""

    image: ImageAugment | None = None
    text: TextAugment | None = None
    vector: VectorAugment | None = None

    def section(self, modality: str) -> ImageAugment | TextAugment | VectorAugment | None:
        return {"image": self.image, "text": self.text, "vector": self.vector}.get(modality)


# ----------------------------------------------------------------------------- randomness
@contextlib.contextmanager
def forked_rng(generator: torch.Generator | None) -> Iterator[None]:
    """Run torchvision's global-RNG draws from a seed taken from ``generator`` (or from the
    global RNG when ``None``), restoring the global CPU RNG state afterwards."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_dev(generator)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _dev(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


# ----------------------------------------------------------------------------- images
def random_resized_crop(
    x: Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per image: a random crop of area fraction in ``scale`` and aspect ratio in
    ``[3/4, 4/3]``, resized (bilinear, antialiased) back to ``[H, W]``."""
    crop = v2.RandomResizedCrop(tuple(x.shape[-2:]), scale=scale, antialias=True)
    with forked_rng(generator):
        return torch.stack([crop(img) for img in x])


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image of ``[B, C, H, W]`` horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=_dev(generator)) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


def to_unit(
    x: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Pixels ``u = x * std + mean`` (float32, not clamped) of normalised images ``[B, C, H,
    W]`` and the map back ``u -> (u - mean) / std``; without statistics each image's own
    ``u = (x - min) / (max - min)`` and its inverse."""
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=torch.float32, device=x.device)[None, :, None, None]
        s = torch.tensor(std, dtype=torch.float32, device=x.device)[None, :, None, None]
        return x.float() * s + m, lambda u: (u - m) / s
    flat = x.detach().float().flatten(1)
    lo = flat.min(1).values[:, None, None, None]
    span = (flat.max(1).values[:, None, None, None] - lo).clamp_min(1e-6)
    return (x.float() - lo) / span, lambda u: u * span + lo


def auto_augment(
    x: Tensor,
    policy: Literal["randaugment", "trivialaugment"],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    *,
    num_ops: int = 2,
    magnitude: int = 9,
    generator: torch.Generator | None = None,
) -> Tensor:
    """torchvision RandAugment / TrivialAugmentWide on normalised images ``[B, C, H, W]``,
    per image, in pixel space (:func:`to_unit`, clamped to ``[0, 1]``, then mapped back).
    Uncovered areas are filled with ``mean`` (grey 0.5 without statistics)."""
    u, back = to_unit(x, mean, std)
    fill = [float(v) for v in mean] if mean is not None and std is not None else [0.5]
    fill = fill * x.shape[1] if len(fill) == 1 else fill
    op = (
        v2.RandAugment(num_ops=num_ops, magnitude=magnitude, fill=fill)
        if policy == "randaugment"
        else v2.TrivialAugmentWide(fill=fill)
    )
    with forked_rng(generator):
        u = torch.stack([op(img) for img in u.clamp(0, 1)])
    return back(u).to(x.dtype)


def mix_batch(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """MixUp and/or CutMix (torchvision; one of them, chosen uniformly, when both alphas are
    positive) of images ``[B, C, H, W]`` or vectors ``[B, F]`` (MixUp only) with hard labels
    ``y`` ``[B]`` -> ``(x', soft targets [B, num_classes])``."""
    if y.ndim != 1 or y.is_floating_point() or len(y) != len(x):
        raise DataError(
            f"mixup/cutmix need integer class ids [B], got a {y.dtype} tensor {tuple(y.shape)}",
            where="augment.mixup_alpha / cutmix_alpha",
            fix="use them for classification with integer labels only",
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"labels span {int(y.min())}..{int(y.max())}, outside 0..{num_classes - 1}",
            where="augment (mixup/cutmix targets)",
            fix="the head's output size must cover every class id",
        )
    ops = [v2.MixUp(alpha=a, num_classes=num_classes) for a in (mixup_alpha,) if a > 0]
    ops += [v2.CutMix(alpha=a, num_classes=num_classes) for a in (cutmix_alpha,) if a > 0]
    if not ops:
        return x, y
    op = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
    flat = x.ndim == 2
    with forked_rng(generator):
        xm, ym = op(x[:, None, None, :] if flat else x, y)
    return (xm[:, 0, 0, :] if flat else xm), ym


# ----------------------------------------------------------------------------- the policy
class BatchAugmenter:
    """Applies an :class:`AugmentConfig` to prepared training batches.

    Args:
        config: the policy.
        preprocess: the backbone's preprocess (modality, image statistics, tokenizer).
        task: ``"classification"`` or ``"regression"`` (mixing needs classification).
        num_classes: size of the soft targets (needed when mixing).
        where: config path named in errors.
    """

    def __init__(
        self,
        config: AugmentConfig,
        preprocess: Preprocess,
        *,
        task: str = "classification",
        num_classes: int | None = None,
        where: str = "augment",
    ) -> None:
        self.config = config
        self.preprocess = preprocess
        self.modality = preprocess.modality
        self.section = config.section(self.modality)
        self.num_classes = num_classes
        self.where = where
        self._check_sections()
        self._check_mixing(task)
        self.tokens = _token_ids(preprocess.tokenizer) if self.modality == "text" else {}
        self._check_text()
        self._check_image()

    @property
    def mixes(self) -> bool:
        """True when batches get soft targets (MixUp / CutMix)."""
        s = self.section
        return bool(getattr(s, "mixup_alpha", 0) or getattr(s, "cutmix_alpha", 0))

    def __call__(
        self, x: Any, y: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[Any, Tensor | None]:
        """``(x', y')``: ``x'`` keeps ``x``'s shape, dtype and device; ``y'`` is ``y``
        unless mixing made it soft targets ``[B, num_classes]``. ``x`` is never modified."""
        s = self.section
        if isinstance(s, ImageAugment):
            return self._image(x, y, s, generator)
        if isinstance(s, TextAugment):
            return self._text(x, s, generator), y
        if isinstance(s, VectorAugment):
            return self._vector(x, y, s, generator)
        return x, y

    def _image(
        self, x: Any, y: Tensor | None, s: ImageAugment, g: torch.Generator | None
    ) -> tuple[Tensor, Tensor | None]:
        _expect(isinstance(x, Tensor) and x.ndim == 4 and x.is_floating_point(), x, "[B, C, H, W]")
        if s.random_resized_crop:
            x = random_resized_crop(x, s.crop_scale, g)
        if s.hflip:
            x = random_hflip(x, g)
        if s.policy == "flip_crop":
            x = flip_translate(x, generator=g)
        elif s.policy in ("randaugment", "trivialaugment"):
            pre = self.preprocess
            x = auto_augment(
                x, s.policy, pre.mean, pre.std, num_ops=s.num_ops, magnitude=s.magnitude,
                generator=g,
            )  # fmt: skip
        if self.mixes and y is not None:
            x, y = mix_batch(x, y, int(self.num_classes or 0), s.mixup_alpha, s.cutmix_alpha, g)
        return x, y

    def _text(self, x: Any, s: TextAugment, g: torch.Generator | None) -> dict[str, Tensor]:
        ok = isinstance(x, Mapping) and isinstance(x.get("input_ids"), Tensor)
        _expect(ok and x["input_ids"].ndim == 2, x, "a tokenizer dict with input_ids [B, L]")
        out = dict(x)
        special = self.tokens.get("special")

        def eligible() -> Tensor:
            return eligible_tokens(out["input_ids"], out.get("attention_mask"), special)

        if s.span_delete > 0:
            out = delete_span(out, s.span_delete, eligible(), self.tokens.get("pad", 0), g)
        if s.swap_prob > 0:
            out = swap_adjacent(out, s.swap_prob, eligible(), g)
        if s.mask_prob > 0:
            out = replace_tokens(out, s.mask_prob, self.tokens["mask"], eligible(), g)
        if s.token_dropout > 0:
            out = token_dropout(out, s.token_dropout, generator=g, eligible=eligible())
        return out

    def _vector(
        self, x: Any, y: Tensor | None, s: VectorAugment, g: torch.Generator | None
    ) -> tuple[Tensor, Tensor | None]:
        _expect(isinstance(x, Tensor) and x.ndim == 2 and x.is_floating_point(), x, "[B, F]")
        if s.noise > 0:
            x = gaussian_noise(x, s.noise, g)
        if s.dropout > 0:
            x = feature_dropout(x, s.dropout, g)
        if self.mixes and y is not None:
            x, y = mix_batch(x, y, int(self.num_classes or 0), s.mixup_alpha, 0.0, g)
        return x, y

    # ------------------------------------------------------------------------- validation
    def _check_sections(self) -> None:
        given = [m for m in ("image", "text", "vector") if self.config.section(m) is not None]
        if given and self.section is None:
            raise ConfigError(
                f"augmentation is configured for {', '.join(given)} but the backbone reads "
                f"{self.modality} inputs, so nothing would be augmented",
                where=f"{self.where}.{given[0]}",
                fix=f"configure {self.where}.{self.modality} instead",
            )

    def _check_mixing(self, task: str) -> None:
        if not self.mixes:
            return
        if task != "classification":
            raise ConfigError(
                "mixup/cutmix mix class labels into soft targets; this is a regression task",
                where=f"{self.where}.{self.modality}.mixup_alpha",
                fix="set mixup_alpha and cutmix_alpha to 0 for regression",
            )
        if self.num_classes is None or self.num_classes < 2:
            raise ConfigError(
                f"mixup/cutmix need the number of classes (>= 2), got {self.num_classes}",
                where=f"{self.where}.{self.modality}",
                fix="pass num_classes= to BatchAugmenter",
            )

    def _check_text(self) -> None:
        s = self.section
        if isinstance(s, TextAugment) and s.mask_prob > 0 and "mask" not in self.tokens:
            raise ConfigError(
                "mask_prob needs a mask token, and this tokenizer has none (decoders such as "
                "GPT-2 have no [MASK])",
                where=f"{self.where}.text.mask_prob",
                fix="set mask_prob: 0 and use token_dropout or span_delete instead",
            )

    def _check_image(self) -> None:
        s = self.section
        chans = (self.preprocess.input_size or (3,))[0]
        if isinstance(s, ImageAugment) and s.policy.endswith("augment") and chans not in (1, 3):
            raise ConfigError(
                f"{s.policy} works on 1- or 3-channel images, the backbone reads {chans}",
                where=f"{self.where}.image.policy",
                fix="use policy: flip_crop or none",
            )


def _token_ids(tokenizer: Any) -> dict[str, Any]:
    """``{"special": ids, "pad": id, "mask": id}`` from a Hugging Face tokenizer (what it has)."""
    if tokenizer is None:
        return {}
    out: dict[str, Any] = {"special": list(getattr(tokenizer, "all_special_ids", []) or [])}
    for key, attr in (("pad", "pad_token_id"), ("mask", "mask_token_id")):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            out[key] = int(value)
    return out


def _expect(ok: bool, x: Any, what: str) -> None:
    if not ok:
        got = f"a {x.dtype} tensor {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise DataError(
            f"this augmentation policy needs {what}, got {got}",
            where="augment (training batch x)",
            fix="augment the backbone's prepare() output",
        )
