"""Few-shot prototype heads: class means, logit formulas, transductive refinement, state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.special import logsumexp
from sklearn.neighbors import NearestCentroid

from tests.conftest import TinyVectorBackbone
from transferkit.errors import ConfigError, DataError
from transferkit.methods.feature_heads import FeatureHeadParams, build_head, fit_head
from transferkit.methods.heads import make_head
from transferkit.methods.linear_probe import LinearProbe, LinearProbeParams
from transferkit.methods.prototypes import (
    PrototypeFit,
    PrototypeHead,
    class_means,
    fit_prototypes,
    refine_prototypes,
)

# four support rows in two classes; means and spread are exact in binary floating point
F_HAND = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0], [7.0, 2.0]], np.float32)
Y_HAND = np.array([0, 0, 1, 1])


def _fit(
    f: np.ndarray, y: np.ndarray, f_va: np.ndarray, y_va: np.ndarray, k: int, **kw: Any
) -> PrototypeFit:
    kw = {"distances": ["euclidean"], "temperatures": [1.0], **kw}
    return fit_prototypes(f, y, f_va, y_va, num_classes=k, **kw)


def _overlapping(n: int = 30, k: int = 3, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Three heavily overlapping Gaussian classes: soft assignments are far from one-hot."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % k
    return rng.normal(size=(k, d))[y] * 0.8 + rng.normal(size=(n, d)) + 3.0, y


def _biased_two_clusters(seed: int, n_sup: int = 5, n_un: int = 200) -> tuple[np.ndarray, ...]:
    """Clusters at (-2, 0) and (2, 0); the support of class 0 comes from the top of its
    cluster and that of class 1 from the bottom, so the nearest-mean boundary is tilted."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0]])
    ys = np.repeat([0, 1], n_sup)
    bias = np.where(ys[:, None] == 0, [1.0, 2.0], [-1.0, -2.0])
    fs = centres[ys] + bias + rng.normal(size=(2 * n_sup, 2)) * 0.3
    yu = rng.integers(0, 2, n_un)
    fu = centres[yu] + rng.normal(size=(n_un, 2))
    return fs.astype(np.float32), ys, fu.astype(np.float32), yu, centres


def test_head_equals_class_means_hand_computed() -> None:
    fit = _fit(F_HAND, Y_HAND, F_HAND, Y_HAND, 3)
    h = fit.head
    np.testing.assert_array_equal(h.prototypes.numpy(), [[2, 3], [6, 1], [0, 0]])
    np.testing.assert_array_equal(h.mu.numpy(), [4, 2])
    assert h.present.tolist() == [True, True, False]
    # centred rows (-3,0) (-1,2) (1,-2) (3,0): squared norms 9 5 5 9, spread s = 7
    assert float(h.temperature) == 7.0 and fit.info["temperature_effective"] == 7.0
    assert fit.info["support_per_class"] == [2, 2, 0] and fit.info["unlabelled"] is None
    with torch.no_grad():
        out = h(torch.tensor([[0.0, 0.0], [50.0, -40.0]]))
    assert out[:, 2].eq(torch.finfo(torch.float32).min).all()  # absent: never predicted
    assert out.argmax(-1).tolist() == [0, 1]
    # agrees with scikit-learn's nearest centroid on random data
    rng = np.random.default_rng(1)
    f, y = (rng.normal(size=(40, 6)) * 5).astype(np.float32), rng.integers(0, 4, 40)
    ref = NearestCentroid().fit(f, y)
    h = _fit(f, y, f, y, 4).head
    np.testing.assert_allclose(h.prototypes.numpy(), ref.centroids_, rtol=1e-6)
    f_te = (rng.normal(size=(50, 6)) * 5).astype(np.float32)
    with torch.no_grad():
        assert h(torch.as_tensor(f_te)).argmax(-1).tolist() == ref.predict(f_te).tolist()


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_logits_match_the_formula(distance: Any) -> None:
    rng = np.random.default_rng(2)
    f, p, mu = rng.normal(size=(7, 4)), rng.normal(size=(3, 4)) * 2, rng.normal(size=4)
    tau = 0.37
    head = PrototypeHead(4, 3).set_state(p, mu, tau, distance, np.ones(3, bool))
    with torch.no_grad():
        got = head(torch.as_tensor(f, dtype=torch.float32)).double().numpy()
    expect = np.empty((7, 3))
    for i in range(7):
        for k in range(3):
            a, b = f[i] - mu, p[k] - mu
            if distance == "euclidean":
                expect[i, k] = -((f[i] - p[k]) ** 2).sum() / tau
            else:
                expect[i, k] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) / tau
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


