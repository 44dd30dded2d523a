"""Augmentation policies: determinism, shapes/labels, pixel-space maths, soft targets, text
invariants (special tokens never touched), config errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torchvision.transforms import v2

from transferkit.augment import delete_positions, delete_span, eligible_tokens, swap_adjacent
from transferkit.augment_policy import (
    AugmentConfig,
    BatchAugmenter,
    auto_augment,
    forked_rng,
    mix_batch,
    random_hflip,
    to_unit,
)
from transferkit.backbones.base import Preprocess
from transferkit.errors import ConfigError, DataError
from transferkit.methods.supervised import task_loss

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMG = Preprocess("image", mean=MEAN, std=STD, input_size=(3, 12, 12))
CLS, SEP, PAD, MASK = 101, 102, 0, 103


class _Tok:
    """The attributes of a Hugging Face BERT tokenizer that the text policy reads."""

    all_special_ids = (PAD, 100, CLS, SEP, MASK)
    pad_token_id = PAD
    mask_token_id = MASK


TXT = Preprocess("text", tokenizer=_Tok())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pixels(b: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, 12, 12, generator=_gen(seed))


def _normalise(u: torch.Tensor) -> torch.Tensor:
    m, s = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (u - m) / s


def _text() -> dict[str, torch.Tensor]:
    """Right-padded rows; the second is a sentence pair with two segments."""
    ids = torch.tensor(
        [
            [CLS, *range(1000, 1012), SEP, PAD, PAD],
            [CLS, 2000, 2001, 2002, 2003, SEP, 3000, 3001, 3002, SEP, *[PAD] * 6],
            [CLS, 4000, SEP, *[PAD] * 13],
        ]
    )
    types = torch.zeros_like(ids)
    types[1, 6:10] = 1
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "token_type_ids": types}


FULL = {
    "image": {
        "policy": "randaugment",
        "random_resized_crop": True,
        "hflip": True,
        "mixup_alpha": 0.4,
        "cutmix_alpha": 1.0,
    },
    "text": {"token_dropout": 0.2, "mask_prob": 0.2, "span_delete": 0.3, "swap_prob": 0.5},
    "vector": {"noise": 0.1, "dropout": 0.2, "mixup_alpha": 0.4},
}
CASES = {
    "image": (IMG, lambda: _normalise(_pixels())),
    "text": (TXT, _text),
    "vector": (Preprocess("vector"), lambda: torch.randn(5, 7, generator=_gen(1))),
}


def _rows(x: object) -> int:
    return len(x["input_ids"]) if isinstance(x, dict) else len(x)  # type: ignore[arg-type]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # type: ignore[attr-defined]
    return torch.equal(a, b)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- contracts
@pytest.mark.parametrize("modality", ["image", "text", "vector"])
def test_deterministic_under_a_seed_and_global_rng_untouched(modality: str) -> None:
    pre, make = CASES[modality]
    aug = BatchAugmenter(AugmentConfig.model_validate(FULL), pre, num_classes=4)
    x = make()
    y = torch.arange(_rows(x)) % 4
    state = torch.get_rng_state()
    a, ya = aug(x, y, generator=_gen(7))
    b, yb = aug(x, y, generator=_gen(7))
    c, _ = aug(x, y, generator=_gen(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert _equal(a, b) and torch.equal(ya, yb)  # type: ignore[arg-type]
    assert not _equal(a, c)


@pytest.mark.parametrize("modality", ["image", "text", "vector"])
def test_shapes_dtypes_kept_input_untouched_and_labels_kept_without_mixing(modality: str) -> None:
    cfg = {k: {kk: vv for kk, vv in v.items() if "alpha" not in kk} for k, v in FULL.items()}
    pre, make = CASES[modality]
    aug = BatchAugmenter(AugmentConfig.model_validate(cfg), pre)
    x = make()
    before = {k: v.clone() for k, v in x.items()} if isinstance(x, dict) else x.clone()
    y = torch.arange(_rows(x))
    for seed in range(5):
        out, y_out = aug(x, y, generator=_gen(seed))
        assert y_out is y
        pairs = [(x[k], out[k]) for k in x] if isinstance(x, dict) else [(x, out)]
        for a, b in pairs:
            assert a.shape == b.shape and a.dtype == b.dtype
    assert _equal(x, before)


def test_global_rng_is_used_without_a_generator() -> None:
    aug = BatchAugmenter(AugmentConfig.model_validate({"image": FULL["image"]}), IMG, num_classes=4)
    x, y = _normalise(_pixels()), torch.tensor([0, 1, 2, 3, 0])
    torch.manual_seed(3)
    a = aug(x, y)
    torch.manual_seed(3)
    b = aug(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------- images
def test_to_unit_inverts_the_normalisation() -> None:
    u = _pixels()
    back_u, back = to_unit(_normalise(u), MEAN, STD)
    assert torch.allclose(back_u, u, atol=1e-6)
    assert torch.allclose(back(back_u), _normalise(u), atol=1e-6)


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_auto_augment_is_torchvisions_op_in_pixel_space(policy: str) -> None:
    """Normalise(op(pixels)) with the same seeded draws: de/re-normalisation is exact."""
    u = _pixels()
    out = auto_augment(_normalise(u), policy, MEAN, STD, generator=_gen(5))  # type: ignore[arg-type]
    fill = list(MEAN)
    op = (
        v2.RandAugment(num_ops=2, magnitude=9, fill=fill)
        if policy == "randaugment"
        else v2.TrivialAugmentWide(fill=fill)
    )
    with forked_rng(_gen(5)):
        ref = torch.stack([op(img) for img in u])
    assert torch.allclose(out, _normalise(ref), atol=1e-5)
    assert not torch.allclose(out, _normalise(u))
    pixels, _ = to_unit(out, MEAN, STD)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_flip_and_crop_keep_constant_images_and_flip_is_exact() -> None:
    x = _normalise(_pixels())
    flipped = random_hflip(x, _gen(0))
    for i in range(len(x)):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    assert any(not torch.equal(flipped[i], x[i]) for i in range(len(x)))
    const = torch.full((4, 3, 12, 12), 0.7)
    cfg = AugmentConfig.model_validate(
        {"image": {"random_resized_crop": True, "hflip": True, "crop_scale": (0.3, 0.6)}}
    )
    out, _ = BatchAugmenter(cfg, IMG)(const, None, generator=_gen(1))
    assert torch.allclose(out, const, atol=1e-5)


def test_policy_none_is_the_identity() -> None:
    x = _normalise(_pixels())
    out, _ = BatchAugmenter(AugmentConfig(image={}), IMG)(x, None, generator=_gen(0))  # type: ignore[arg-type]
    assert torch.equal(out, x)


def test_mixup_is_the_convex_combination_with_the_rolled_batch() -> None:
    x, y = _normalise(_pixels(6)), torch.tensor([0, 1, 2, 3, 1, 2])
    xm, soft = mix_batch(x, y, 4, mixup_alpha=0.5, generator=_gen(2))
    assert soft.shape == (6, 4) and torch.allclose(soft.sum(1), torch.ones(6))
    lam = float(soft[0, y[0]])
    assert 0 < lam < 1
    prev = y.roll(1)
    want = lam * F.one_hot(y, 4) + (1 - lam) * F.one_hot(prev, 4)
    assert torch.allclose(soft, want.float(), atol=1e-6)
    assert torch.allclose(xm, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6)


def test_cutmix_targets_are_the_pasted_area_fractions() -> None:
    x, y = _normalise(_pixels(6)), torch.tensor([0, 1, 2, 3, 1, 2])
    xm, soft = mix_batch(x, y, 4, cutmix_alpha=1.0, generator=_gen(4))
    from_self = (xm == x).all(1).float().mean((1, 2))  # pixel kept from its own image
    from_prev = (xm == x.roll(1, 0)).all(1)
    assert ((xm == x).all(1) | from_prev).all()
    assert torch.allclose(soft[torch.arange(6), y], from_self, atol=1e-6)


def test_soft_target_cross_entropy_matches_the_hand_computed_value() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    q = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.25, 0.75]])
    want = -(q * z.log_softmax(1)).sum(1).mean()
    assert float(task_loss(z, q, "classification")) == pytest.approx(float(want))
    hard = torch.tensor([0, 2])
    onehot = F.one_hot(hard, 3).float()
    assert float(task_loss(z, onehot, "classification")) == pytest.approx(
        float(task_loss(z, hard, "classification"))
    )
    with pytest.raises(DataError, match="soft targets"):
        task_loss(z, torch.ones(2, 4) / 4, "classification")


# ----------------------------------------------------------------------------- text
def test_delete_positions_shifts_left_and_pads_by_hand() -> None:
    x = _text()
    delete = torch.zeros_like(x["input_ids"], dtype=torch.bool)
    delete[0, 2:5] = True
    delete[1, 7] = True
    out = delete_positions(x, delete, PAD)
    assert out["input_ids"][0].tolist() == [CLS, 1000, *range(1004, 1012), SEP, *[PAD] * 5]
    assert out["attention_mask"][0].tolist() == [1] * 11 + [0] * 5
    row1 = [CLS, 2000, 2001, 2002, 2003, SEP, 3000, 3002, SEP, *[PAD] * 7]
    assert out["input_ids"][1].tolist() == row1
    assert out["token_type_ids"][1].tolist() == [0] * 6 + [1] * 3 + [0] * 7
    assert torch.equal(out["input_ids"][2], x["input_ids"][2])


def test_swap_adjacent_swaps_disjoint_eligible_pairs() -> None:
    x = _text()
    el = eligible_tokens(x["input_ids"], x["attention_mask"], _Tok.all_special_ids)
    out = swap_adjacent(x, 1.0, el, _gen(0))
    row = x["input_ids"][0].tolist()
    body = row[1:13]
    even = [v for i in range(0, 12, 2) for v in (body[i + 1], body[i])]
    odd = [body[0], *[v for i in range(1, 11, 2) for v in (body[i + 1], body[i])], body[11]]
    assert out["input_ids"][0, 1:13].tolist() in (even, odd)
    assert out["input_ids"][0, [0, 13]].tolist() == [CLS, SEP]
    assert torch.equal(out["input_ids"][2], x["input_ids"][2])  # one eligible token: no pair


def _specials(row: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return [int(t) for t, m in zip(row, mask, strict=True) if m and int(t) in (CLS, SEP)]


def test_text_policy_never_touches_special_tokens_or_padding() -> None:
    cfg = AugmentConfig.model_validate({"text": FULL["text"] | {"token_dropout": 0.0}})
    aug = BatchAugmenter(cfg, TXT)
    x = _text()
    for seed in range(40):
        out, _ = aug(x, None, generator=_gen(seed))
        for b in range(3):
            ids, mask = out["input_ids"][b], out["attention_mask"][b]
            assert _specials(ids, mask) == _specials(x["input_ids"][b], x["attention_mask"][b])
            assert ids[0] == CLS and (ids[mask == 0] == PAD).all()
            n = int(mask.sum())
            assert ids[n - 1] == SEP and (mask[:n] == 1).all()  # still right-padded
            kept = [int(t) for t in ids[:n] if int(t) != MASK]
            assert set(kept) <= set(x["input_ids"][b].tolist())
        assert int(out["attention_mask"][0].sum()) == 14 - 3  # floor(0.3 * 12) deleted


def test_token_dropout_only_masks_eligible_tokens() -> None:
    cfg = AugmentConfig.model_validate({"text": {"token_dropout": 0.5}})
    x = _text()
    out, _ = BatchAugmenter(cfg, TXT)(x, None, generator=_gen(0))
    assert torch.equal(out["input_ids"], x["input_ids"])
    dropped = (x["attention_mask"] == 1) & (out["attention_mask"] == 0)
    assert dropped.any() and not torch.isin(x["input_ids"][dropped], torch.tensor([CLS, SEP])).any()


def test_delete_span_length_follows_the_longest_eligible_run() -> None:
    x = _text()
    el = eligible_tokens(x["input_ids"], x["attention_mask"], _Tok.all_special_ids)
    out = delete_span(x, 0.5, el, PAD, _gen(3))
    lost = x["attention_mask"].sum(1) - out["attention_mask"].sum(1)
    assert lost.tolist() == [6, 2, 0]  # runs 12, 4 (first segment), 1


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "doc",
    [
        {"image": {"policy": "autoaugment"}},
        {"image": {"crop_scale": (0.5, 0.2)}},
        {"text": {"mask_prob": 1.0}},
        {"text": {"swap": 0.1}},
        {"audio": {}},
    ],
)
def test_invalid_configs_are_rejected(doc: dict) -> None:
    with pytest.raises(ValidationError):
        AugmentConfig.model_validate(doc)


def test_user_errors_name_what_where_and_fix() -> None:
    text_only = AugmentConfig.model_validate({"text": {"token_dropout": 0.1}})
    with pytest.raises(ConfigError, match="reads image") as err:
        BatchAugmenter(text_only, IMG)
    assert err.value.where == "augment.text" and err.value.fix
    mix = AugmentConfig.model_validate({"image": {"mixup_alpha": 0.2}})
    with pytest.raises(ConfigError, match="regression"):
        BatchAugmenter(mix, IMG, task="regression", num_classes=1)
    with pytest.raises(ConfigError, match="number of classes"):
        BatchAugmenter(mix, IMG)
    no_mask = Preprocess("text", tokenizer=type("T", (), {"all_special_ids": [0]})())
    with pytest.raises(ConfigError, match="mask token"):
        BatchAugmenter(AugmentConfig.model_validate({"text": {"mask_prob": 0.1}}), no_mask)
    four = Preprocess("image", mean=(0.5,) * 4, std=(0.5,) * 4, input_size=(4, 8, 8))
    with pytest.raises(ConfigError, match="1- or 3-channel"):
        BatchAugmenter(AugmentConfig.model_validate({"image": {"policy": "randaugment"}}), four)
    with pytest.raises(DataError, match=r"\[B, C, H, W\]"):
        BatchAugmenter(AugmentConfig(image={}), IMG)(torch.zeros(2, 5), None)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="outside"):
        mix_batch(torch.zeros(2, 3, 4, 4), torch.tensor([0, 5]), 3, mixup_alpha=1.0)
