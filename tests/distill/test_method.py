"""The registered ``distill`` method: frozen teacher, terms, parameter groups, a real run."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from tests.distill.conftest import cnn, toy_images
from transferkit.backbones import create_backbone
from transferkit.backbones.base import Backbone, Preprocess
from transferkit.data.loaders import collate_with
from transferkit.data.types import Dataset
from transferkit.distill import TeacherCachedDataset, teacher_outputs
from transferkit.engine import TrainConfig, Trainer
from transferkit.errors import ConfigError, DataError
from transferkit.methods import distill
from transferkit.methods.base import METHODS
from transferkit.methods.distill import Distill, DistillParams, input_mismatch

ALL = {"kd": 1.0, "dkd": 0.5, "fitnets": 1.0, "at": 500.0, "rkd": 1.0}


def make(losses: dict[str, float] | None = None, seed: int = 1, **kw: object) -> Distill:
    teacher, student = cnn(8, 3, seed=0), cnn(4, 2, seed=seed)
    torch.manual_seed(seed)
    params = DistillParams(losses=losses or dict(ALL), **kw)  # type: ignore[arg-type]
    return Distill(
        student,
        nn.Linear(student.num_features, 3),
        "classification",
        params,
        teacher_backbone=teacher,
        teacher_head=nn.Linear(teacher.num_features, 3),
    )


def batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 1, 8, 8, generator=g), "y": torch.arange(n) % 3}


def test_registered_with_family() -> None:
    assert METHODS.get("distill") is Distill and Distill.family == "distillation"
    assert "hint_layers" in Distill.describe_params()


def test_teacher_frozen_excluded_and_bit_equal_after_steps() -> None:
    m = make(hint_layers=[(0, 1), (-1, -1)])
    teacher = m.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    groups = m.param_groups(0.1)
    in_groups = {id(q) for g in groups for q in g["params"]}
    assert not in_groups & {id(q) for q in teacher.parameters()}
    assert in_groups == {id(q) for q in m.parameters()}  # every trainable student param
    assert {g["name"] for g in groups} == {"head", "backbone", "regressors"}
    assert not any(q.requires_grad for q in teacher.parameters())
    assert not any(k.startswith(("teacher", "_teacher")) for k in m.state_dict())
    opt = torch.optim.SGD(groups, lr=0.1)
    m.train()
    for s in range(3):
        opt.zero_grad()
        out = m.training_step(batch(seed=s))
        out["loss"].backward()
        opt.step()
    assert not teacher.training  # method.train() never reaches it
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running stats too


def test_every_term_finite_and_gradients_reach_every_student_param() -> None:
    m = make(hint_layers=[(0, 1), (-1, -1)])
    out = m.training_step(batch())
    assert set(out) == {"loss", "ce", *ALL, "agreement"}
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    missing = [n for n, q in m.named_parameters() if q.grad is None or not q.grad.abs().sum()]
    assert not missing
    manual = out["ce"] + sum(w * out[k] for k, w in ALL.items())
    assert out["loss"].item() == pytest.approx(manual.item(), rel=1e-6)


def test_distill_terms_vanish_when_student_is_the_teacher() -> None:
    params = DistillParams(
        losses={"kd": 1.0, "dkd": 1.0, "at": 1.0, "rkd": 1.0}, hint_layers=[(1, 1)]
    )
    head = nn.Linear(32, 3)
    same = Distill(
        cnn(8, 3, seed=0),
        copy.deepcopy(head),
        "classification",
        params,
        teacher_backbone=cnn(8, 3, seed=0),
        teacher_head=head,
    ).eval()
    out = same.training_step(batch())
    for k in ("kd", "dkd", "at", "rkd"):
        assert out[k].item() == pytest.approx(0.0, abs=1e-6), k
    assert out["agreement"].item() == 1.0


def test_unlabelled_distillation_and_label_errors() -> None:
    m = make({"kd": 1.0, "dkd": 1.0}, ce_weight=0.0)
    out = m.training_step({"x": batch()["x"]})
    assert "ce" not in out and out["loss"].requires_grad
    with pytest.raises(DataError, match="labels"):
        make({"kd": 1.0}).training_step({"x": batch()["x"]})
    with pytest.raises(ValueError, match="every loss weight is 0"):
        DistillParams(losses={"kd": 0.0}, ce_weight=0.0)
    with pytest.raises(ValueError, match="hint_pool: false"):
        DistillParams(losses={"at": 1.0}, hint_pool=True)
    with pytest.raises(ConfigError, match="classification"):
        Distill(
            cnn(4, 2),
            nn.Linear(8, 3),
            "regression",
            DistillParams(),
            teacher_backbone=cnn(4, 2),
            teacher_head=nn.Linear(8, 3),
        )
    with pytest.raises(ConfigError, match="out of range"):
        make({"fitnets": 1.0}, hint_layers=[(5, 0)])


def test_cached_batch_gives_the_same_loss_as_the_live_teacher() -> None:
    m = make(hint_layers=[(0, 1), (-1, -1)]).eval()
    b = batch()
    live = m.training_step(b)
    cached = {**b, **m.teacher.outputs(b["x"], m.teacher_layers_)}
    again = m.training_step(cached)
    for k in live:
        assert again[k].item() == pytest.approx(live[k].item(), rel=1e-6, abs=1e-7), k
    broken = {k: v for k, v in cached.items() if not k.startswith("t_feats")}
    with pytest.raises(DataError, match="t_feats"):
        m.training_step(broken)


def test_teacher_follows_dtype_and_device_casts() -> None:
    m = make({"kd": 1.0}).double()
    assert next(m.teacher.parameters()).dtype == torch.float64
    out = m.training_step(
        {k: v.double() if v.is_floating_point() else v for k, v in batch().items()}
    )
    assert out["loss"].dtype == torch.float64


def _agreement(method: Distill, teacher: tuple[Backbone, nn.Module], data: Dataset) -> float:
    method.eval()
    with torch.no_grad():
        x = method.backbone.prepare(data.x)
        t = teacher[1](teacher[0](teacher[0].prepare(data.x))).argmax(1)
        return (method.predict(x).argmax(1) == t).float().mean().item()


def test_tiny_run_through_trainer_and_cache_improves_agreement(
    toy_teacher: tuple[Dataset, Backbone, nn.Module], tmp_path: Path
) -> None:
    data, t_backbone, t_head = toy_teacher
    test = toy_images(60, seed=1)
    student = cnn(2, 2, seed=3)
    torch.manual_seed(3)
    params = DistillParams(
        losses={"kd": 1.0, "at": 50.0}, hint_layers=[(-1, -1)], ce_weight=0.0, temperature=2.0
    )
    m = Distill(
        student,
        nn.Linear(student.num_features, 3),
        "classification",
        params,
        teacher_backbone=t_backbone,
        teacher_head=t_head,
    )
    before = _agreement(m, (t_backbone, t_head), test)
    outs = teacher_outputs(m.teacher, data.x, layers=m.teacher_layers_, cache_dir=tmp_path)
    ds = TeacherCachedDataset(data, outs, with_labels=False)
    cfg = TrainConfig(
        mixed_precision="no",
        save_checkpoints=False,
        lr=0.05,
        batch_size=12,
        epochs=12,
        schedule="constant",
    )
    res = Trainer(m, ds, collate_with(student.prepare), cfg, tmp_path / "run", quiet=True).fit()
    after = _agreement(m, (t_backbone, t_head), test)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert after > max(before + 0.2, 0.8), (before, after)


# ----------------------------------------------------------------------------- augmentation
FLIP_CROP = {"image": {"policy": "flip_crop"}}


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the student's input and the teacher logits / DKD target the terms receive."""
    seen: dict[str, Any] = {}
    real_hints, real_kd, real_dkd = distill.forward_with_hints, distill.kd_loss, distill.dkd_loss

    def hints(backbone: Any, x: Any, *a: Any) -> Any:
        seen["x"] = x
        return real_hints(backbone, x, *a)

    def kd(s: torch.Tensor, t: torch.Tensor, *a: Any) -> torch.Tensor:
        seen["t_logits"] = t
        return real_kd(s, t, *a)

    def dkd(s: torch.Tensor, t: torch.Tensor, target: Any, *a: Any) -> torch.Tensor:
        seen["target"] = target
        return real_dkd(s, t, target, *a)

    monkeypatch.setattr(distill, "forward_with_hints", hints)
    monkeypatch.setattr(distill, "kd_loss", kd)
    monkeypatch.setattr(distill, "dkd_loss", dkd)
    return seen


