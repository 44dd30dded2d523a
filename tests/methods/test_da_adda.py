"""ADDA: the phase switch, per-player gradients, freezing, and exact resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import TinyVectorBackbone
from tests.methods.toys import shifted_blobs
from transferkit.engine import Callback, CheckpointStore, TrainConfig, Trainer
from transferkit.errors import ConfigError, DataError
from transferkit.methods import METHODS
from transferkit.methods.da_adda import ADDA, ADDAParams, ADDAPhaseSwitch, switch_step
from transferkit.methods.finetune import Finetune, FinetuneParams
from transferkit.methods.heads import make_head


def _adda(seed: int = 0, **kw: Any) -> ADDA:
    torch.manual_seed(seed)
    params = ADDAParams(**{"backbone_lr_mult": 1.0, "hidden": 16, **kw})
    return ADDA(TinyVectorBackbone(6, 8), make_head(8, 2), "classification", params)


def _batch(n: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    x, y, xt, _ = shifted_blobs(seed, n)
    return {"x": x, "y": y, "x_t": xt}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(m: ADDA, steps: int, total: int, start: int = 0) -> None:
    """Full-batch AdamW steps ``start+1 .. start+steps`` with the phase-switch callback."""
    opt = torch.optim.AdamW(m.param_groups(1e-2))
    (cb,) = m.training_callbacks()
    batch = _batch()
    m.train()
    for step in range(start, start + steps):
        out = m.training_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        cb.on_step_end(SimpleNamespace(global_step=step + 1, total_steps=total))


def test_registered_with_family_paper_and_strict_params() -> None:
    cls = METHODS.get("adda")
    assert cls is ADDA and cls.family == "domain-adaptation" and "1702.05464" in cls.paper
    assert {"trade_off", "backbone_lr_mult", "source_fraction"} <= set(cls.Params.model_fields)
    with pytest.raises(ValueError):
        ADDAParams(bogus=1)
    with pytest.raises(ValueError):
        ADDAParams(source_fraction=1.0)


def test_switch_step_rounding() -> None:
    assert switch_step(0.3, 10) == 3  # 0.3 * 10 = 3.0000000000000004 in floating point
    assert switch_step(0.3, 160) == 48
    assert switch_step(0.25, 10) == 3
    assert switch_step(0.01, 10) == 1


def test_phase_switch_at_the_right_step_copies_and_freezes() -> None:
    """total 10, fraction 0.3: phase 0 for steps 1..3, the switch right after step 3."""
    m = _adda()
    assert m.phase_index == 0 and all(p.requires_grad for p in m.head.parameters())
    assert m.train().head.training and not m.source_encoder.training
    assert not any(p.requires_grad for p in m.source_encoder.parameters())
    _run(m, 2, total=10)
    assert m.phase_index == 0
    assert not _equal(_snapshot(m.source_encoder), _snapshot(m.backbone))  # trained since init
    _run(m, 1, total=10, start=2)
    assert m.phase_index == 1
    at_switch = _snapshot(m.backbone)
    assert _equal(_snapshot(m.source_encoder), at_switch)  # bit-equal, buffers included
    head, disc = _snapshot(m.head), _snapshot(m.discriminator)
    assert not any(p.requires_grad for p in m.head.parameters())
    _run(m, 4, total=10, start=3)
    assert _equal(_snapshot(m.source_encoder), at_switch)  # frozen, BN stats too
    assert _equal(_snapshot(m.head), head)  # frozen head
    assert not _equal(_snapshot(m.backbone), at_switch)  # the target encoder trains
    assert not _equal(_snapshot(m.discriminator), disc)
    m.train()
    assert m.training and m.backbone.training and not m.source_encoder.training
    assert not m.head.training  # frozen head: no dropout / BatchNorm updates either


def _grads(m: ADDA, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    m.zero_grad(set_to_none=True)
    out["loss"].backward()
    return {n: p.grad for n, p in m.named_parameters()}


def test_every_trainable_parameter_of_each_phase_gets_a_finite_gradient() -> None:
    m = _adda()
    out = m.training_step(_batch())
    assert set(out) == {"loss", "cls_loss", "phase"} and float(out["phase"]) == 0.0
    grads = _grads(m, out)
    for name, g in grads.items():
        active = name.startswith(("backbone.", "head."))
        assert (g is not None) == active, name
        assert g is None or bool(torch.isfinite(g).all())
    m.switch_to_adaptation()
    out = m.training_step(_batch())
    assert {"loss", "disc_loss", "adv_loss", "domain_acc", "phase"} == set(out)
    assert torch.isfinite(out["loss"]) and float(out["phase"]) == 1.0
    grads = _grads(m, out)
    for name, g in grads.items():
        active = name.startswith(("backbone.", "discriminator."))
        assert (g is not None) == active, name
        assert g is None or bool(torch.isfinite(g).all())


def test_one_step_gives_each_player_exactly_its_own_gradient() -> None:
    """dL/dD equals the gradient of the discriminator loss alone, and dL/dM_t equals
    trade_off times the gradient of the inverted-label loss alone (no reversal, no leak)."""
    m = _adda(trade_off=0.7)
    m.switch_to_adaptation()
    m.train()
    batch = _batch()
    disc_params, enc_params = list(m.discriminator.parameters()), list(m.backbone.parameters())
    got = torch.autograd.grad(m.training_step(batch)["loss"], disc_params + enc_params)
    f_s, f_t = m.source_encoder(batch["x"]), m.backbone(batch["x_t"])
    d_s, d_t = m.discriminator(f_s), m.discriminator(f_t.detach())
    loss_d = 0.5 * (
        F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
        + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t))
    )
    d_t_enc = m.discriminator(f_t)
    loss_m = F.binary_cross_entropy_with_logits(d_t_enc, torch.ones_like(d_t_enc))
    want_d = torch.autograd.grad(loss_d, disc_params)
    want_m = torch.autograd.grad(loss_m, enc_params)
    for a, b in zip(got, [*want_d, *(0.7 * g for g in want_m)], strict=True):
        torch.testing.assert_close(a, b)


def test_state_dict_round_trip_keeps_the_phase_and_the_freezing() -> None:
    m = _adda()
    groups_before = [(g["name"], len(g["params"]), g["lr"]) for g in m.param_groups(0.1)]
    _run(m, 4, total=10)
    assert m.phase_index == 1
    fresh = _adda(seed=5)
    assert fresh.phase_index == 0
    fresh.load_state_dict(m.state_dict())
    assert fresh.phase_index == 1
    assert not any(p.requires_grad for p in fresh.head.parameters())
    assert _equal(_snapshot(fresh.source_encoder), _snapshot(m.source_encoder))
    # the optimizer sees the same groups before and after the switch (resume needs it)
    groups_after = [(g["name"], len(g["params"]), g["lr"]) for g in fresh.param_groups(0.1)]
    assert (
        groups_before
        == groups_after
        == [("head", 2, 0.1), ("backbone", 6, 0.1), ("domain", 6, 0.1)]
    )
    # a fresh callback at a resumed step past the switch keeps phase 1 without re-copying
    (cb,) = fresh.training_callbacks()
    fresh.backbone.block1[0].weight.data.add_(1.0)
    cb.on_train_start(SimpleNamespace(global_step=7, total_steps=10))
    assert fresh.phase_index == 1 and not torch.equal(
        fresh.backbone.block1[0].weight, fresh.source_encoder.block1[0].weight
    )
    cb2 = ADDAPhaseSwitch(_adda())
    cb2.load_state_dict(cb.state_dict())
    assert cb2.switch_at == 3


def test_errors() -> None:
    b = _batch()
    with pytest.raises(DataError, match="x_t"):
        _adda().training_step({"x": b["x"], "y": b["y"]})
    with pytest.raises(ConfigError, match="classification"):
        ADDA(TinyVectorBackbone(), make_head(8, 1), "regression", ADDAParams())
    m = _adda()
    m.source_encoder.requires_grad_(True)
    with pytest.raises(ConfigError, match="frozen"):
        m.param_groups(0.1)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.x, self.y, self.xt, _ = shifted_blobs(3, n)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.x[i], self.y[i], self.xt[i]


def _collate(items: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    x, y, xt = (torch.stack(t) for t in zip(*items, strict=True))
    return {"x": x, "y": y, "x_t": xt}


class _Crash(Exception):
    pass


class _CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, trainer: Any, path: Any) -> None:
        if trainer.global_step == self.step:
            raise _Crash


def _fit(run_dir: Path, seed: int, resume: bool = False, crash: int | None = None) -> ADDA:
    m = _adda(seed)
    cfg = TrainConfig(
        mixed_precision="no",
        lr=0.01,
        batch_size=8,
        epochs=2,
        schedule="constant",
        checkpoint_every_steps=1,
        log_every_steps=100,
        seed=1,
    )
    cbs = [_CrashAt(crash)] if crash is not None else []
    Trainer(m, _Pairs(32), _collate, cfg, run_dir, callbacks=cbs, quiet=True).fit(resume=resume)
    return m


@pytest.mark.parametrize("crash", [2, 5])
def test_trainer_resume_across_the_switch_is_bit_exact(tmp_path: Path, crash: int) -> None:
    """32 items / batch 8 x 2 epochs = 8 steps, switch after step ceil(0.3 * 8) = 3; a crash
    before (2) or after (5) the switch, then a resume from another init, ends bit-equal."""
    straight = _fit(tmp_path / "a", seed=0)
    assert straight.phase_index == 1
    with pytest.raises(_Crash):
        _fit(tmp_path / "b", seed=0, crash=crash)
    latest = CheckpointStore(tmp_path / "b" / "checkpoints").latest()
    assert latest is not None and latest.name.startswith(f"ckpt-{crash:08d}")
    resumed = _fit(tmp_path / "b", seed=9, resume=True)
    assert _equal(_snapshot(straight), _snapshot(resumed))
    assert not any(p.requires_grad for p in resumed.head.parameters())


def _toy_accuracy(seed: int, adda: bool, steps: int = 160) -> tuple[float, float | None]:
    """Full-batch AdamW at lr 1e-2 on the shifted toy; (final target accuracy, target
    accuracy right at the phase switch, i.e. of ADDA's own source-only encoder)."""
    x, y, xt, yt = shifted_blobs(seed)
    torch.manual_seed(seed)
    bb, head = TinyVectorBackbone(6, 16), make_head(16, 2)
    if adda:
        m: Any = ADDA(bb, head, "classification", ADDAParams(hidden=32))
    else:
        m = Finetune(bb, head, "classification", FinetuneParams(backbone_lr_mult=1.0))
    opt = torch.optim.AdamW(m.param_groups(1e-2))
    cbs = m.training_callbacks() if adda else []
    at_switch = None

    def accuracy() -> float:
        m.eval()
        with torch.no_grad():
            acc = float((m.predict(xt).argmax(-1) == yt).float().mean())
        m.train()
        return acc

    m.train()
    for step in range(steps):
        out = m.training_step({"x": x, "y": y, "x_t": xt})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        for cb in cbs:
            cb.on_step_end(SimpleNamespace(global_step=step + 1, total_steps=steps))
        if adda and step + 1 == switch_step(0.3, steps):
            at_switch = accuracy()
    return accuracy(), at_switch


def test_adda_on_the_shifted_toy() -> None:
    """160 full-batch steps, lr 1e-2, ADDA with its default backbone_lr_mult = 0.1 (the
    target encoder at 1e-3; at 1e-2 the GAN diverged on this toy: the discriminator wins
    and target accuracy fell to 0.41-0.85). Measured on 8 seeds while writing this:

    * ADDA 0.99-1.00 on every seed (mean 0.994); source-only (plain fine-tuning, backbone
      at 1e-2) mean 0.854, 0.63-1.00;
    * ADDA's own encoder at the switch (its source-only model) 0.55-0.99: the adversarial
      phase never lowered target accuracy and raised it on 7 of 8 seeds.

    Seeds 0, 3, 6 here: source-only 0.74 / 1.00 / 0.63; at the switch 0.92 / 0.71 / 0.55;
    ADDA 0.99 / 0.99 / 1.00. Source-only is already perfect on seed 3, so "beats
    source-only" is asserted only where it is poor (gain > 0.15), elsewhere at most 0.02
    lost; the gain over the switch is asserted on every seed.
    """
    for seed in (0, 3, 6):
        base, _ = _toy_accuracy(seed, adda=False)
        acc, at_switch = _toy_accuracy(seed, adda=True)
        assert at_switch is not None and acc >= at_switch, (seed, acc, at_switch)
        if base < 0.8:
            assert acc > base + 0.15, (seed, acc, base)
        else:
            assert acc >= base - 0.02, (seed, acc, base)


def test_combines_with_mcc_and_peft() -> None:
    """Phase 1 adds MCC through the frozen head; with LoRA only adapters adapt."""
    m = _adda(mcc_weight=0.5)
    m.switch_to_adaptation()
    out = m.training_step(_batch())
    assert float(out["mcc_loss"]) > 0
    torch.testing.assert_close(
        out["loss"].detach(), out["disc_loss"] + out["adv_loss"] + 0.5 * out["mcc_loss"]
    )
    grads = _grads(m, out)
    assert all(grads[n] is None for n in grads if n.startswith(("head.", "source_encoder.")))
    pytest.importorskip("peft")
    pytest.importorskip("transferkit.finetune.peft")
    m = _adda(peft={"kind": "lora", "r": 2, "alpha": 4.0})
    groups = {g["name"]: g["params"] for g in m.param_groups(0.1)}
    lora = [p for n, p in m.backbone.named_parameters() if "lora_" in n]
    assert lora and {id(p) for p in groups["backbone"]} == {id(p) for p in lora}
    assert not any(p.requires_grad for p in m.source_encoder.parameters())
    _run(m, 5, total=10)
    assert m.phase_index == 1
    grads = _grads(m, m.training_step(_batch()))
    assert all((grads[n] is not None) == ("lora_" in n) for n in grads if n.startswith("backbone."))
