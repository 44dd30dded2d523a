"""Gradient surgery through the method: the written .grad against independent autograd."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from tests.mtl.helpers import MultiTaskData, collate, full_batch, make_ln_mtl, make_mtl
from transferkit.errors import TrainingError
from transferkit.methods.multitask import MultiTask
from transferkit.mtl import gradients as gm
from transferkit.mtl.tasks import gather_labels, head_outputs, task_loss


@dataclass
class FakeScaler:
    scale: float

    def get_scale(self) -> float:
        return self.scale


@dataclass
class FakeAccelerator:
    """What the surgery reads from an accelerate.Accelerator. ``copies`` identical
    processes: ``reduce`` sums ``copies`` equal tensors."""

    gradient_accumulation_steps: int = 1
    sync_gradients: bool = True
    num_processes: int = 1
    scaler: Any = None

    def reduce(self, t: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        assert reduction == "sum"
        return t * self.num_processes


def task_grads(m: MultiTask, batch: dict[str, Any]) -> dict[str, list[torch.Tensor | None]]:
    """Each task's gradient w.r.t. shared + own params, from a fresh forward."""
    labels = gather_labels(batch, m.tasks)
    out = {}
    for t in labels:
        feats = m.arch.task_features(batch["x"], [t])[t]
        loss = task_loss(head_outputs(m.heads[t](feats), m.specs[t]), labels[t], m.specs[t].kind)
        loss = loss * m.specs[t].loss_weight
        params = [*m.arch.shared_parameters(), *m.task_parameters(t)]
        out[t] = list(torch.autograd.grad(loss, params, allow_unused=True))
    return out


def flat(gs: list[torch.Tensor | None]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in gs if g is not None])


@pytest.mark.parametrize("name", ["pcgrad", "cagrad", "nash", "mgda_params"])
def test_params_space_writes_the_combination_of_task_gradients(name: str) -> None:
    spec: Any = {"name": "mgda", "params": {"space": "params"}} if name == "mgda_params" else name
    m = make_mtl(
        spec,
        tasks=[
            {"name": "a", "kind": "classification", "num_outputs": 3},
            {"name": "b", "kind": "regression", "num_outputs": 1, "loss_weight": 2.0},
        ],
    )
    m.eval()  # BatchNorm in eval: the reference forward sees the same statistics
    batch = full_batch(MultiTaskData(16))
    ref = task_grads(m, batch)
    ns = len(m.arch.shared_parameters())
    g = torch.stack([flat(ref[t][:ns]) for t in ("a", "b")])
    extra = m.backward(m.training_step(batch))
    w = np.array([extra["weight_a"], extra["weight_b"]])
    if name != "pcgrad":  # deterministic: the weights are the method's own on K
        np.testing.assert_allclose(w, m.weighting.coefficients(gm.gram_matrix(g)), rtol=1e-5)
    got = flat([p.grad for p in m.arch.shared_parameters()])
    torch.testing.assert_close(got, torch.as_tensor(w, dtype=torch.float32) @ g)
    for t in ("a", "b"):  # heads get their own task's gradient
        torch.testing.assert_close(flat([p.grad for p in m.task_parameters(t)]), flat(ref[t][ns:]))
    cos = float(torch.nn.functional.cosine_similarity(g[0], g[1], dim=0))
    assert extra["gradcos_a_b"] == pytest.approx(cos, rel=1e-4)


