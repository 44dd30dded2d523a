"""Techniques compose: gradual unfreezing + discriminative LR + regularisers, and PEFT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.finetune.helpers import batch, fit, make_finetune


def test_gradual_unfreezing_layer_decay_and_regularisers_train_together(tmp_path: Path) -> None:
    m = make_finetune(
        gradual_unfreeze_every=1,
        layer_decay=0.5,
        backbone_lr_mult=1.0,
        l2sp={"alpha": 0.01, "beta": 0.001},
        bss={"eta": 0.01},
        delta={"alpha": 0.01, "layers": [0]},
    )
    res = fit(m, tmp_path, epochs=4, lr=0.03, save_checkpoints=False, schedule="constant")
    losses = [r["train_task_loss"] for r in res.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(r["train_l2sp"] > 0 and r["train_bss"] > 0 for r in res.history)
    assert res.history[-1]["train_delta"] > 0  # block1 trains in the last epochs
    assert m.unfreezing is not None and m.unfreezing.trainable_groups() == [True, True]


def test_peft_adapters_train_and_compose_with_discriminative_lr() -> None:
    pytest.importorskip("peft")
    pytest.importorskip("transferkit.finetune.peft")
    m = make_finetune(
        peft={"kind": "lora", "r": 2, "alpha": 4.0}, layer_decay=0.5, l2sp={"beta": 0.1}
    )
    info = m.peft_info_
    assert info is not None and 0 < info["trainable"] < info["total"]
    trainable = [n for n, p in m.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    groups = {g["name"]: g for g in m.param_groups(1.0)}
    assert set(groups) == {"backbone.block1", "backbone.block2", "head"}
    assert groups["backbone.block1"]["lr"] == pytest.approx(0.1 * 0.25)
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    assert in_groups == {id(p) for p in m.parameters() if p.requires_grad}
    m.train()
    assert not m.backbone.block1[1].training  # frozen BatchNorm stays in eval mode

    def new_sq() -> float:  # head + adapters; the renamed, frozen base weights are not new
        new = [*m.head.parameters(), *(p for p in m.backbone.parameters() if p.requires_grad)]
        return 0.05 * sum(p.pow(2).sum() for p in new).item()

    assert m.training_step(batch())["l2sp"].item() == pytest.approx(new_sq())
    base = {n: p.detach().clone() for n, p in m.backbone.named_parameters() if "lora_" not in n}
    opt = torch.optim.SGD(m.param_groups(0.5), lr=0.5)
    for i in range(3):
        opt.zero_grad()
        m.training_step(batch(seed=i))["loss"].backward()
        opt.step()
    assert all(torch.equal(p, base[n]) for n, p in m.backbone.named_parameters() if n in base)
    assert m.training_step(batch())["l2sp"].item() == pytest.approx(new_sq())
