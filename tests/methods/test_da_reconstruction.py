"""DRCN and DSN: input shapes, gradients, loss formulas, param groups, and the shifted toy."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.conftest import TinyVectorBackbone
from tests.methods.toys import shifted_blobs
from transferkit.backbones import create_backbone
from transferkit.errors import ConfigError, DataError
from transferkit.methods import METHODS
from transferkit.methods.da_adversarial import GRLSchedule
from transferkit.methods.da_reconstruction import (
    DRCNParams,
    DSNParams,
    resolve_input_shape,
)
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head


def _vector(name: str, seed: int = 0, width: int = 16, **kw: Any) -> Any:
    torch.manual_seed(seed)
    bb, head = TinyVectorBackbone(6, width), make_head(width, 2)
    if name == "source_only":
        return Finetune(bb, head, "classification", FinetuneParams(backbone_lr_mult=1.0))
    cls = METHODS.get(name)
    return cls(bb, head, "classification", cls.Params(**{"backbone_lr_mult": 1.0, **kw}))


def _cnn(name: str, input_size: int | None = None, **kw: Any) -> Any:
    """tk:smallcnn (1 channel, 4 -> 8 wide); ``input_size=None`` keeps native sizes."""
    torch.manual_seed(0)
    size = {} if input_size is None else {"input_size": input_size}
    bb = create_backbone("tk:smallcnn", pretrained=False, in_chans=1, width=4, depth=2, **size)
    cls = METHODS.get(name)
    return cls(bb, make_head(bb.num_features, 3), "classification", cls.Params(**kw))


def _images(n: int = 4, size: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(n, 1, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)
    return {"x": x, "y": torch.arange(n) % 3, "x_t": xt + 0.5}


def _assert_all_trainable_get_finite_grads(m: torch.nn.Module, loss: torch.Tensor) -> None:
    assert torch.isfinite(loss)
    m.zero_grad(set_to_none=True)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    bad = [n for n, p in m.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    assert not bad


def test_registered_with_family_paper_and_strict_params() -> None:
    for name, arxiv in (("drcn", "1607.03516"), ("dsn", "1608.06019")):
        cls = METHODS.get(name)
        assert cls.family == "domain-adaptation" and arxiv in cls.paper
        assert {"trade_off", "backbone_lr_mult", "input_shape"} <= set(cls.Params.model_fields)
        with pytest.raises(ValueError):
            cls.Params(bogus=1)
    with pytest.raises(ValueError):
        DSNParams(similarity="coral")
    with pytest.raises(ValueError):
        DRCNParams(recon_weight=1.0)


def test_input_shape_from_backbones_and_override() -> None:
    assert resolve_input_shape(TinyVectorBackbone(7, 4), None) == (7,)
    mlp = create_backbone("tk:mlp", pretrained=False, in_features=5, hidden=[8])
    assert resolve_input_shape(mlp, None) == (5,)
    cnn = create_backbone("tk:smallcnn", pretrained=False, in_chans=3, input_size=[10, 14])
    assert resolve_input_shape(cnn, None) == (3, 10, 14)
    assert resolve_input_shape(cnn, (3, 16, 16)) == (3, 16, 16)
    native = create_backbone("tk:smallcnn", pretrained=False, in_chans=1)  # no input_size
    with pytest.raises(ConfigError, match="input_shape") as err:
        resolve_input_shape(native, None)
    assert "tk:smallcnn" in str(err.value)
    assert resolve_input_shape(native, (1, 8, 8)) == (1, 8, 8)
    for bad, backbone in (((8,), native), ((1, 8, 0), native), ((1, 8, 8), mlp), ((2, 3), mlp)):
        with pytest.raises(ConfigError, match="input_shape"):
            resolve_input_shape(backbone, bad)


def test_text_backbones_are_refused_with_advice() -> None:
    bb = TinyVectorBackbone(6, 8)
    bb.modality, bb.spec = "text", "hf:tiny-bert"
    for name in ("drcn", "dsn"):
        cls = METHODS.get(name)
        with pytest.raises(DataError, match="text") as err:
            cls(bb, make_head(8, 2), "classification", cls.Params())
        assert "tk:mlp" in str(err.value)


def test_decoder_and_extra_modules_exist_before_the_first_step() -> None:
    """The trainer builds the optimizer from param_groups before any batch is seen."""
    drcn = _vector("drcn")
    groups = {g["name"]: g for g in drcn.param_groups(0.1)}
    assert list(groups) == ["head", "backbone", "decoder"]
    assert groups["decoder"]["lr"] == 0.1 and len(groups["decoder"]["params"]) == 4
    dsn = _vector("dsn", backbone_lr_mult=0.5)
    lrs = {g["name"]: g["lr"] for g in dsn.param_groups(0.1)}
    assert lrs == pytest.approx(
        {"head": 0.1, "backbone": 0.05, "private": 0.05, "decoder": 0.1, "domain": 0.1}
    )
    small = _vector("dsn", private_encoder="small", similarity="mmd")
    lrs = {g["name"]: g["lr"] for g in small.param_groups(0.1)}
    assert lrs == pytest.approx({"head": 0.1, "backbone": 0.1, "private": 0.1, "decoder": 0.1})
    for m in (drcn, dsn, small):
        ids = [id(p) for g in m.param_groups(0.1) for p in g["params"]]
        assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in m.parameters())


def test_drcn_step_formula_and_gradients() -> None:
    x, y, xt, _ = shifted_blobs(0, n=16)
    m = _vector("drcn", recon_weight=0.4, trade_off=0.5, noise_std=0.1)
    m.train()
    out = m.training_step({"x": x, "y": y, "x_t": xt})
    assert {"loss", "cls_loss", "transfer_loss", "recon_loss"} <= set(out)
    want = 0.6 * out["cls_loss"] + 0.4 * 0.5 * out["recon_loss"]
    torch.testing.assert_close(out["loss"].detach(), want)
    _assert_all_trainable_get_finite_grads(m, out["loss"])


DSN_VARIANTS = [
    {},
    {"similarity": "mmd"},
    {"private_encoder": "small"},
    {"combine": "concat", "similarity": "mmd", "private_encoder": "small"},
]


@pytest.mark.parametrize("kw", DSN_VARIANTS)
def test_dsn_step_formula_and_gradients(kw: dict[str, Any]) -> None:
    x, y, xt, _ = shifted_blobs(0, n=16)
    m = _vector("dsn", trade_off=0.5, **kw)
    if m.grl is not None:
        m.grl.lambda_ = 1.0
    out = m.training_step({"x": x, "y": y, "x_t": xt})
    p = m.hparams
    transfer = (
        p.recon_weight * out["recon_loss"]
        + p.difference_weight * out["diff_loss"]
        + p.similarity_weight * out["sim_loss"]
    )
    torch.testing.assert_close(out["transfer_loss"], transfer)
    torch.testing.assert_close(out["loss"].detach(), out["cls_loss"] + 0.5 * transfer)
    assert 0.0 <= float(out["diff_loss"]) <= 2.0  # "batch" reduction: each domain in [0, 1]
    _assert_all_trainable_get_finite_grads(m, out["loss"])


def test_dsn_grl_schedule_only_for_dann() -> None:
    m = _vector("dsn", gamma=10.0, max_lambda=0.5)
    (cb,) = m.training_callbacks()
    assert isinstance(cb, GRLSchedule) and m.grl is not None and m.grl.lambda_ == 0.0
    cb.update(100, 100)
    assert m.grl.lambda_ == pytest.approx(0.5 * (2 / (1 + torch.exp(torch.tensor(-10.0))) - 1))
    assert _vector("dsn", similarity="mmd").training_callbacks() == []


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("drcn", {"input_size": 12}),
        ("drcn", {"input_shape": (1, 12, 12)}),
        ("dsn", {"input_size": 12}),
        ("dsn", {"input_size": 12, "private_encoder": "small", "similarity": "mmd"}),
    ],
)
def test_image_backbones_train_and_shapes_are_checked(name: str, kw: dict[str, Any]) -> None:
    m = _cnn(name, **kw)
    if getattr(m, "grl", None) is not None:
        m.grl.lambda_ = 1.0
    batch = _images()
    out = m.training_step(batch)
    _assert_all_trainable_get_finite_grads(m, out["loss"])
    wrong = {**batch, "x_t": torch.randn(4, 1, 10, 10)}
    with pytest.raises(DataError, match=r"\(1, 12, 12\)"):
        m.training_step(wrong)
    with pytest.raises(DataError, match="x_t"):
        m.training_step({"x": batch["x"], "y": batch["y"]})


def _train(name: str, seed: int, steps: int = 160, **kw: Any) -> tuple[float, list[float]]:
    """Full-batch AdamW at lr 1e-2; returns (target accuracy, per-step total loss)."""
    x, y, xt, yt = shifted_blobs(seed)
    m = _vector(name, seed, **kw)
    opt = torch.optim.AdamW(m.param_groups(1e-2))
    cbs = list(getattr(m, "training_callbacks", list)())
    losses = []
    m.train()
    for step in range(steps):
        out = m.training_step({"x": x, "y": y, "x_t": xt})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
        for cb in cbs:
            cb.update(step + 1, steps)
    m.eval()
    with torch.no_grad():
        return float((m.predict(xt).argmax(-1) == yt).float().mean()), losses


def test_losses_decrease_and_target_accuracy_against_source_only() -> None:
    """Shifted toy, 160 full-batch steps, backbone at the head's lr. Target accuracy of
    source-only / DRCN / DSN (dann, copies) on seeds 0, 3, 6 (8 seeds measured while
    writing this: means 0.854 / 0.972 / 0.979):

    * seed 0: 0.74 / 0.96 / 0.96;  seed 6: 0.63 / 0.92 / 0.99  (large gains);
    * seed 3: 1.00 / 0.93 / 0.95  (source-only is already perfect: both lose a little).

    Beating source-only is therefore NOT robust per seed: asserted are a clear gain where
    source-only is poor (> 0.15), no loss larger than 0.08 elsewhere, and a higher mean.
    """
    for seed in (0, 3, 6):
        base, _ = _train("source_only", seed)
        for name in ("drcn", "dsn"):
            acc, losses = _train(name, seed)
            assert sum(losses[-10:]) < 0.5 * sum(losses[:10]), (name, seed)
            if base < 0.8:
                assert acc > base + 0.15, (name, seed, acc, base)
            else:
                assert acc > base - 0.08, (name, seed, acc, base)


@pytest.mark.parametrize("name", ["drcn", "dsn"])
def test_combines_with_mcc_and_peft(name: str) -> None:
    """mcc_weight adds MCC on the target logits; peft trains LoRA adapters, not the base."""
    x, y, xt, _ = shifted_blobs(0, n=16)
    plain = _vector(name).training_step({"x": x, "y": y, "x_t": xt})
    m = _vector(name, mcc_weight=0.5)
    out = m.training_step({"x": x, "y": y, "x_t": xt})
    torch.testing.assert_close(out["loss"].detach(), plain["loss"].detach() + 0.5 * out["mcc_loss"])
    pytest.importorskip("peft")
    pytest.importorskip("transferkit.finetune.peft")
    m = _vector(name, peft={"kind": "lora", "r": 2, "alpha": 4.0})
    trainable = [n for n, p in m.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    _assert_all_trainable_get_finite_grads(m, m.training_step({"x": x, "y": y, "x_t": xt})["loss"])
