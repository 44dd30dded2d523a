"""Feature heads of the linear_probe method: sklearn equivalence, val-only tuning, state."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestCentroid
from sklearn.svm import LinearSVC, LinearSVR

from tests.conftest import TinyVectorBackbone
from transferkit.errors import ConfigError, DataError
from transferkit.methods.feature_heads import FeatureHeadParams, KNNHead, build_head, fit_head
from transferkit.methods.heads import make_head
from transferkit.methods.linear_probe import LinearProbe, LinearProbeParams
from transferkit.methods.prototypes import PrototypeHead

HEADS = ["logreg", "ridge", "linear_svm", "mlp", "knn"]
PROTOTYPE_HEADS = ["prototype", "prototype_transductive"]  # classification only


def _flat_weights_hash(backbone: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in backbone.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny problems: intra-op threads only add contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blobs(n: int, classes: int, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian blobs with a non-trivial offset and scale per feature."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, d)) * 4
    y = np.arange(n) % classes
    f = centres[y] + rng.normal(size=(n, d))
    scale, offset = np.linspace(0.5, 20, d), np.linspace(-30, 30, d)
    return (f * scale + offset).astype(np.float32), y.astype(np.int64)


def _probe(head: str, out: int, task: str = "classification", **kw: object) -> LinearProbe:
    torch.manual_seed(0)
    if head == "mlp":  # small and short: tests stay fast
        kw = {"mlp_hidden": 16, "mlp_max_epochs": 60, "mlp_lr": 3e-2, **kw}
    params = LinearProbeParams(head=head, seed=0, **kw)
    return LinearProbe(TinyVectorBackbone(), make_head(8, out), task, params)


def _std(f_tr: np.ndarray, f: np.ndarray) -> np.ndarray:
    mu, sd = f_tr.astype(np.float64).mean(0), f_tr.astype(np.float64).std(0) + 1e-6
    return ((f - mu) / sd).astype(np.float32)


def _head_out(p: LinearProbe, f: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return p.head(torch.as_tensor(f)).numpy()


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("head", HEADS + PROTOTYPE_HEADS)
def test_head_accuracy_and_sklearn_equivalence(head: str, classes: int) -> None:
    f_tr, y_tr = _blobs(150, classes)
    f_va, y_va = _blobs(60, classes, seed=1)
    f_te, y_te = _blobs(90, classes, seed=2)
    p = _probe(head, classes, strengths=[0.1, 1.0])
    p.fit_features(f_tr, y_tr, f_va, y_va)
    out = _head_out(p, f_te)
    assert out.shape == (90, classes)
    assert (out.argmax(1) == y_te).mean() > 0.95
    z_tr, z_te = _std(f_tr, f_tr), _std(f_tr, f_te)
    s = p.selected_strength_
    if head == "logreg":
        ref = LogisticRegression(C=s, max_iter=2000).fit(z_tr, y_tr)
        probs = torch.softmax(torch.as_tensor(out), -1).numpy()
        np.testing.assert_allclose(probs, ref.predict_proba(z_te), atol=1e-4)
    elif head in ("ridge", "linear_svm"):
        ref = (
            RidgeClassifier(alpha=1 / s) if head == "ridge" else LinearSVC(C=s, max_iter=2000)
        ).fit(z_tr, y_tr)
        dec = ref.decision_function(z_te)
        got = out[:, 1] - out[:, 0] if classes == 2 else out
        np.testing.assert_allclose(got, dec, atol=1e-4)
    elif head == "knn":
        ref = KNeighborsClassifier(int(s), metric="cosine", algorithm="brute").fit(z_tr, y_tr)
        np.testing.assert_array_equal(out.argmax(1), ref.predict(z_te))
        np.testing.assert_allclose(np.exp(out), ref.predict_proba(z_te), atol=1e-6)
    elif head == "prototype":  # nearest class mean on the raw features
        assert p.head_info_["distance"] in ("cosine", "euclidean")
        ref = NearestCentroid().fit(f_tr, y_tr)
        np.testing.assert_allclose(p.head.prototypes.numpy(), ref.centroids_, rtol=1e-5)
        if p.head_info_["distance"] == "euclidean":
            np.testing.assert_array_equal(out.argmax(1), ref.predict(f_te))
    assert (
        p.selected_param_
        == {
            "logreg": "C",
            "ridge": "1/alpha",
            "linear_svm": "C",
            "mlp": "weight_decay",
            "knn": "k",
            "prototype": "temperature",
            "prototype_transductive": "temperature",
        }[head]
    )


@pytest.mark.parametrize("head", HEADS)
def test_regression_heads(head: str) -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=8)
    f = (rng.normal(size=(260, 8)) * 3 + 7).astype(np.float32)
    y = (f @ w + 0.5).astype(np.float32)
    kw: dict[str, object] = {}
    if head == "knn":  # a smooth target on a 1-D manifold, learnable from 160 points
        f[:, 1:] = f[:, :1] * np.linspace(-2, 2, 7) + rng.normal(size=(260, 7)) * 0.05
        y = (4 * np.sin(f[:, 0] / 2) + 0.5).astype(np.float32)
        kw = {"knn_metric": "euclidean"}
    p = _probe(head, 1, task="regression", strengths=[1.0, 100.0], **kw)
    p.fit_features(f[:160], y[:160], f[160:200], y[160:200])
    pred = _head_out(p, f[200:])[:, 0]
    r2 = 1 - ((pred - y[200:]) ** 2).sum() / ((y[200:] - y[200:].mean()) ** 2).sum()
    assert r2 > {"mlp": 0.9, "knn": 0.8}.get(head, 0.99)
    z_tr, z_te, s = _std(f[:160], f[:160]), _std(f[:160], f[200:]), p.selected_strength_
    refs = {
        "logreg": Ridge(alpha=1 / s),
        "ridge": Ridge(alpha=1 / s),
        "linear_svm": LinearSVR(C=s, max_iter=2000),
        "knn": KNeighborsRegressor(int(s), metric="euclidean", algorithm="brute"),
    }
    if head in refs:
        ref = refs[head].fit(z_tr, y[:160]).predict(z_te)
        np.testing.assert_allclose(pred, ref, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize(
    "head,task",
    [("logreg", "classification"), ("ridge", "classification"), ("ridge", "regression")],
)
def test_strength_is_chosen_on_val_only(head: str, task: str) -> None:
    """Same training data, two validation sets: the selected strength follows val."""
    rng = np.random.default_rng(4)
    n = 200
    y_tr = (np.arange(n) % 10 < 7).astype(np.int64) ^ 1  # 70 % class 0
    f_tr = (rng.normal(size=(n, 8)) + 3 * y_tr[:, None]).astype(np.float32)
    if task == "regression":
        y_tr = (f_tr[:, 0] * 2.0).astype(np.float32)
    f_va = (rng.normal(size=(60, 8)) + 3 * (np.arange(60) % 2)[:, None]).astype(np.float32)
    honest = (np.arange(60) % 2) if task == "classification" else f_va[:, 0] * 2.0
    # the heavily regularised model predicts (near) the majority class / the training mean
    degenerate = (
        np.zeros(60, np.int64)
        if task == "classification"
        else np.full(60, y_tr.mean(), np.float32) + rng.normal(size=60) * 1e-3
    )
    chosen = []
    for y_va in (honest, degenerate):
        p = _probe(head, 2 if task == "classification" else 1, task=task, strengths=[1e-6, 100.0])
        p.fit_features(f_tr, y_tr, f_va, y_va)
        chosen.append(p.selected_strength_)
        ref = (RidgeClassifier if task == "classification" else Ridge)(alpha=1e6)
        if head == "logreg":
            ref = LogisticRegression(C=1e-6, max_iter=2000)
        ref.fit(_std(f_tr, f_tr), y_tr)
        pred = ref.predict(_std(f_tr, f_va))
        expect = (
            (pred == y_va).mean()
            if task == "classification"
            else 1 - ((pred - y_va) ** 2).sum() / ((y_va - y_va.mean()) ** 2).sum()
        )
        assert p.val_scores_[1e-6] == pytest.approx(expect)
    assert chosen == [100.0, 1e-6]


def test_predict_end_to_end_with_layers() -> None:
    """predict(x) = head(concat of the selected groups' pooled features) for raw inputs."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    for head in ("logreg", "mlp", "knn"):
        p = _probe(head, 2, layers=[0, -1])
        assert p.layers == [0, 1] and p.in_features == 16
        f = p.extract(x)
        assert f.shape == (120, 16)
        p.fit_features(f[:80], y[:80], f[80:], y[80:])
        p.eval()
        with torch.no_grad():
            got = p.predict(p.backbone.prepare(x)).numpy()
        np.testing.assert_allclose(got, _head_out(p, f), atol=1e-5)


@pytest.mark.parametrize("head", ["mlp", "knn", "ridge", "prototype", "prototype_transductive"])
def test_fitted_head_round_trips_through_state_dict(head: str) -> None:
    f_tr, y_tr = _blobs(90, 3)
    f_va, y_va = _blobs(30, 3, seed=1)
    p = _probe(head, 3)
    p.fit_features(f_tr, y_tr, f_va, y_va)
    state = {k: v.clone() for k, v in p.state_dict().items()}
    fresh = _probe(head, 3)
    fresh.load_state_dict(state)
    x = torch.randn(7, 6)
    fresh.eval(), p.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.predict(x), p.predict(x))
    if head == "knn":
        assert isinstance(fresh.head, KNNHead) and fresh.head.train_z.shape == (90, 8)
    if head.startswith("prototype"):
        assert isinstance(fresh.head, PrototypeHead) and fresh.head.distance == p.head.distance


