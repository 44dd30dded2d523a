"""Augmentation policies inside self-training (fixmatch, pseudo_label) and the module splits.

Hand-checked: FixMatch's strong view is the policy's output; MixUp/CutMix reach the labelled
source loss only, never a pseudo-label; the teacher labels the un-augmented target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import TinyVectorBackbone
from transferkit import augment as augment_mod
from transferkit import augment_text
from transferkit.augment import augment
from transferkit.backbones import create_backbone
from transferkit.backbones.base import Backbone, LayerGroup, Preprocess
from transferkit.errors import ConfigError
from transferkit.methods import METHODS, feature_heads, feature_heads_nonlinear
from transferkit.methods.da_selftrain import FixMatch, PseudoLabel
from transferkit.methods.heads import make_head
from transferkit.methods.supervised import task_loss

RANDAUG = {"image": {"policy": "randaugment", "num_ops": 2, "magnitude": 9}}
MIX_ONLY = {"vector": {"mixup_alpha": 1.0}}


class _Identity(Backbone):
    """``f = x`` on ``[B, 2]`` vectors (no parameters): logits are ``head(x)`` exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.spec, self.modality, self.num_features = "test:identity", "vector", 2
        self.preprocess, self.init_kwargs = Preprocess(modality="vector"), {}

    def forward(self, x: Any) -> torch.Tensor:
        return x

    def layer_groups(self) -> list[LayerGroup]:
        return []

    def forward_intermediates(self, x: Any, indices: Sequence[int]) -> list[torch.Tensor]:
        return [x for _ in indices]

    def prepare(self, raw: Any) -> torch.Tensor:
        return torch.as_tensor(raw, dtype=torch.float32)


def _identity_method(name: str, **kw: Any) -> Any:
    """``logits = x`` (head = identity Linear): hand-computable losses."""
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
        head.bias.zero_()
    cls = METHODS.get(name)
    return cls(_Identity(), head, "classification", cls.Params(threshold=0.0, **kw)).train()


def _image_fixmatch(augment_cfg: dict | None) -> FixMatch:
    torch.manual_seed(0)
    bb = create_backbone("tk:smallcnn", in_chans=3, width=4, depth=1)
    p = FixMatch.Params(threshold=0.0, augment=augment_cfg)
    return FixMatch(bb, make_head(bb.num_features, 3), "classification", p).train()


def _image_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "x": torch.randn(4, 3, 12, 12, generator=g),
        "y": torch.tensor([0, 1, 2, 0]),
        "x_t": torch.randn(3, 3, 12, 12, generator=g),
    }


