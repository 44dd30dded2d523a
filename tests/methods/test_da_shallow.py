"""Shallow DA on frozen features: CORAL and subspace alignment (maths, folding, toys, errors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from tests.conftest import TinyVectorBackbone
from transferkit.errors import ConfigError, DataError
from transferkit.methods import METHODS, da_shallow
from transferkit.methods.da_shallow import (
    AlignedProjection,
    coral_map,
    coral_transform,
    fold_projection,
    pca_basis,
    subspace_alignment_maps,
)
from transferkit.methods.domain_adaptation import DAParams
from transferkit.methods.feature_heads import KNNHead
from transferkit.methods.heads import make_head

Problem = tuple[np.ndarray, ...]


def _correlated(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) + rng.normal(size=dim)


def _draw(rng: np.random.Generator, n: int, v: np.ndarray, sep: float) -> tuple[np.ndarray, ...]:
    """Two Gaussian classes ``N(+-sep v, I)``, balanced in expectation."""
    y = rng.integers(0, 2, n)
    return rng.standard_normal((n, len(v))) + np.outer(2 * y - 1, v) * sep, y


def _splits(rng: np.random.Generator, v: np.ndarray, sep: float, n: int = 200) -> Problem:
    """(source train, labels, source val, labels, target (unmapped), labels)."""
    return (*_draw(rng, n, v, sep), *_draw(rng, n // 2, v, sep), *_draw(rng, n, v, sep))


def _rotated_scaled_copy(seed: int, dim: int = 10) -> Problem:
    """Target = source rotated (random generator, largest principal angle 30 deg), scaled per
    feature by exp(U(-0.5, 0.5)) and translated by 3 along the mapped class direction."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(dim)
    v /= np.linalg.norm(v)
    a = rng.standard_normal((dim, dim))
    a = (a - a.T) / np.linalg.norm(a - a.T, 2)
    rot, scale = scipy.linalg.expm(np.radians(30) * a), np.exp(rng.uniform(-0.5, 0.5, dim))
    xs, ys, xv, yv, xt, yt = _splits(rng, v, 2.0)
    u = (v @ rot.T) * scale
    return xs, ys, xv, yv, (xt @ rot.T) * scale + 3.0 * u / np.linalg.norm(u), yt


def _build(name: str, dim: int = 10, **kw: Any) -> Any:
    torch.manual_seed(0)
    cls = METHODS.get(name)
    return cls(TinyVectorBackbone(dim, dim), make_head(dim, 2), "classification", cls.Params(**kw))


def _target_acc(name: str, pb: Problem, **kw: Any) -> float:
    xs, ys, xv, yv, ft, yt = pb
    m = _build(name, xs.shape[1], **kw)
    if name == "linear_probe":
        m.fit_features(xs, ys, xv, yv)
    else:
        m.fit_features(xs, ys, xv, yv, f_target=ft)
    with torch.no_grad():
        pred = m.head(torch.as_tensor(ft, dtype=torch.float32)).argmax(-1).numpy()
    return float((pred == yt).mean())


def test_registered_closed_form_da_methods() -> None:
    for name in ("coral", "subspace_alignment"):
        cls = METHODS.get(name)
        assert cls.family == "domain-adaptation" and cls.closed_form
        assert "arxiv.org" in cls.paper and issubclass(cls.Params, DAParams)
        assert {"head", "strengths", "standardize"} <= set(cls.Params.model_fields)
        with pytest.raises(ValueError):
            cls.Params(bogus=1)
    assert METHODS.get("coral").Params().eps == 1.0
    assert METHODS.get("subspace_alignment").Params().d is None


@pytest.mark.parametrize("standardize", [True, False])
def test_coral_eps0_gives_exactly_the_target_mean_and_covariance(standardize: bool) -> None:
    rng = np.random.default_rng(0)
    f_s, f_t = _correlated(rng, 300, 6), 3.0 * _correlated(rng, 200, 6)
    out = coral_transform(f_s, f_t, eps=0.0, standardize=standardize)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.cov(f_t, rowvar=False), atol=1e-8)
    np.testing.assert_allclose(out.mean(0), f_t.mean(0), atol=1e-8)


