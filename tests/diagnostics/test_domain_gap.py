"""Domain gap: proxy A-distance, median-heuristic MMD², 2-D embeddings and the domain plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferkit.diagnostics.domain_gap import (
    domain_gap_report,
    embedding_2d,
    mmd_median,
    plot_domains,
    proxy_a_distance,
    proxy_a_distance_details,
)
from transferkit.errors import ConfigError, DataError


def _gauss(n: int, d: int, shift: float, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, 0] += shift
    return x


def test_pad_same_distribution_is_near_zero() -> None:
    pad = proxy_a_distance(_gauss(400, 8, 0.0, 1), _gauss(400, 8, 0.0, 2))
    assert 0.0 <= pad <= 0.2


def test_pad_separated_gaussians_near_two_and_monotone_in_shift() -> None:
    f_s = _gauss(300, 5, 0.0, 1)
    pads = [proxy_a_distance(f_s, _gauss(300, 5, m, 2)) for m in (0.0, 1.0, 2.0, 8.0)]
    assert pads == sorted(pads)
    assert pads[-1] >= 1.95
    # Bayes error for a mean shift m along one axis is Phi(-m/2): PAD ~ 2 (1 - 2 Phi(-m/2))
    assert pads[1] == pytest.approx(2 * (1 - 2 * 0.3085), abs=0.3)
    assert pads[2] == pytest.approx(2 * (1 - 2 * 0.1587), abs=0.3)


def test_pad_details_deterministic_and_balanced() -> None:
    f_s, f_t = _gauss(500, 4, 0.0, 1), _gauss(120, 4, 1.0, 2)
    a = proxy_a_distance_details(f_s, torch.tensor(f_t), seed=3)
    b = proxy_a_distance_details(f_s, f_t, seed=3)
    assert a == b
    assert a.n_per_domain == 120
    assert a.pad == pytest.approx(float(np.clip(2 * (1 - 2 * a.error), 0, 2)))


def test_pad_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="width"):
        proxy_a_distance(np.zeros((50, 3)), np.zeros((50, 4)))
    with pytest.raises(DataError, match="rows"):
        proxy_a_distance(np.zeros((3, 3)), np.zeros((50, 3)))
    bad = np.ones((50, 3))
    bad[7, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        proxy_a_distance(bad, np.zeros((50, 3)))
    with pytest.raises(ConfigError):
        proxy_a_distance(np.zeros((50, 3)), np.zeros((50, 3)), cv=1)


def _naive_mmd2(s: np.ndarray, t: np.ndarray, sigma: float) -> float:
    """Straight from the definition with explicit loops over pairs."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2)))

    m, n = len(s), len(t)
    ss = sum(k(s[i], s[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    tt = sum(k(t[i], t[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    st = sum(k(a, b) for a in s for b in t) / (m * n)
    return ss + tt - 2 * st


def test_mmd_matches_naive_definition_and_median_bandwidth() -> None:
    s, t = _gauss(12, 3, 0.0, 1), _gauss(9, 3, 1.0, 2)
    res = mmd_median(s, t)
    z = np.vstack([s, t])
    dists = [np.linalg.norm(z[i] - z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
    assert res.bandwidth == pytest.approx(float(np.median(dists)), rel=1e-9)
    assert res.mmd2 == pytest.approx(_naive_mmd2(s, t, res.bandwidth), rel=1e-9)
    fixed = mmd_median(s, t, bandwidth=0.7)
    assert fixed.mmd2 == pytest.approx(_naive_mmd2(s, t, 0.7), rel=1e-9)


def test_mmd_near_zero_for_same_distribution_and_grows_with_shift() -> None:
    s = _gauss(400, 6, 0.0, 1)
    vals = [mmd_median(s, _gauss(400, 6, m, 2)).mmd2 for m in (0.0, 0.5, 1.0, 2.0)]
    assert abs(vals[0]) < 0.01
    assert vals == sorted(vals)
    assert vals[-1] > 0.1


def test_mmd_invariant_to_common_translation() -> None:
    s, t = _gauss(200, 4, 0.0, 1), _gauss(150, 4, 1.0, 2)
    offset = np.array([1e3, -50.0, 7.0, 0.25])
    a, b = mmd_median(s, t), mmd_median(s + offset, t + offset)
    assert b.mmd2 == pytest.approx(a.mmd2, rel=1e-8, abs=1e-12)
    assert b.bandwidth == pytest.approx(a.bandwidth, rel=1e-8)


def test_mmd_subsamples_deterministically() -> None:
    s, t = _gauss(600, 3, 0.0, 1), _gauss(700, 3, 0.5, 2)
    a = mmd_median(s, t, max_samples=250, seed=4)
    assert (a.n_source, a.n_target) == (250, 250)
    assert a == mmd_median(s, t, max_samples=250, seed=4)
    assert a.mmd2 == pytest.approx(mmd_median(s, t).mmd2, abs=0.02)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_shapes_and_index(method: str) -> None:
    s, t = _gauss(80, 5, 0.0, 1), _gauss(30, 5, 3.0, 2)
    emb = embedding_2d(s, t, method=method, max_points=50)
    assert emb.coords.shape == (80, 2)
    assert emb.domain.tolist() == [0] * 50 + [1] * 30
    assert set(emb.index[emb.domain == 1].tolist()) == set(range(30))
    assert np.isfinite(emb.coords).all()
    if method == "pca":  # first component separates the shifted domains
        c = emb.coords[:, 0]
        assert abs(c[emb.domain == 0].mean() - c[emb.domain == 1].mean()) > 2.0


def test_embedding_one_dimensional_and_bad_method() -> None:
    emb = embedding_2d(np.arange(10.0), np.arange(10.0) + 5)
    assert emb.coords.shape == (20, 2)
    with pytest.raises(ConfigError, match="umap"):
        embedding_2d(np.zeros((5, 2)), np.zeros((5, 2)), method="umap")  # type: ignore[arg-type]


def test_plot_domains_writes_png(tmp_path) -> None:
    s, t = _gauss(40, 4, 0.0, 1), _gauss(40, 4, 2.0, 2)
    emb = embedding_2d(s, t)
    labels = np.concatenate([np.arange(40) % 3, np.arange(40) % 3])[
        np.concatenate([emb.index[:40], 40 + emb.index[40:]])
    ]
    out = plot_domains(
        emb.coords,
        emb.domain,
        labels,
        tmp_path / "sub" / "domains.png",
        class_names=["a", "b", "c"],
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_domains(emb.coords, emb.domain, None, tmp_path / "nolabels.png")
    assert (tmp_path / "nolabels.png").stat().st_size > 1000
    with pytest.raises(DataError, match="line up"):
        plot_domains(emb.coords, emb.domain[:5], None, tmp_path / "bad.png")


def test_domain_gap_report_is_json_able() -> None:
    rep = domain_gap_report(_gauss(100, 3, 0.0, 1), _gauss(80, 3, 3.0, 2))
    assert json.loads(json.dumps(rep)) == rep
    assert rep["proxy_a_distance"] > 1.5 and rep["mmd2"] > 0.1
    assert (rep["n_source"], rep["n_target"]) == (100, 80)