def _naive_soft_kmeans(
    f: np.ndarray, y: np.ndarray, u: np.ndarray, k: int, tau: float
) -> np.ndarray:
    """Ren et al.'s update without the drag correction, one step, euclidean."""
    m, n = class_means(f, y, k)
    w = torch.softmax(-(torch.cdist(torch.as_tensor(u), torch.as_tensor(m)) ** 2) / tau, -1)
    w = w.numpy()
    return (m * n[:, None] + w.T @ u) / (n + w.sum(0))[:, None]


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_transductive_fixed_point_when_unlabelled_equal_support(distance: Any) -> None:
    f, y = _overlapping()
    means, _ = class_means(f, y, 3)
    unl = f[np.random.default_rng(3).permutation(len(f))]  # same rows, another order
    for tau in (0.05, 1.0, 20.0):
        p = refine_prototypes(
            f, y, unl, num_classes=3, mu=f.mean(0), distance=distance, temperature=tau, steps=5
        )
        np.testing.assert_allclose(p, means, atol=1e-12)
    # the uncorrected soft k-means update does move them: the check above can fail
    assert np.abs(_naive_soft_kmeans(f, y, unl, 3, 20.0) - means).max() > 0.05
    # end to end: the transductive head equals the plain one
    f32, val = f.astype(np.float32), slice(0, 12)
    params = FeatureHeadParams(head="prototype_transductive", prototype_distances=[distance])
    kw = {"task": "classification", "num_outputs": 3}
    trans = fit_head(f32, y, f32[val], y[val], params=params, unlabelled=unl, **kw)
    params = params.model_copy(update={"head": "prototype"})
    plain = fit_head(f32, y, f32[val], y[val], params=params, **kw)
    torch.testing.assert_close(trans.module.prototypes, plain.module.prototypes)
    assert trans.selected == plain.selected and trans.info["unlabelled"]["rows"] == 30
    assert trans.info["unlabelled"]["prototype_shift"] < 1e-6


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_transductive_refinement_fixes_a_biased_support(distance: str) -> None:
    for seed in range(3):
        fs, ys, fu, yu, centres = _biased_two_clusters(seed)
        kw = {"distances": [distance], "temperatures": [0.1, 0.3, 1.0]}
        plain = _fit(fs, ys, fu[:20], yu[:20], 2, **kw)
        trans = _fit(fs, ys, fu[:20], yu[:20], 2, unlabelled=fu, **kw)

        with torch.no_grad():
            acc_plain, acc_trans = (
                float((h(torch.as_tensor(fu)).argmax(-1).numpy() == yu).mean())
                for h in (plain.head, trans.head)
            )
        assert acc_plain < 0.85 and acc_trans > acc_plain + 0.1
        err = [np.abs(h.prototypes.numpy() - centres).max() for h in (plain.head, trans.head)]
        assert err[1] < 0.5 * err[0]
        assert trans.info["unlabelled"]["from"] == "unlabelled features"