def test_augment_runs_the_live_teacher_on_the_augmented_x_not_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cached outputs describe un-augmented inputs: an augmented training batch ignores them
    and the teacher (no gradients) reads the very x the student reads; in eval mode, or
    without augment, the cache is used as before."""
    seen = _spy(monkeypatch)
    m = make({"kd": 1.0}, augment=FLIP_CROP).train()
    b = batch()
    cached = {**b, "t_logits": torch.full((6, 3), 7.0)}  # recognisably not the teacher's
    torch.manual_seed(3)
    m.training_step(cached)
    torch.manual_seed(3)
    assert m.augmenter is not None
    x_aug, _ = m.augmenter(b["x"], b["y"])
    assert not torch.equal(x_aug, b["x"]) and torch.equal(seen["x"], x_aug)
    torch.testing.assert_close(seen["t_logits"], m.teacher(x_aug))
    assert not seen["t_logits"].requires_grad
    assert not torch.allclose(seen["t_logits"], m.teacher(b["x"]))
    m.eval()
    m.training_step(cached)
    assert seen["x"] is b["x"] and torch.equal(seen["t_logits"], cached["t_logits"])
    make({"kd": 1.0}).train().training_step(cached)
    assert seen["x"] is b["x"] and torch.equal(seen["t_logits"], cached["t_logits"])


def test_mixup_soft_targets_in_ce_and_dkd_target_is_their_argmax(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _spy(monkeypatch)
    m = make({"kd": 1.0, "dkd": 1.0}, augment={"image": {"mixup_alpha": 1.0}}).train()
    b = batch()
    torch.manual_seed(5)
    out = m.training_step(b)
    torch.manual_seed(5)
    assert m.augmenter is not None
    x_mix, y_soft = m.augmenter(b["x"], b["y"])
    assert y_soft is not None and y_soft.shape == (6, 3)
    lam = float(y_soft[0, 0])  # row 0 (class 0) mixed with row 5 (class 2)
    assert 0 < lam < 1 and torch.allclose(x_mix[0], lam * b["x"][0] + (1 - lam) * b["x"][5])
    want = -(y_soft * torch.log_softmax(m.predict(x_mix), -1)).sum(1).mean()
    assert out["ce"].item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.equal(seen["target"], y_soft.argmax(1))


def test_mixing_keeps_only_rows_whose_partner_is_labelled_and_unlabelled_rows_mix_too() -> None:
    """``y_mask`` (1, 1, 0, 1, 1, 0): row i is mixed with row i - 1, so rows 0 (partner 5)
    and 3 (partner 2) lose their label; without labels the inputs are mixed alone."""
    m = make({"kd": 1.0}, augment={"image": {"mixup_alpha": 1.0}}).train()
    b = {**batch(), "y_mask": torch.tensor([1, 1, 0, 1, 1, 0])}
    torch.manual_seed(0)
    aug = m.augmented_batch(b)
    assert aug["y_mask"].tolist() == [False, True, False, False, True, False]
    assert aug["y"].shape == (6, 3) and torch.isfinite(m.training_step(b)["loss"])
    u = make({"kd": 1.0}, ce_weight=0.0, augment={"image": {"mixup_alpha": 1.0}}).train()
    mixed = u.augmented_batch({"x": b["x"]})
    assert set(mixed) == {"x"} and not torch.equal(mixed["x"], b["x"])


def test_augment_needs_a_teacher_that_reads_the_students_inputs() -> None:
    student = cnn(4, 2, seed=1)
    fixed = create_backbone("tk:smallcnn", in_chans=1, width=4, depth=2, input_size=16)
    with pytest.raises(ConfigError, match="preprocessing differs") as err:
        Distill(
            student,
            nn.Linear(student.num_features, 3),
            "classification",
            DistillParams(augment=FLIP_CROP),
            teacher_backbone=fixed,
            teacher_head=nn.Linear(fixed.num_features, 3),
        )
    assert err.value.where == "method.params.augment" and "(1, 16, 16)" in err.value.what
    img = Preprocess("image", mean=(0.5,), std=(0.5,), input_size=(1, 16, 16))
    assert input_mismatch(img, img) == ""
    assert input_mismatch(img, Preprocess("image", (0.5,), (0.5,), (1, 0, 0))) == ""
    assert "mean" in input_mismatch(img, Preprocess("image", (0.4,), (0.5,), (1, 16, 16)))
    assert "reads vector" in input_mismatch(img, Preprocess("vector"))
    tok_a = SimpleNamespace(get_vocab=lambda: {"[CLS]": 0, "good": 1})
    tok_b = SimpleNamespace(get_vocab=lambda: {"[CLS]": 0, "bad": 1})
    text = Preprocess("text", tokenizer=tok_a)
    assert input_mismatch(text, Preprocess("text", tokenizer=tok_a)) == ""
    assert "vocabularies" in input_mismatch(text, Preprocess("text", tokenizer=tok_b))
