"""Hard sharing, MMoE and per-task adapters: outputs, gates and parameter ownership."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TinyVectorBackbone
from tests.mtl.helpers import TASKS, MultiTaskData, full_batch, make_mtl
from transferkit.errors import ConfigError
from transferkit.mtl.architectures import MMoE
from transferkit.mtl.tasks import gather_labels, task_loss


def test_mmoe_gates_sum_to_one_and_mix_the_experts() -> None:
    torch.manual_seed(0)
    mmoe = MMoE(TinyVectorBackbone(), ["a", "b"], num_experts=3, expert_dim=5)
    x = torch.randn(7, 6)
    f, experts = mmoe.encode(x)
    assert experts.shape == (7, 3, 5) and mmoe.out_features == 5
    for t in ("a", "b"):
        g = mmoe.gate_probabilities(f, t)
        assert g.shape == (7, 3) and (g > 0).all()
        torch.testing.assert_close(g.sum(-1), torch.ones(7))
        mix = sum(g[:, k : k + 1] * experts[:, k] for k in range(3))
        torch.testing.assert_close(mmoe.decode((f, experts), t), mix)
    assert not torch.allclose(mmoe.decode((f, experts), "a"), mmoe.decode((f, experts), "b"))
    last = {id(p) for p in mmoe.last_shared_parameters()}
    assert last == {id(p) for e in mmoe.experts for p in e[-1].parameters()}


@pytest.mark.parametrize("arch", ["hard", "mmoe", "adapters"])
def test_a_task_loss_reaches_only_shared_and_its_own_parameters(arch: str) -> None:
    kw = {"adapters": {"r": 2, "train_norms": True}} if arch == "adapters" else {}
    m = make_mtl("equal", architecture=arch, **kw)
    batch = full_batch(MultiTaskData(8))
    labels = gather_labels(batch, m.tasks)
    feats = m.arch.task_features(batch["x"], ["a"])
    task_loss(m.heads["a"](feats["a"]), labels["a"], "classification").backward()
    mine = {id(p) for p in [*m.arch.shared_parameters(), *m.task_parameters("a")]}
    for name, p in m.named_parameters():
        if p.requires_grad and id(p) not in mine:
            assert p.grad is None, name  # task b's head / gate / adapter untouched
    assert all(p.grad is not None for p in m.task_parameters("a"))
    assert m.task_parameters("b") and all(p.grad is None for p in m.task_parameters("b"))


def test_adapters_one_per_task_on_a_frozen_backbone() -> None:
    m = make_mtl("equal", architecture="adapters", adapters={"r": 2})
    names = [n for n, p in m.backbone.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-2] for n in names} == {"a", "b"}  # lora_A.<task>.weight
    assert not m.arch.shared_parameters()
    with torch.no_grad():  # LoRA's B starts at zero: make the adapters differ
        for p in m.arch.task_parameters("b"):
            p.add_(0.5)
    x = torch.randn(4, 6)
    m.eval()
    feats = m.arch.task_features(x, ["a", "b"])
    assert not torch.allclose(feats["a"], feats["b"])
    m.arch.activate("a")
    torch.testing.assert_close(m.backbone(x), feats["a"])
    torch.testing.assert_close(m.predict_task(x, "b"), m.predict(x)["b"])
    # frozen norm layers keep their running statistics in training mode
    m.train()
    assert not m.backbone.block1[1].training and m.heads.training


def test_gradient_methods_need_shared_parameters() -> None:
    with pytest.raises(ConfigError, match="has none trainable"):
        make_mtl("pcgrad", architecture="adapters", adapters={"r": 2})
    with pytest.raises(ConfigError, match="representation"):
        make_mtl("mgda", architecture="adapters", adapters={"r": 2, "train_norms": True})
    ok = make_mtl(
        {"name": "mgda", "params": {"space": "params"}},
        architecture="adapters",
        adapters={"r": 2, "train_norms": True},
    )
    assert ok.surgery is not None and ok.arch.shared_parameters()
    with pytest.raises(ConfigError, match="adapter settings"):
        make_mtl("equal", architecture="adapters", adapters={"rank": 2})
    with pytest.raises(ConfigError, match="matches no module"):
        make_mtl("equal", architecture="adapters", adapters={"target_modules": ["nope"]})


def test_hard_sharing_shapes_and_task_list() -> None:
    m = make_mtl("equal", tasks=[*TASKS, {"name": "c", "kind": "multilabel", "num_outputs": 4}])
    out = m.predict(torch.randn(5, 6))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"a": (5, 3), "b": (5,), "c": (5, 4)}
    last = {id(p) for p in m.arch.last_shared_parameters()}
    assert last == {id(p) for p in m.backbone.block2.parameters()}


@pytest.mark.integration
def test_task_adapters_on_the_packaged_minilm() -> None:
    from transferkit.backbones import create_backbone
    from transferkit.methods.multitask import MultiTask

    tasks = [
        {"name": "sent", "kind": "classification", "num_outputs": 2},
        {"name": "score", "kind": "regression", "num_outputs": 1},
    ]
    m = MultiTask(
        create_backbone("packaged:minilm-l6"),
        {"tasks": tasks, "architecture": "adapters", "adapters": {"r": 4}},
    )
    x = m.backbone.prepare(["a great movie", "terrible plot and acting", "loved it"])
    out = m.training_step(
        {"x": x, "y_sent": torch.tensor([1, 0, 1]), "y_score": torch.tensor([3.0, -3.0, 3.5])}
    )
    out["loss"].backward()
    for t in ("sent", "score"):  # every adapter trains, the base weights do not
        assert all(p.grad is not None for p in m.arch.task_parameters(t))
    assert not m.arch.shared_parameters()
    assert all(p.grad is None for p in m.backbone.parameters() if not p.requires_grad)
    grouped = {n for g in m.backbone.layer_groups() for n in g.param_names}
    trainable = {n for n, p in m.backbone.named_parameters() if p.requires_grad}
    assert trainable and trainable <= grouped  # the adapters of both tasks are grouped