@pytest.mark.parametrize("arch", ["hard", "mmoe"])
def test_mgda_ub_uses_representation_gradients(arch: str) -> None:
    m = make_mtl("mgda", architecture=arch)
    m.eval()
    batch = full_batch(MultiTaskData(16))
    labels = gather_labels(batch, m.tasks)
    rep = m.arch.encode(batch["x"])
    leaf = tuple(r.detach().requires_grad_() for r in rep)
    losses = {
        t: task_loss(
            head_outputs(m.heads[t](m.arch.decode(leaf, t)), m.specs[t]), labels[t], m.specs[t].kind
        )
        for t in ("a", "b")
    }
    gz = torch.stack(
        [flat(list(torch.autograd.grad(v, leaf, retain_graph=True))) for v in losses.values()]
    )
    k = gm.gram_matrix(gz)
    alpha = np.clip((k[1, 1] - k[0, 1]) / (k[0, 0] - 2 * k[0, 1] + k[1, 1]), 0, 1)
    ref = task_grads(m, batch)
    ns = len(m.arch.shared_parameters())
    want = alpha * flat(ref["a"][:ns]) + (1 - alpha) * flat(ref["b"][:ns])
    extra = m.backward(m.training_step(batch))
    assert extra["weight_a"] == pytest.approx(alpha, rel=1e-5)
    assert extra["weight_a"] + extra["weight_b"] == pytest.approx(1.0)
    torch.testing.assert_close(flat([p.grad for p in m.arch.shared_parameters()]), want)
    for t in ("a", "b"):
        torch.testing.assert_close(flat([p.grad for p in m.task_parameters(t)]), flat(ref[t][ns:]))


@pytest.mark.parametrize("name", ["pcgrad", "equal"])
def test_absent_task_gets_no_loss_and_its_head_no_gradient(name: str) -> None:
    m = make_mtl(name)
    data = MultiTaskData(8)
    batch = full_batch(data)
    batch["m_b"] = torch.zeros(8, dtype=torch.bool)
    out = m.training_step(batch)
    assert "loss_b" not in out and float(out["loss"].detach()) == pytest.approx(
        float(out["loss_a"])
    )
    extra = m.backward(out)
    assert all(p.grad is None for p in m.heads["b"].parameters())
    assert all(p.grad is not None for p in m.heads["a"].parameters())
    assert not any(k.endswith("_b") or "gradcos" in k for k in extra)
    nothing = {"x": batch["x"], "y_b": batch["y_b"], "m_b": batch["m_b"]}
    m.zero_grad(set_to_none=True)
    out = m.training_step(nothing)  # no task labelled: a step that changes nothing
    assert float(out["loss"].detach()) == 0 and m.backward(out) == {}
    assert all(p.grad is None for p in m.parameters())


def test_accumulation_over_two_half_batches_equals_one_batch() -> None:
    data = MultiTaskData(8, masked=False)
    one, two = make_ln_mtl("pcgrad"), make_ln_mtl("pcgrad")
    extra = one.backward(one.training_step(full_batch(data)))
    acc = FakeAccelerator(gradient_accumulation_steps=2, sync_gradients=False)
    halves = [collate([data[i] for i in range(k, k + 4)]) for k in (0, 4)]
    assert two.backward(two.training_step(halves[0]), acc) == {}  # mid-window: no surgery
    assert all(p.grad is None for p in two.arch.shared_parameters())
    acc.sync_gradients = True
    extra2 = two.backward(two.training_step(halves[1]), acc)
    assert extra2.keys() == extra.keys()
    for p, q in zip(one.parameters(), two.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("name", ["pcgrad", "mgda"])
def test_identical_processes_and_loss_scale_give_the_single_process_gradient(name: str) -> None:
    batch = full_batch(MultiTaskData(8))
    batch["m_b"] = torch.zeros(8, dtype=torch.bool)  # head b: None on every process
    single, multi, scaled = make_mtl(name), make_mtl(name), make_mtl(name)
    single.backward(single.training_step(batch))
    multi.backward(multi.training_step(batch), FakeAccelerator(num_processes=2))
    scaled.backward(scaled.training_step(batch), FakeAccelerator(scaler=FakeScaler(1024.0)))
    for p, q, r in zip(single.parameters(), multi.parameters(), scaled.parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None and r.grad is None
            continue
        torch.testing.assert_close(q.grad, p.grad)
        torch.testing.assert_close(r.grad, 1024.0 * p.grad)


def test_manual_backward_needs_a_training_step() -> None:
    m = make_mtl("pcgrad")
    assert make_mtl("equal").manual_backward is None and callable(m.manual_backward)
    with pytest.raises(TrainingError, match="without a training_step"):
        m.manual_backward({})