# ----------------------------------------------------------------------------- fixmatch
def test_fixmatch_strong_view_is_the_policy_output_under_a_fixed_generator() -> None:
    m, b = _image_fixmatch(RANDAUG), _image_batch()
    views = m.views(b, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # same draws, same order: weak x, weak x_t, strong
    weak_s = augment(b["x"], "weak", generator=g)
    weak_t = augment(b["x_t"], "weak", generator=g)
    assert m.augmenter is not None
    strong, _ = m.augmenter(b["x_t"], None, generator=g)
    assert torch.equal(views["x"], weak_s) and torch.equal(views["y"], b["y"])
    assert torch.equal(views["x_t"][:3], weak_t) and torch.equal(views["x_t"][3:], strong)
    builtin = augment(b["x_t"], "strong", generator=torch.Generator().manual_seed(5))
    assert not torch.equal(strong, b["x_t"]) and not torch.equal(strong, builtin)
    out = m.training_step(b)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and float(out["mask_rate"]) == 1.0


def test_fixmatch_without_policy_keeps_the_builtin_strong_view() -> None:
    m, b = _image_fixmatch(None), _image_batch()
    assert m.augmenter is None
    views = m.views(b, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    augment(b["x"], "weak", generator=g)
    augment(b["x_t"], "weak", generator=g)
    assert torch.equal(views["x_t"][3:], augment(b["x_t"], "strong", generator=g))


def test_fixmatch_mixes_the_source_only_and_a_mixing_only_policy_keeps_builtin_strong() -> None:
    """Vector policy with MixUp alone: the weak source view and its labels are mixed (soft
    targets, rows summing to 1), the target views are exactly the built-in weak/strong ones."""
    torch.manual_seed(0)
    m = FixMatch(
        TinyVectorBackbone(6, 8),
        make_head(8, 2),
        "classification",
        FixMatch.Params(threshold=0.0, augment=MIX_ONLY),
    )
    g0 = torch.Generator().manual_seed(0)
    b = {"x": torch.randn(6, 6, generator=g0), "y": torch.tensor([0, 1] * 3)}
    b["x_t"] = torch.randn(5, 6, generator=g0)
    views = m.views(b, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    weak_s = augment(b["x"], "weak", generator=g)
    weak_t = augment(b["x_t"], "weak", generator=g)
    strong_t = augment(b["x_t"], "strong", generator=g)
    assert torch.equal(views["x_t"], torch.cat([weak_t, strong_t]))
    y = views["y"]
    assert y.shape == (6, 2) and torch.allclose(y.sum(1), torch.ones(6))
    lam = float(y[0, 0])  # row 0 (class 0) mixed with row 5 (class 1): y_0 = (lam, 1 - lam)
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(views["x"][0], lam * weak_s[0] + (1 - lam) * weak_s[5])


# ----------------------------------------------------------------------------- pseudo_label
def test_pseudo_label_mixes_source_never_the_pseudo_label_loss_by_hand() -> None:
    """logits = x. Target rows (2, 0) and (0, 1): pseudo-labels 0 and 1, transfer loss
    ``(log(1 + e^-2) + log(1 + e^-1)) / 2`` whatever the source mixing; the source loss is
    the soft-target cross-entropy of the mixed source batch."""
    m = _identity_method("pseudo_label", augment=MIX_ONLY, augment_target=True)
    x_s = torch.tensor([[3.0, 0.0], [0.0, 3.0], [1.0, 0.0], [0.0, 2.0]])
    y_s = torch.tensor([0, 1, 0, 1])
    x_t = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    batch = {"x": x_s, "y": y_s, "x_t": x_t, "y_t": torch.tensor([0, 1])}
    torch.manual_seed(4)
    out = m.training_step(batch)
    want = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    assert float(out["transfer_loss"]) == pytest.approx(want, rel=1e-6)
    assert float(out["pseudo_label_acc"]) == 1.0 and float(out["mask_rate"]) == 1.0
    torch.manual_seed(4)
    assert m.augmenter is not None
    xm, ym = m.augmenter(x_s, y_s)
    assert ym is not None and ym.shape == (4, 2) and not torch.equal(xm, x_s)
    soft = -(ym * F.log_softmax(xm, -1)).sum(1).mean()
    assert float(out["cls_loss"]) == pytest.approx(float(soft), rel=1e-6)
    assert float(out["cls_loss"]) != pytest.approx(float(F.cross_entropy(x_s, y_s)), rel=1e-3)


def test_pseudo_label_teacher_labels_the_unaugmented_target() -> None:
    """With target noise the student's target inputs change, the teacher's do not: the
    pseudo-labels are those of the clean rows (here exactly the rows' arg-max)."""
    m = _identity_method("pseudo_label", augment={"vector": {"noise": 3.0}}, augment_target=True)
    x_t = torch.tensor([[0.2, 0.0], [0.0, 0.2], [0.3, 0.0], [0.0, 0.1]])
    batch = {"x": x_t.clone(), "y": torch.tensor([0, 1, 0, 1]), "x_t": x_t}
    batch["y_t"] = torch.tensor([0, 1, 0, 1])
    torch.manual_seed(0)
    out = m.training_step(batch)
    assert float(out["labeller_acc"]) == 1.0  # the teacher saw the clean target
    torch.manual_seed(0)
    seen = m.student_batch(batch)
    assert not torch.equal(seen["x_t"], x_t) and torch.equal(seen["y"], batch["y"])
    labels = x_t.argmax(1)
    assert not torch.equal(seen["x_t"].argmax(1), labels)  # the noise flips a row here
    want = F.cross_entropy(seen["x_t"], labels)
    assert float(out["transfer_loss"]) == pytest.approx(float(want), rel=1e-6)
    m.eval()  # evaluation / eval-mode steps never augment
    assert torch.equal(m.student_batch(batch)["x_t"], x_t)


def test_pseudo_label_augment_target_off_keeps_target_inputs() -> None:
    m = _identity_method("pseudo_label", augment={"vector": {"noise": 1.0}})
    batch = {"x": torch.randn(4, 2), "y": torch.tensor([0, 1, 0, 1]), "x_t": torch.randn(3, 2)}
    seen = m.student_batch(batch)
    assert seen["x_t"] is batch["x_t"] and not torch.equal(seen["x"], batch["x"])


@pytest.mark.parametrize("name", ["pseudo_label", "fixmatch"])
def test_augmented_self_training_is_deterministic_under_the_seed(name: str) -> None:
    def loss(seed: int) -> float:
        torch.manual_seed(0)
        cls = METHODS.get(name)
        params = cls.Params(
            threshold=0.0, augment={"vector": {"noise": 0.5, "dropout": 0.1, "mixup_alpha": 0.4}}
        )
        m = cls(TinyVectorBackbone(6, 8), make_head(8, 2), "classification", params).train()
        g = torch.Generator().manual_seed(1)
        b = {"x": torch.randn(8, 6, generator=g), "y": torch.tensor([0, 1] * 4)}
        b["x_t"] = torch.randn(8, 6, generator=g)
        torch.manual_seed(seed)
        return float(m.training_step(b)["loss"].detach())

    assert loss(7) == loss(7)
    assert loss(7) != loss(8)


def test_policy_for_another_modality_is_rejected_for_self_training() -> None:
    with pytest.raises(ConfigError, match="reads vector"):
        _identity_method("fixmatch", augment=RANDAUG)
    assert isinstance(_identity_method("fixmatch"), FixMatch)
    assert isinstance(_identity_method("pseudo_label"), PseudoLabel)


def test_soft_targets_reach_task_loss_unchanged() -> None:
    """The source loss with one-hot soft targets equals hard-label cross-entropy."""
    logits = torch.tensor([[1.0, -1.0], [0.5, 0.25]])
    y = torch.tensor([0, 1])
    one_hot = F.one_hot(y, 2).float()
    torch.testing.assert_close(
        task_loss(logits, one_hot, "classification"), F.cross_entropy(logits, y)
    )


# ----------------------------------------------------------------------------- module splits
def test_split_modules_are_re_exported() -> None:
    for name in ("KNNHead", "MLPHead"):
        assert getattr(feature_heads, name) is getattr(feature_heads_nonlinear, name)
    for name in (
        "delete_positions",
        "delete_span",
        "eligible_tokens",
        "replace_tokens",
        "swap_adjacent",
        "token_dropout",
    ):
        assert getattr(augment_mod, name) is getattr(augment_text, name)
        assert name in augment_mod.__all__