def test_prototype_heads_are_classification_only() -> None:
    f, _ = _blobs(40, 2)
    for head in PROTOTYPE_HEADS:
        params = FeatureHeadParams(head=head)
        with pytest.raises(ConfigError, match="regression target"):
            fit_head(f, f[:, 0], f, f[:, 0], task="regression", num_outputs=1, params=params)
        with pytest.raises(ConfigError, match="regression target"):
            build_head(head, 8, 1, "regression", params)
        with pytest.raises(ConfigError, match="regression target"):
            _probe(head, 1, task="regression")


def test_mlp_is_deterministic_under_a_seed() -> None:
    f_tr, y_tr = _blobs(90, 3)
    f_va, y_va = _blobs(30, 3, seed=1)
    params = FeatureHeadParams(head="mlp", seed=7, mlp_max_epochs=20, mlp_hidden=16)
    a, b = (
        fit_head(f_tr, y_tr, f_va, y_va, task="classification", num_outputs=3, params=params)
        for _ in range(2)
    )
    for (k, va), vb in zip(
        a.module.state_dict().items(), b.module.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), k
    c = fit_head(
        f_tr,
        y_tr,
        f_va,
        y_va,
        task="classification",
        num_outputs=3,
        params=params.model_copy(update={"seed": 8}),
    )
    assert not torch.equal(c.module.net[0].weight, a.module.net[0].weight)


