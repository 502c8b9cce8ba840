"""Jensen-Shannon distance and the per-OM asymmetric Gaussian mixture baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from hepexp.metrics.timing import (
    AsymmetricGaussianMixture,
    fit_asymmetric_gmm,
    js_distance,
    sparse_from_dense,
)


def test_js_distance_matches_scipy_numpy_and_torch():
    rng = np.random.default_rng(0)
    p = rng.random((64, 40)) * (rng.random((64, 40)) < 0.3)  # sparse rows with zeros
    q = rng.poisson(2.0, size=(64, 40)).astype(float)
    p[:, 0] += 0.1  # no empty rows here
    q[:, 1] += 1.0
    ref = jensenshannon(p, q, axis=1, base=2)
    np.testing.assert_allclose(js_distance(p, q), ref, atol=1e-12)
    np.testing.assert_allclose(js_distance(p.T, q.T, axis=0), ref, atol=1e-12)
    got = js_distance(torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)
    got32 = js_distance(torch.tensor(p, dtype=torch.float32), torch.tensor(q, dtype=torch.float32))
    np.testing.assert_allclose(got32.numpy(), ref, atol=1e-5)
    assert js_distance(p, q).shape == (64,)


def test_js_distance_edge_cases():
    a = np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 0], [2.0, 2.0, 0], [1.0, 0, 0]])
    b = np.array([[0, 0, 5.0], [0, 0, 0], [0, 3.0, 0], [1.0, 1.0, 0], [1.0, 0, 0]])
    # disjoint -> 1; both empty -> 0; one empty -> 1; same shape after normalising -> 0
    np.testing.assert_allclose(js_distance(a, b), [1.0, 0.0, 1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        js_distance(torch.tensor(a), torch.tensor(b)).numpy(), [1.0, 0.0, 1.0, 0.0, 0.0], atol=1e-7
    )
    with pytest.raises(ValueError, match="same shape"):
        js_distance(a, b[:, :2])
    with pytest.raises(ValueError, match="non-negative"):
        js_distance(-a, b)


def split_normal(rng, n, mu, sl, sr):
    left = rng.random(n) < sl / (sl + sr)
    z = np.abs(rng.normal(size=n))
    return np.where(left, mu - z * sl, mu + z * sr)


def test_mixture_fit_recovers_known_parameters_batched():
    rng = np.random.default_rng(1)
    om0 = np.concatenate(
        [split_normal(rng, 3000, 100, 5, 30), split_normal(rng, 2000, 400, 20, 80)]
    )
    om1 = split_normal(rng, 4000, 50, 2, 10)
    offsets = np.array([0, len(om0), len(om0) + len(om1)])
    gmm = fit_asymmetric_gmm(offsets, np.concatenate([om0, om1]), n_components=2)
    order = np.argsort(gmm.mu[0])
    np.testing.assert_allclose(gmm.weights[0, order], [0.6, 0.4], atol=0.03)
    np.testing.assert_allclose(gmm.mu[0, order], [100, 400], rtol=0.03)
    np.testing.assert_allclose(gmm.sigma_left[0, order], [5, 20], rtol=0.15)
    np.testing.assert_allclose(gmm.sigma_right[0, order], [30, 80], rtol=0.1)
    # the single-component OM in the same batch: both components describe the same peak
    cdf = gmm.cdf(np.array([50.0]))[1, 0]
    assert cdf == pytest.approx(2 / 12, abs=0.03)  # mass left of the mode = sl / (sl + sr)
    # batching does not change the result
    alone = fit_asymmetric_gmm(np.array([0, len(om1)]), om1, n_components=2)
    np.testing.assert_allclose(np.sort(alone.mu[0]), np.sort(gmm.mu[1]), rtol=1e-9)


def test_few_photons_get_one_component_each_and_binned_is_a_distribution():
    counts = np.zeros((3, 100))
    counts[0, [3, 40]] = [2, 1]
    counts[1, 99] = 5
    counts[2, :] = np.arange(100) % 3  # many distinct bins -> EM
    offsets, t, w = sparse_from_dense(counts, bin_width=2.0)
    assert offsets.tolist() == [0, 2, 3, 3 + 66]
    np.testing.assert_array_equal(t[:3], [7.0, 81.0, 199.0])
    gmm = fit_asymmetric_gmm(offsets, t, w, n_components=4, sigma_min=0.25)
    assert gmm.n_parameters == 15
    np.testing.assert_allclose(gmm.weights[0], [2 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(gmm.mu[0, :2], [7.0, 81.0])
    probs = gmm.binned(100, 200.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert (probs >= 0).all()
    # a photon at a bin centre with a 0.25 ns width keeps P(|z| < 4) of its mass in its 2 ns bin
    assert probs[0, 3] == pytest.approx(2 / 3 * 0.99994, abs=1e-5) and probs[1, 99] > 0.99
    js = js_distance(counts, probs)
    assert js[0] < 0.01 and js[1] < 0.01
    cdf = gmm.cdf(np.linspace(-10, 250, 500))
    assert (np.diff(cdf, axis=1) >= -1e-12).all() and np.allclose(cdf[:, -1], 1.0)


def test_mixture_handles_empty_oms():
    gmm = fit_asymmetric_gmm(np.array([0, 0, 2]), np.array([1.0, 2.0]), n_components=3)
    assert isinstance(gmm, AsymmetricGaussianMixture) and gmm.weights.shape == (2, 3)
    assert gmm.weights[1].sum() == pytest.approx(1.0)