@pytest.mark.parametrize("eps", [0.0, 1.0])
@pytest.mark.parametrize("standardize", [True, False])
def test_coral_is_the_identity_for_identical_domains(eps: float, standardize: bool) -> None:
    rng = np.random.default_rng(1)
    f = _correlated(rng, 150, 5)
    out = coral_transform(f, f[rng.permutation(150)], eps=eps, standardize=standardize)
    np.testing.assert_allclose(out, f, atol=1e-8)


def test_coral_eps_term_by_hand() -> None:
    """A whitened source (cov = I): A = (C_t + eps I)^1/2 / sqrt(1 + eps), so the mapped
    covariance is (C_t + eps I) / (1 + eps)."""
    rng = np.random.default_rng(2)
    raw = rng.standard_normal((400, 4))
    raw -= raw.mean(0)
    f_s = raw @ scipy.linalg.inv(scipy.linalg.sqrtm(np.cov(raw, rowvar=False)).real)
    np.testing.assert_allclose(np.cov(f_s, rowvar=False), np.eye(4), atol=1e-10)
    f_t, eps = _correlated(rng, 300, 4), 0.5
    out = coral_transform(f_s, f_t, eps=eps, standardize=False)
    want = (np.cov(f_t, rowvar=False) + eps * np.eye(4)) / (1 + eps)
    np.testing.assert_allclose(np.cov(out, rowvar=False), want, atol=1e-8)


def test_coral_singular_and_constant_features_stay_finite() -> None:
    rng = np.random.default_rng(3)
    f_s, f_t = _correlated(rng, 80, 4), _correlated(rng, 60, 4)
    f_s[:, 3] = f_s[:, 0] + f_s[:, 1]  # rank-deficient source covariance
    f_s[:, 2], f_t[:, 2] = 5.0, -1.0  # a constant feature in both domains
    for standardize in (True, False):
        a, b = coral_map(f_s, f_t, eps=0.0, standardize=standardize)
        out = f_s @ a + b
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out[:, 2], -1.0, atol=1e-8)


def test_subspace_alignment_is_identity_for_identical_domains() -> None:
    rng = np.random.default_rng(4)
    f = _correlated(rng, 120, 8)
    g = f[rng.permutation(120)]
    (_, _, x_s), (_, _, x_t) = pca_basis(f, 5), pca_basis(g, 5)
    np.testing.assert_allclose(np.abs(x_s.T @ x_t), np.eye(5), atol=1e-8)  # |M| = I
    proj_s, proj_t, mean_s, mean_t = subspace_alignment_maps(f, g, 5)
    np.testing.assert_allclose((f - mean_s) @ proj_s, (f - mean_t) @ proj_t, atol=1e-8)


def test_subspace_alignment_maps_shapes_default_d_and_orthonormal_target_basis() -> None:
    rng = np.random.default_rng(5)
    f_s, f_t = _correlated(rng, 9, 12), _correlated(rng, 30, 12)
    proj_s, proj_t, mean_s, _ = subspace_alignment_maps(f_s, f_t, standardize=False)
    assert proj_s.shape == proj_t.shape == (12, 8)  # d = min(50, D=12, N_s-1=8, N_t-1=29)
    np.testing.assert_allclose(proj_t.T @ proj_t, np.eye(8), atol=1e-10)
    np.testing.assert_allclose(mean_s, f_s.mean(0))
    _, _, x_s = pca_basis(f_s, 8, standardize=False)  # proj_s = X_s M with M = X_s^T X_t
    np.testing.assert_allclose(proj_s, x_s @ (x_s.T @ proj_t), atol=1e-10)