def test_linear_regression_fold_is_exact() -> None:
    """Folding z-space weights into f-space: W' f + b' = W z + b (hand check vs OLS)."""
    rng = np.random.default_rng(6)
    f = (rng.normal(size=(50, 3)) * [1, 10, 100] + [5, -5, 50]).astype(np.float32)
    y = (f @ np.array([1.0, 0.1, 0.01]) + 2).astype(np.float32)
    fitted = fit_head(
        f,
        y,
        f,
        y,
        task="regression",
        num_outputs=1,
        params=FeatureHeadParams(head="ridge", strengths=[1e9]),
    )
    ols = LinearRegression().fit(f, y)
    np.testing.assert_allclose(fitted.module.weight.detach().numpy()[0], ols.coef_, rtol=1e-3)
    assert float(fitted.module.bias.detach()) == pytest.approx(float(ols.intercept_), rel=1e-3)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="layers"):
        _probe("logreg", 2, layers=[5])
    p = _probe("logreg", 2, layers=[0, 1])
    f, y = _blobs(40, 2)
    with pytest.raises(ConfigError, match=r"\[N, 16\]"):
        p.fit_features(f, y, f, y)
    with pytest.raises(DataError, match="labels"):
        _probe("knn", 2).fit_features(f, y + 1, f, y)
    with pytest.raises(DataError, match="single class"):
        _probe("ridge", 2).fit_features(f, np.zeros(40, np.int64), f, y)
