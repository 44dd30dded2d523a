"""The regularisers against forgetting inside ``finetune``: values, logging, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tests.finetune.helpers import batch, fit, make_finetune
from transferkit.errors import ConfigError
from transferkit.finetune.delta_fit import fit_probe_head
from transferkit.losses.lwf import lwf_loss


def _sgd(m: Any, steps: int = 5, lr: float = 0.2) -> None:
    opt = torch.optim.SGD(m.param_groups(lr), lr=lr)
    m.train()
    for i in range(steps):
        opt.zero_grad()
        m.training_step(batch(seed=i + 1))["loss"].backward()
        opt.step()


def test_l2sp_is_zero_at_the_start_and_matches_the_formula_after_steps() -> None:
    m = make_finetune(l2sp={"alpha": 0.5, "beta": 0.0})
    out = m.training_step(batch())
    assert out["l2sp"].item() == 0.0 and torch.equal(out["loss"], out["task_loss"])
    m = make_finetune(l2sp={"alpha": 0.5, "beta": 0.3})
    start = {k: v.clone() for k, v in m.backbone.named_parameters()}
    head_sq = sum(p.pow(2).sum() for p in m.head.parameters())
    assert m.training_step(batch())["l2sp"].item() == pytest.approx(0.15 * head_sq.item())
    assert all(g["weight_decay"] == 0.0 for g in m.param_groups(0.1))
    _sgd(m)
    drift = sum((p - start[n]).pow(2).sum() for n, p in m.backbone.named_parameters())
    head_sq = sum(p.pow(2).sum() for p in m.head.parameters())
    out = m.training_step(batch())
    assert drift.item() > 0
    assert out["l2sp"].item() == pytest.approx(0.25 * drift.item() + 0.15 * head_sq.item())


def test_terms_are_zero_on_identical_copies_and_positive_after_training() -> None:
    m = make_finetune(
        source_head=True,
        delta={"alpha": 2.0, "layers": [0, 1]},
        bss={"eta": 0.5, "k": 2},
        lwf={"lambda": 3.0, "temperature": 2.0},
    )
    b = batch()
    m.eval()  # live BatchNorm uses running stats like the frozen copies: outputs identical
    out = m.training_step(b)
    assert out["delta"].item() == 0.0 and out["lwf"].item() == 0.0
    _sgd(m)
    m.eval()
    out = m.training_step(b)
    assert {"loss", "task_loss", "delta", "bss", "lwf"} == set(out)
    assert all(out[k].item() > 0 for k in ("delta", "bss", "lwf"))
    total = out["task_loss"] + out["delta"] + out["bss"] + out["lwf"]
    assert out["loss"].item() == pytest.approx(total.item())
    with torch.no_grad():  # hand-computed BSS and LwF
        f = m.backbone(b["x"])
        sigma = torch.linalg.svdvals(f)
        assert out["bss"].item() == pytest.approx(0.5 * sigma[-2:].pow(2).sum().item(), rel=1e-5)
        assert m.source_head is not None and m.reg.lwf is not None
        ref = lwf_loss(m.source_head(f), m.reg.lwf.original(b["x"]), T=2.0)
        assert out["lwf"].item() == pytest.approx(3.0 * ref.item(), rel=1e-5)
    names = [g["name"] for g in m.param_groups(0.1)]
    assert names == ["head", "backbone", "source_head"]


def test_delta_shares_one_forward_pass_with_the_prediction() -> None:
    m = make_finetune(delta={"layers": [0]})
    calls: list[str] = []
    bb = m.backbone
    fwd, inter = bb.forward, bb.forward_intermediates
    bb.forward = lambda x: calls.append("forward") or fwd(x)  # type: ignore[method-assign]

    def spy(x: Any, idx: Any) -> Any:
        calls.append(f"intermediates{list(idx)}")
        return inter(x, idx)

    bb.forward_intermediates = spy  # type: ignore[method-assign]
    out = m.training_step(batch())
    assert calls == ["intermediates[0, -1]"] and out["delta"].requires_grad


def test_supervised_delta_attention_is_fitted_when_training_starts(tmp_path: Path) -> None:
    m = make_finetune(delta={"layers": [0, -1], "attention": "supervised"})
    assert m.reg.delta is not None and not m.reg.delta.attention_fitted
    fit(m, tmp_path, epochs=1, save_checkpoints=False)
    weights = m.reg.delta.channel_weights()
    assert [w.shape for w in weights] == [torch.Size([8]), torch.Size([8])]
    assert all(torch.allclose(w.sum(), torch.tensor(1.0)) for w in weights)
    assert all(w.min() > 0 for w in weights)
    state = m.state_dict()  # fitted weights travel with the checkpoint
    fresh = make_finetune(delta={"layers": [0, -1], "attention": "supervised"})
    fresh.load_state_dict(state)
    assert fresh.reg.delta is not None and fresh.reg.delta.attention_fitted


@pytest.mark.parametrize("classes", [2, 3])
def test_probe_head_folds_sklearn_logistic_regression(classes: int) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (60,), generator=g) * 2 + 1  # labels 1, 3, (5): re-indexed
    f = torch.randn(60, 5, generator=g) * 3 + y[:, None].float()
    head, targets, loss_fn = fit_probe_head(f, y, "classification")
    assert targets.tolist() == ((y - 1) // 2).tolist()
    fn = f.double().numpy()
    z = (fn - fn.mean(0)) / (fn.std(0) + 1e-6)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(z, y.numpy()).predict_proba(z)
    with torch.no_grad():
        prob = torch.softmax(head(f), 1).numpy()
    np.testing.assert_allclose(prob, ref, atol=1e-4)
    assert loss_fn(head(f), targets).shape == (60,)


def test_lwf_without_a_source_head_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="source task's head") as err:
        make_finetune(lwf={"lambda": 1.0})
    assert err.value.where == "method.params.lwf" and "checkpoint" in (err.value.fix or "")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"delta": {"layers": [2]}}, "out of range for 2 layer groups"),
        ({"bss": {"k": 9}}, "exceeds the feature dimension 8"),
    ],
)
def test_bad_regulariser_settings(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_finetune(**params)


@pytest.mark.parametrize(
    "params",
    [
        {"l2sp": {"alpha": -1}},
        {"bss": {"k": 0}},
        {"delta": {"attention": "unsupervised"}},
        {"lwf": {"lamda": 1}},
        {"peft": {"kind": "lora"}, "freeze": 1},
        {"peft": {"kind": "lora"}, "gradual_unfreeze_every": 1},
    ],
)
def test_invalid_params_are_rejected_by_the_schema(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_finetune(**params)


def test_scalars_are_logged(tmp_path: Path) -> None:
    m = make_finetune(l2sp={}, bss={})
    res = fit(m, tmp_path, epochs=1)
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "train"]
    assert steps and all({"task_loss", "l2sp", "bss"} <= set(r) for r in steps)
    assert {"train_task_loss", "train_l2sp", "train_bss"} <= set(res.history[0])
    assert res.history[0]["train_loss"] == pytest.approx(
        sum(res.history[0][k] for k in ("train_task_loss", "train_l2sp", "train_bss"))
    )
