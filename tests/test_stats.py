"""Tests of hepexp.metrics.stats: binomial intervals against published and closed-form values."""

from __future__ import annotations

import numpy as np
import pytest

from hepexp.metrics.stats import clopper_pearson, efficiency_errors


def test_clopper_pearson_matches_published_95_percent_intervals() -> None:
    # Clopper & Pearson (1934) / standard tables: 5 of 10 -> [0.1871, 0.8129]; 0 of 10 ->
    # [0, 0.3085]; 10 of 10 -> [0.6915, 1]; 1 of 20 -> [0.0013, 0.2487]
    lower, upper = clopper_pearson([5, 0, 10, 1], [10, 10, 10, 20], level=0.95)
    np.testing.assert_allclose(lower, [0.1871, 0.0, 0.6915, 0.0013], atol=1e-4)
    np.testing.assert_allclose(upper, [0.8129, 0.3085, 1.0, 0.2487], atol=1e-4)


def test_clopper_pearson_one_sigma_edges_have_closed_forms() -> None:
    # nothing passed: upper = 1 - (alpha/2)^(1/n); everything passed: lower = (alpha/2)^(1/n)
    n = np.array([1, 4, 25, 1000])
    half_alpha = (1 - 0.682689492137086) / 2
    lower, upper = clopper_pearson(np.zeros_like(n), n)
    np.testing.assert_allclose(upper, 1 - half_alpha ** (1 / n), rtol=1e-10)
    assert np.all(lower == 0)
    lower, upper = clopper_pearson(n, n)
    np.testing.assert_allclose(lower, half_alpha ** (1 / n), rtol=1e-10)
    assert np.all(upper == 1)


def test_clopper_pearson_is_conservative_and_tends_to_the_normal_approximation() -> None:
    n = np.array([100, 10_000])
    lower, upper = clopper_pearson(0.9 * n, n)
    assert np.all((lower < 0.9) & (upper > 0.9))
    normal = np.sqrt(0.9 * 0.1 / n)
    half_width = (upper - lower) / 2
    assert np.all(half_width > normal), "exact intervals are wider than the normal ones"
    assert half_width[1] == pytest.approx(normal[1], rel=0.02)


def test_efficiency_errors_are_distances_to_the_bounds_and_nan_for_empty_bins() -> None:
    eff, err = efficiency_errors(np.array([3, 0, 0]), np.array([4, 5, 0]))
    assert err.shape == (2, 3)
    lower, upper = clopper_pearson([3, 0], [4, 5])
    np.testing.assert_allclose(eff[:2], [0.75, 0.0])
    np.testing.assert_allclose(eff[:2] - err[0, :2], lower)
    np.testing.assert_allclose(eff[:2] + err[1, :2], upper)
    assert err[0, 1] == 0 and err[1, 1] > 0, "0 of 5: no error below, a real one above"
    assert np.isnan(eff[2]) and np.isnan(err[:, 2]).all()


def test_clopper_pearson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="passed <= total"):
        clopper_pearson(5, 4)