def test_distance_and_temperature_are_chosen_on_val() -> None:
    # A and B share a direction from the mean, C is opposite: cosine cannot tell A from B
    f = np.array([[1, 0], [1, 0.2], [4, 0], [4, 0.2], [-5, 0], [-5, 0.2]], np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    f_va = np.array([[0.8, 0.1], [4.5, 0.1], [-4, 0.1], [3.6, 0.1]], np.float32)
    y_va = np.array([0, 1, 2, 1])
    kw = {"distances": ["cosine", "euclidean"], "temperatures": [0.1, 1.0, 10.0]}
    fit = _fit(f, y, f_va, y_va, 3, **kw)
    assert fit.distance == "euclidean" and fit.val_score == 1.0
    cos_pred = [0, 0, 2, 0]  # cos ties between A and B resolve to the first class
    assert fit.val_scores["cosine, tau=1"] == np.mean(np.array(cos_pred) == y_va)
    # accuracy ties across tau; the lowest validation NLL decides (hand formula)
    means = class_means(f, y, 3)[0]
    s = ((f - f.mean(0)) ** 2).sum(1).mean()
    nll = {}
    for tau in (0.1, 1.0, 10.0):
        logits = -((f_va[:, None, :] - means[None]) ** 2).sum(-1) / (tau * s)
        logp = logits - logsumexp(logits, axis=1, keepdims=True)
        nll[tau] = -logp[np.arange(4), y_va].mean()
    assert len(set(np.round(list(nll.values()), 6))) == 3  # the NLLs do differ
    assert fit.temperature == min(nll, key=nll.__getitem__)


def _probe(head: str, task: str = "classification", **kw: object) -> LinearProbe:
    torch.manual_seed(0)
    params = LinearProbeParams(head=head, **kw)
    return LinearProbe(TinyVectorBackbone(), make_head(8, 3), task, params)  # type: ignore[arg-type]


def test_linear_probe_end_to_end_and_state_dict_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    y = np.arange(150) % 3
    x = (rng.normal(size=(3, 6))[y] * 3 + rng.normal(size=(150, 6)) * 0.5).astype(np.float32)
    for head in ("prototype", "prototype_transductive"):
        p = _probe(head)
        assert p.uses_unlabelled == (head == "prototype_transductive")
        f = p.extract(x)
        p.fit_features(f[:30], y[:30], f[30:60], y[30:60], unlabelled=f[60:], unlabelled_from="u")
        p.eval()
        with torch.no_grad():
            got = p.predict(p.backbone.prepare(x[60:])).numpy()
            assert (got.argmax(1) == y[60:]).mean() > 0.9
            np.testing.assert_allclose(got, p.head(torch.as_tensor(f[60:])).numpy(), atol=1e-5)
        assert p.selected_param_ == "temperature" and p.selected_strength_ in (0.03, 0.1, 0.3, 1.0)
        unl = p.head_info_["unlabelled"]
        if head == "prototype":
            assert unl is None
        else:
            assert (unl["from"], unl["rows"], unl["steps"]) == ("u", 90, 10)
        # the runner saves the head with safetensors; a fresh probe (other default distance)
        # loads it and predicts the same
        path = str(tmp_path / f"{head}.safetensors")
        save_file({k: v.contiguous() for k, v in p.head.state_dict().items()}, path)
        other = "euclidean" if p.head.distance == "cosine" else "cosine"
        fresh = _probe(head, prototype_distances=[other])
        assert fresh.head.distance == other
        fresh.head.load_state_dict(load_file(path))
        assert fresh.head.distance == p.head.distance
        fresh.eval()
        with torch.no_grad():
            torch.testing.assert_close(
                fresh.predict(torch.as_tensor(x)), p.predict(torch.as_tensor(x))
            )


def test_transductive_without_unlabelled_uses_val_inputs() -> None:
    f, y = _overlapping(60, d=8)
    f = f.astype(np.float32)
    p = _probe("prototype_transductive")
    p.fit_features(f[:30], y[:30], f[30:], y[30:])
    assert p.head_info_["unlabelled"]["from"] == "val inputs (labels unused)"
    assert p.head_info_["unlabelled"]["rows"] == 30


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(
        ConfigError, match="nearest-class-mean classifier but the task is regression"
    ):
        _probe("prototype", task="regression")
    with pytest.raises(ConfigError, match=r"Where: method\.params\.head"):
        fit_head(
            F_HAND, Y_HAND.astype(np.float32), F_HAND, Y_HAND.astype(np.float32),
            task="regression", num_outputs=1, params=FeatureHeadParams(head="prototype"),
        )  # fmt: skip
    with pytest.raises(ConfigError):
        build_head("prototype", 4, 1, "regression", FeatureHeadParams())
    bad = F_HAND.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="row 2, column 1"):
        _fit(bad, Y_HAND, F_HAND, Y_HAND, 2)
    with pytest.raises(DataError, match="labels"):
        _fit(F_HAND, Y_HAND[:3], F_HAND, Y_HAND, 2)
    with pytest.raises(DataError, match=r"\[N, 2\]"):
        _fit(F_HAND, Y_HAND, F_HAND, Y_HAND, 2, unlabelled=np.zeros((3, 5)))
    p = _probe("prototype_transductive")
    f = p.extract(np.zeros((4, 6), np.float32))
    with pytest.raises(ConfigError, match="unlabelled"):
        p.fit_features(f, Y_HAND, f, Y_HAND, unlabelled=np.zeros((3, 2)))
    with pytest.raises(ValueError):
        FeatureHeadParams(head="prototype", prototype_temperatures=[0.0])


def test_runner_refines_transductive_prototypes_on_the_unlabelled_pool(tmp_path) -> None:
    import json

    from transferkit.experiment import run

    cfg = {
        "name": "proto",
        "data": {"target": "digits", "label_budget": 5, "max_eval_examples": 100},
        "model": {"backbone": "tk:smallcnn", "backbone_options": {"width": 8, "depth": 2}},
        "method": {"name": "linear_probe", "params": {"head": "prototype_transductive"}},
        "baselines": {"enabled": False},
        "seeds": [0],
        "report": False,
    }
    run(cfg, out=tmp_path / "run", quiet=True)
    rec = json.loads((tmp_path / "run" / "stages" / "target__seed0.json").read_text())
    text = json.dumps(rec)
    assert "unlabelled pool" in text and "left over by data.label_budget" in text