def test_folded_linear_equals_projection_then_head() -> None:
    rng = np.random.default_rng(6)
    torch.manual_seed(6)
    mean, proj = rng.normal(size=16), rng.normal(size=(16, 4)) / 4
    head = nn.Linear(4, 3)
    f = torch.as_tensor(rng.normal(size=(64, 16)), dtype=torch.float32)
    folded = fold_projection(head, mean, proj)
    assert isinstance(folded, nn.Linear) and folded.weight.shape == (3, 16)
    with torch.no_grad():
        want = nn.Sequential(AlignedProjection.from_arrays(mean, proj), head)(f)
        torch.testing.assert_close(folded(f), want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_both_beat_the_linear_probe_on_a_rotated_scaled_copy(seed: int) -> None:
    pb = _rotated_scaled_copy(seed)
    probe = _target_acc("linear_probe", pb)
    coral = _target_acc("coral", pb)
    sa = _target_acc("subspace_alignment", pb, d=1)
    assert probe < 0.7  # the shift hurts the source-trained probe
    assert coral > probe + 0.2 and coral > 0.9
    assert sa > probe + 0.2 and sa > 0.9


def test_coral_aligns_the_covariance_not_only_the_mean() -> None:
    """Target = source stretched x20 along a direction at cos 0.2 to the class axis: no mean
    shift, so moving the mean alone (eps -> inf) does nothing; the covariance map does."""
    rng = np.random.default_rng(0)
    v, e2 = np.eye(10)[0], np.eye(10)[1]
    n = 0.2 * v + np.sqrt(1 - 0.2**2) * e2
    xs, ys, xv, yv, xt, yt = _splits(rng, v, 1.5)
    pb = (xs, ys, xv, yv, xt @ (np.eye(10) + 19 * np.outer(n, n)), yt)
    probe = _target_acc("linear_probe", pb)
    mean_only = _target_acc("coral", pb, eps=1e8, standardize=False)
    coral = _target_acc("coral", pb, standardize=False)
    assert abs(mean_only - probe) < 0.03
    assert coral > probe + 0.1 and coral > 0.85


def test_subspace_alignment_follows_a_large_rotation_of_the_principal_axis() -> None:
    """The class axis (the top PC) turned by 80 deg: SA with d = 1 maps it back."""
    rng = np.random.default_rng(3)
    u = np.eye(10)[1:].T @ rng.standard_normal(9)
    u /= np.linalg.norm(u)
    e1 = np.eye(10)[0]
    rot = scipy.linalg.expm(np.radians(80) * (np.outer(u, e1) - np.outer(e1, u)))
    xs, ys, xv, yv, xt, yt = _splits(rng, e1, 3.0)
    pb = (xs, ys, xv, yv, xt @ rot.T, yt)
    assert _target_acc("subspace_alignment", pb, d=1) > _target_acc("linear_probe", pb) + 0.15


@pytest.mark.parametrize("name", ["coral", "subspace_alignment"])
def test_val_features_are_mapped_like_the_train_features(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    xs, ys, xv, yv, ft, _ = _rotated_scaled_copy(0)
    seen: dict[str, np.ndarray] = {}
    real = da_shallow.fit_head

    def spy(f_tr: np.ndarray, y_tr: Any, f_va: np.ndarray, y_va: Any, **kw: Any) -> Any:
        seen["train"], seen["val"] = f_tr, f_va
        return real(f_tr, y_tr, f_va, y_va, **kw)

    monkeypatch.setattr(da_shallow, "fit_head", spy)
    m = _build(name).fit_features(xs, ys, xv, yv, f_target=ft)
    if name == "coral":
        np.testing.assert_allclose(seen["train"], coral_transform(xs, ft), atol=1e-10)
        mapped_val = xv @ m.coral_weight_ + m.coral_bias_
    else:
        mapped_val = (xv - m.mean_s_) @ m.proj_s_
        assert seen["train"].shape == (len(xs), m.n_components_) == (len(xs), 10)
    np.testing.assert_allclose(seen["val"], mapped_val, atol=1e-10)
    assert m.selected_param_ == "C" and m.selected_strength_ in m.val_scores_


@pytest.mark.parametrize("name", ["coral", "subspace_alignment"])
def test_prototype_transductive_refines_with_the_target_rows(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refinement reads the (unlabelled) target features in the head's space, never the
    source val rows: CORAL's head reads raw target features, SA's the aligned coordinates."""
    xs, ys, xv, yv, ft, yt = _rotated_scaled_copy(0)
    seen: dict[str, Any] = {}
    real = da_shallow.fit_head

    def spy(*args: Any, **kw: Any) -> Any:
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(da_shallow, "fit_head", spy)
    m = _build(name, head="prototype_transductive").fit_features(xs, ys, xv, yv, f_target=ft)
    want = ft if name == "coral" else (ft - m.mean_t_) @ m.proj_t_
    np.testing.assert_allclose(seen["unlabelled"], want, atol=1e-12)
    assert len(seen["unlabelled"]) == len(ft) != len(xv)
    info = m.head_info_["unlabelled"]
    assert info["rows"] == len(ft) and info["from"].startswith("target features")
    assert info["prototype_shift"] > 0  # the target moved the prototypes
    with torch.no_grad():
        pred = m.head(torch.as_tensor(ft, dtype=torch.float32)).argmax(-1).numpy()
    assert (pred == yt).mean() > 0.9  # 0.94 (coral), 0.945 (subspace alignment)
    plain = _build(name, head="prototype").fit_features(xs, ys, xv, yv, f_target=ft)
    assert plain.head_info_["unlabelled"] is None


def test_subspace_alignment_knn_head_is_projection_then_knn_and_reloads() -> None:
    xs, ys, xv, yv, ft, yt = _rotated_scaled_copy(1)
    m = _build("subspace_alignment", head="knn", d=1).fit_features(xs, ys, xv, yv, f_target=ft)
    proj, knn = m.head
    assert isinstance(proj, AlignedProjection) and isinstance(knn, KNNHead)
    f = torch.as_tensor(ft, dtype=torch.float32)
    fresh = _build("subspace_alignment", head="knn", d=1)
    fresh.head.load_state_dict(m.head.state_dict())
    with torch.no_grad():
        out = m.head(f)
        torch.testing.assert_close(out, knn(proj(f)))
        torch.testing.assert_close(fresh.head(f), out)
    assert (out.argmax(-1).numpy() == yt).mean() > 0.9


def test_predict_runs_the_backbone_then_the_target_head() -> None:
    rng = np.random.default_rng(7)
    x_s, y_s = _draw(rng, 60, np.eye(6)[0], 2.0)
    x_t = _draw(rng, 40, np.eye(6)[0], 2.0)[0] + 1.0
    torch.manual_seed(0)
    m = METHODS.get("coral")(
        TinyVectorBackbone(6, 8), make_head(8, 2), "classification", METHODS.get("coral").Params()
    )
    f_s, f_t = m.extract(x_s), m.extract(x_t)
    m.fit_features(f_s[:40], y_s[:40], f_s[40:], y_s[40:], f_target=f_t)
    xt = torch.as_tensor(x_t, dtype=torch.float32)
    with torch.no_grad():
        logits = m.eval().predict(xt)
        torch.testing.assert_close(logits, m.head(torch.as_tensor(f_t)), atol=1e-5, rtol=1e-5)
    assert logits.shape == (40, 2)


def _bad_call(case: str) -> tuple[str, dict[str, Any]]:
    rng = np.random.default_rng(8)
    xs, ys = _draw(rng, 30, np.eye(10)[0], 2.0)
    args: dict[str, Any] = {"f_train": xs, "y_train": ys, "f_val": xs, "y_val": ys}
    name = "coral"
    if case == "missing target":
        args["f_target"] = None
    elif case == "target D":
        args["f_target"] = xs[:, :7]
    elif case == "one target row":
        args["f_target"] = xs[:1]
    elif case == "nan":
        args["f_train"], args["f_target"] = xs.copy(), xs
        args["f_train"][4, 2] = np.nan
    elif case == "labels":
        args["f_target"], args["y_train"] = xs, ys[:-1]
    elif case == "d too big":
        name, args["f_target"] = "subspace_alignment", xs[:5]
    return name, args


@pytest.mark.parametrize(
    ("case", "where"),
    [
        ("missing target", "fit_features(f_target"),
        ("target D", "target features"),
        ("one target row", "target features"),
        ("nan", "row 4, column 2"),
        ("labels", "source train"),
        ("d too big", "params.d"),
    ],
)
def test_bad_inputs_raise_data_errors_with_where_and_fix(case: str, where: str) -> None:
    name, args = _bad_call(case)
    kw = {"d": 8} if name == "subspace_alignment" else {}
    with pytest.raises(DataError) as info:
        _build(name, **kw).fit_features(**args)
    assert where in (info.value.where or "") and info.value.fix


def test_function_and_task_errors() -> None:
    rng = np.random.default_rng(9)
    with pytest.raises(DataError, match="expected"):
        coral_transform(rng.normal(size=(20, 4)), rng.normal(size=(20, 5)))
    with pytest.raises(DataError, match="at least 2"):
        subspace_alignment_maps(rng.normal(size=(1, 4)), rng.normal(size=(20, 4)))
    with pytest.raises(DataError, match="eps"):
        coral_map(rng.normal(size=(20, 4)), rng.normal(size=(20, 4)), eps=-1.0)
    cls = METHODS.get("coral")
    with pytest.raises(ConfigError, match="classification"):
        cls(TinyVectorBackbone(4, 4), make_head(4, 1), "regression", cls.Params())
