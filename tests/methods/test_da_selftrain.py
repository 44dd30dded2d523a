"""Self-training DA (pseudo_label, fixmatch): masks by hand, the teacher, resume, a toy."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from tests.conftest import TinyVectorBackbone
from transferkit.backbones.base import Backbone, LayerGroup, Preprocess
from transferkit.engine import Callback, TrainConfig, Trainer
from transferkit.errors import DataError
from transferkit.methods import METHODS
from transferkit.methods.da_selftrain import (
    PseudoLabel,
    TeacherSync,
    class_thresholds,
    masked_cross_entropy,
    pseudo_labels,
)
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head

NAMES = ["pseudo_label", "fixmatch"]


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core machine the
    thread barriers of BatchNorm/softmax made each toy step ~10x slower in CPU time."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _toy(seed: int, n: int = 96) -> tuple[torch.Tensor, ...]:
    """Two blobs (sd 0.5) at -1.5 u and +1.5 u with ``u = (1, 1, 1, 1, 0, 0) / 2``; the
    target is shifted by 1.2 along ``u``, towards the source boundary.

    Unlike the toy of ``test_domain_adaptation.py`` the class signal is spread over four
    features: FixMatch's strong vector view drops single features (p = 0.2), which on a
    one-informative-feature toy erases the class of a fifth of the examples and teaches the
    more confident class everywhere; with redundant features a view keeps most of the signal.
    There is no nuisance shift: it lets the boundary's extrapolation decide the target
    accuracy, which self-training does not address.
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]) / 2
    out = []
    for shift in (0.0, 1.2):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 6, generator=g) * 0.5
        x += ((2 * y - 1) * 1.5 + shift)[:, None] * u
        out += [x, y]
    return tuple(out)


def _build(name: str, seed: int = 0, **kw: Any) -> Any:
    torch.manual_seed(seed)
    bb, head = TinyVectorBackbone(6, 16), make_head(16, 2)
    if name == "source_only":
        return Finetune(bb, head, "classification", FinetuneParams(backbone_lr_mult=1.0))
    cls = METHODS.get(name)
    return cls(bb, head, "classification", cls.Params(backbone_lr_mult=1.0, **kw))


def _at(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, total_steps=1000)


def _train(name: str, seed: int, steps: int = 80, **kw: Any) -> tuple[float, list[float]]:
    """Full-batch AdamW (callbacks driven by hand); returns (target accuracy, losses)."""
    x, y, xt, yt = _toy(seed)
    m = _build(name, seed, **kw)
    opt = torch.optim.AdamW(m.param_groups(1e-2))
    cbs = getattr(m, "training_callbacks", list)()
    for cb in cbs:
        cb.on_train_start(_at(0))
    losses = []
    m.train()
    for step in range(steps):
        out = m.training_step({"x": x, "y": y, "x_t": xt})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
        for cb in cbs:
            cb.on_step_end(_at(step + 1))
    m.eval()
    with torch.no_grad():
        return float((m.predict(xt).argmax(-1) == yt).float().mean()), losses


# ----------------------------------------------------------------------------- pure functions
def test_pseudo_labels_by_hand() -> None:
    probs = torch.tensor([[0.97, 0.03], [0.6, 0.4], [0.2, 0.8], [0.01, 0.99], [0.05, 0.95]])
    labels, mask = pseudo_labels(probs, 0.95)
    assert labels.tolist() == [0, 0, 1, 1, 1]
    assert mask.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]  # confidence == threshold is kept
    # class-balanced, q = 0.5: class 0 confidences {0.97, 0.6} -> t_0 = 0.785;
    # class 1 {0.8, 0.99, 0.95} -> t_1 = 0.95 (the median)
    t = class_thresholds(probs.max(-1).values, labels, 3, 0.5)
    torch.testing.assert_close(t[:2], torch.tensor([0.785, 0.95]))
    assert math.isinf(t[2])  # class 2 is predicted nowhere
    _, balanced = pseudo_labels(probs, 0.5, class_balance=True)
    assert balanced.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    _, low = pseudo_labels(probs, 0.0, class_balance=True)  # q = 0 keeps everything
    assert low.tolist() == [1.0] * 5


def test_masked_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    mask = torch.tensor([1.0, 1.0, 0.0])
    expected = (math.log(2) + (2 + math.log(1 + math.exp(-2)))) / 3
    assert float(masked_cross_entropy(logits, labels, mask)) == pytest.approx(expected)
    assert float(masked_cross_entropy(logits, labels, torch.zeros(3))) == 0.0
    assert float(masked_cross_entropy(logits[:0], labels[:0], mask[:0])) == 0.0


# ----------------------------------------------------------------------------- contract
def test_registered_with_family_paper_and_strict_params() -> None:
    for name in NAMES:
        cls = METHODS.get(name)
        assert cls.family == "domain-adaptation" and "arxiv.org" in cls.paper
        assert {"trade_off", "backbone_lr_mult", "threshold", "augment"} <= set(
            cls.Params.model_fields
        )
        assert cls.Params().augment is None  # the built-in views unless a policy is given
        with pytest.raises(ValueError):
            cls.Params(bogus=1)
        with pytest.raises(ValueError):
            cls.Params(threshold=1.5)
    assert METHODS.get("fixmatch").Params().threshold == 0.95


@pytest.mark.parametrize("name", NAMES)
def test_step_outputs_gradients_and_groups(name: str) -> None:
    x, y, xt, yt = _toy(0, n=16)
    m = _build(name, threshold=0.0, trade_off=0.7)
    out = m.training_step({"x": x, "y": y, "x_t": xt, "y_t": yt})
    assert {"loss", "cls_loss", "transfer_loss", "mask_rate", "labeller_acc"} <= set(out)
    assert "pseudo_label_acc" in out and float(out["mask_rate"]) == 1.0
    expected = out["cls_loss"] + 0.7 * out["transfer_loss"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    assert all(p.grad is not None for _, p in trainable)
    assert all(not n.startswith("teacher.") for n, _ in trainable)
    groups = m.param_groups(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert {g["name"] for g in groups} == {"head", "backbone"}
    # the diagnostics never need target labels, and a threshold of 1 selects nothing here
    out = _build(name, threshold=1.0).training_step({"x": x, "y": y, "x_t": xt})
    assert "labeller_acc" not in out and float(out["mask_rate"]) == 0.0
    torch.testing.assert_close(out["loss"], out["cls_loss"])
    with pytest.raises(DataError, match="x_t"):
        m.training_step({"x": x, "y": y})


@pytest.mark.parametrize("name", NAMES)
def test_combines_with_mcc_and_lora(name: str) -> None:
    """``mcc_weight`` adds MCC on the target logits; with LoRA only the adapters train and
    the teacher copy (pseudo_label) holds the adapters too, so a sync stays bit-equal."""
    x, y, xt, _ = _toy(0, n=16)
    out = _build(name, threshold=0.0, trade_off=0.5, mcc_weight=0.3).training_step(
        {"x": x, "y": y, "x_t": xt}
    )
    assert float(out["mcc_loss"]) > 0
    expected = out["cls_loss"] + 0.5 * out["transfer_loss"] + 0.3 * out["mcc_loss"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    pytest.importorskip("peft")
    pytest.importorskip("transferkit.finetune.peft")
    m = _build(name, peft={"kind": "lora", "r": 2, "alpha": 4.0})
    groups = {g["name"]: g["params"] for g in m.param_groups(0.1)}
    lora = [p for n, p in m.backbone.named_parameters() if "lora_" in n]
    assert lora and {id(p) for p in groups["backbone"]} == {id(p) for p in lora}
    out = m.training_step({"x": x, "y": y, "x_t": xt})
    out["loss"].backward()
    assert all(p.grad is not None for p in lora)
    if name == "pseudo_label":
        with torch.no_grad():
            lora[0].add_(1.0)
        m.sync_teacher()
        assert _teacher_equals_student(m)


# ----------------------------------------------------------------------------- the teacher
def _teacher_equals_student(m: PseudoLabel) -> bool:
    s = {**m.backbone.state_dict(), **{f"h.{k}": v for k, v in m.head.state_dict().items()}}
    t = {
        **m.teacher["backbone"].state_dict(),
        **{f"h.{k}": v for k, v in m.teacher["head"].state_dict().items()},
    }
    return s.keys() == t.keys() and all(torch.equal(s[k], t[k]) for k in s)


def test_teacher_is_frozen_between_syncs_and_bit_equal_after() -> None:
    x, y, xt, _ = _toy(0, n=32)
    m = _build("pseudo_label", relabel_every_steps=3, threshold=0.6)
    (cb,) = m.training_callbacks()
    opt = torch.optim.AdamW(m.param_groups(1e-2))
    m.train()
    assert not m.teacher.training and not any(p.requires_grad for p in m.teacher.parameters())
    cb.on_train_start(_at(0))
    assert cb.last_sync_step == 0 and _teacher_equals_student(m)
    frozen = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    for step in range(1, 4):
        out = m.training_step({"x": x, "y": y, "x_t": xt})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert all(p.grad is None for p in m.teacher.parameters())
        if step < 3:  # BatchNorm stats and weights of the student moved, the teacher did not
            assert all(torch.equal(v, m.teacher.state_dict()[k]) for k, v in frozen.items())
            assert not _teacher_equals_student(m)
        cb.on_step_end(_at(step))
    assert cb.last_sync_step == 3 and _teacher_equals_student(m)
    assert any(k.startswith("teacher.") for k in m.state_dict())


def test_teacher_sync_state_round_trips_so_resume_syncs_at_the_same_steps() -> None:
    def synced_steps(cb: TeacherSync, steps: range) -> list[int]:
        out = []
        for s in steps:
            before = cb.last_sync_step
            cb.on_step_end(_at(s))
            if cb.last_sync_step != before:
                out.append(s)
        return out

    m = _build("pseudo_label", relabel_every_steps=4)
    (cb,) = m.training_callbacks()
    cb.on_train_start(_at(0))
    assert synced_steps(cb, range(1, 7)) == [4]
    state = cb.state_dict()
    assert state == {"last_sync_step": 4}
    fresh = _build("pseudo_label", seed=1, relabel_every_steps=4)
    with torch.no_grad():  # the student moved on since the teacher's copy
        fresh.head[0].weight.add_(1.0)
    (cb2,) = fresh.training_callbacks()
    cb2.load_state_dict(state)
    cb2.on_train_start(_at(6))  # a resume: already synced once, no extra sync
    assert cb2.last_sync_step == 4 and not _teacher_equals_student(fresh)
    assert synced_steps(cb2, range(7, 13)) == [8, 12]
    never = TeacherSync(fresh)
    never.load_state_dict({"last_sync_step": None})
    never.on_train_start(_at(5))
    assert never.last_sync_step == 5 and _teacher_equals_student(fresh)


def test_rampup_weight_follows_global_step() -> None:
    x, y, xt, _ = _toy(0, n=16)
    m = _build("pseudo_label", rampup_steps=10, threshold=0.0)
    assert m.unlabelled_weight == 0.0
    (cb,) = m.training_callbacks()
    cb.on_train_start(_at(4))
    assert m.unlabelled_weight == pytest.approx(0.4)
    out = m.training_step({"x": x, "y": y, "x_t": xt})
    assert float(out["unlabelled_weight"]) == pytest.approx(0.4)
    cb.on_step_end(_at(25))
    assert m.unlabelled_weight == 1.0


# ----------------------------------------------------------------------------- modalities
class _TinyImage(Backbone):
    """Conv + BN + ReLU + global average pooling: ``[B, 3, H, W] -> [B, 8]``."""

    def __init__(self) -> None:
        super().__init__()
        self.spec, self.modality, self.num_features = "test:image", "image", 8
        self.preprocess, self.init_kwargs = Preprocess(modality="image"), {}
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x: Any) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def layer_groups(self) -> list[LayerGroup]:
        return [LayerGroup("body", tuple(n for n, _ in self.named_parameters()), 8)]

    def forward_intermediates(self, x: Any, indices: Sequence[int]) -> list[torch.Tensor]:
        return [self(x) for _ in indices]

    def prepare(self, raw: Any) -> torch.Tensor:
        return torch.as_tensor(raw)


class _TinyText(_TinyImage):
    """Token embedding + attention-masked mean pooling: ``{input_ids, attention_mask}``."""

    def __init__(self) -> None:
        super().__init__()
        self.spec, self.modality = "test:text", "text"
        self.body = nn.Embedding(200, 8)

    def forward(self, x: Any) -> torch.Tensor:
        mask = x["attention_mask"].unsqueeze(-1).float()
        return (self.body(x["input_ids"]) * mask).sum(1) / mask.sum(1).clamp_min(1)


def _image_batch() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(6, 3, 16, 16, generator=g),
        "y": torch.tensor([0, 1, 2, 0, 1, 2]),
        "x_t": torch.randn(5, 3, 16, 16, generator=g),
    }


def _text_batch() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)

    def side(n: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(5, 200, (n, 12), generator=g)
        ids[:, 0], ids[:, -1] = 1, 2
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return {"x": side(6), "y": torch.tensor([0, 1, 2, 0, 1, 2]), "x_t": side(5)}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("modality", ["image", "text"])
def test_image_and_text_batches(name: str, modality: str) -> None:
    """Both methods run on dict (text) and 4-d (image) inputs: the strong text view uses
    ``mask_token_id``, every trainable parameter gets a gradient."""
    torch.manual_seed(0)
    bb = _TinyImage() if modality == "image" else _TinyText()
    cls = METHODS.get(name)
    extra = {"mask_token_id": 3} if name == "fixmatch" else {}
    m = cls(bb, make_head(8, 3), "classification", cls.Params(threshold=0.0, **extra))
    batch = _image_batch() if modality == "image" else _text_batch()
    out = m.training_step(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and float(out["mask_rate"]) == 1.0
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- the toy
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def source_only_accuracy() -> float:
    """Mean target accuracy of plain fine-tuning on the source, seeds 0-2: 0.87."""
    return sum(_train("source_only", s)[0] for s in SEEDS) / 3


@pytest.mark.parametrize(
    ("name", "kw", "min_gain"),
    [("pseudo_label", {"relabel_every_steps": 10}, 0.02), ("fixmatch", {}, 0.05)],
)
def test_self_training_beats_source_only_on_shifted_toy(
    name: str, kw: dict[str, Any], min_gain: float, source_only_accuracy: float
) -> None:
    """Seeds 0-2, 80 full-batch steps, threshold 0.95. The baseline is the same method
    with ``trade_off=0``: same mixed-domain BatchNorm batches and, for FixMatch, the same
    source augmentation, so only the pseudo-label loss differs (plain source fine-tuning:
    0.93/0.88/0.81). The source boundary cuts the shifted target class-0 blob; the target
    blobs are well separated, so training on each blob's confident bulk pushes the boundary
    into the gap between them. Target accuracy, baseline -> method: pseudo_label
    0.93/0.86/0.88 -> 0.96/0.89/0.95 (a thresholded self-trainer stalls once its confident
    examples are fitted), FixMatch 0.91/0.88/0.86 -> 0.94/0.98/0.95. No seed gets worse."""
    base = [_train(name, s, **kw, trade_off=0.0)[0] for s in SEEDS]
    accs = []
    for seed in SEEDS:
        acc, losses = _train(name, seed, **kw)
        assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
        accs.append(acc)
    assert all(a >= b for a, b in zip(accs, base, strict=True)), (accs, base)
    assert sum(accs) / 3 > sum(base) / 3 + min_gain, (accs, base)
    assert sum(accs) / 3 > source_only_accuracy + min_gain, (accs, source_only_accuracy)


# ----------------------------------------------------------------------------- trainer resume
class _Paired(torch.utils.data.Dataset):
    """Aligned (source, target) pairs of the toy (the runner pairs real loaders)."""

    def __init__(self) -> None:
        self.x, self.y, self.xt, self.yt = _toy(2, n=48)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.x[i], self.y[i], self.xt[i], self.yt[i]


def _collate(items: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    x, y, xt, yt = (torch.stack(c) for c in zip(*items, strict=True))
    return {"x": x, "y": y, "x_t": xt, "y_t": yt}


class _Crash(Exception):
    pass


class _CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if trainer.global_step == self.step:
            raise _Crash


AUGMENTED = {"augment": {"vector": {"noise": 0.3, "dropout": 0.1, "mixup_alpha": 0.4}}}


def _fit(
    name: str,
    run_dir: Path,
    resume: bool = False,
    seed: int = 0,
    crash: int = 0,
    **kw: Any,
) -> Any:
    if name == "pseudo_label":
        kw = {"relabel_every_steps": 3, **kw, **({"augment_target": True} if kw else {})}
    m = _build(name, seed, threshold=0.6, **kw)
    config = TrainConfig(
        mixed_precision="no",
        lr=1e-2,
        batch_size=12,
        epochs=2,
        schedule="constant",
        checkpoint_every_steps=2,
        seed=5,
    )
    cbs = (_CrashAt(crash),) if crash else ()
    trainer = Trainer(m, _Paired(), _collate, config, run_dir, callbacks=cbs, quiet=True)
    trainer.fit(resume=resume)
    return m, trainer


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kw", [{}, AUGMENTED], ids=["builtin", "policy"])
def test_trainer_resume_is_bit_exact(name: str, kw: dict[str, Any], tmp_path: Path) -> None:
    """4 steps per epoch, 8 in all; crash after the checkpoint of step 4. The teacher (last
    synced at step 3) and the sync step come back from the checkpoint, and the augmentations
    (FixMatch's views; a policy with noise, dropout and MixUp) from the restored RNG state:
    the resumed run ends bit-equal."""
    straight, t_a = _fit(name, tmp_path / "a", **kw)
    with pytest.raises(_Crash):
        _fit(name, tmp_path / "b", crash=4, **kw)
    resumed, t_b = _fit(name, tmp_path / "b", resume=True, seed=9, **kw)
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    if name == "pseudo_label":
        (cb_a,), (cb_b,) = (
            [c for c in t.user_callbacks if isinstance(c, TeacherSync)] for t in (t_a, t_b)
        )
        assert cb_a.last_sync_step == cb_b.last_sync_step == 6
        assert not _teacher_equals_student(resumed)  # synced at 6, trained 2 more steps
