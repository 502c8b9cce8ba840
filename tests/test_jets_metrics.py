"""Residual definitions of the jet autoencoder evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from hepexp.metrics.jets import jet_energy, residual_metrics, residuals


def _jets(n: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "m": rng.uniform(2, 20, n),
        "pt": rng.uniform(20, 200, n),
        "phi": rng.uniform(-3.1, 3.1, n),
        "eta": rng.uniform(-4, 4, n),
    }


def test_perfect_reconstruction_has_zero_residuals() -> None:
    jets = _jets()
    metrics = residual_metrics(jets, jets)
    for key in ("m_rel_rms", "pt_rel_rms", "E_rel_rms", "eta_abs_rms", "phi_abs_rms"):
        assert metrics[key] == 0.0


def test_relative_and_absolute_residuals() -> None:
    true = _jets()
    pred = {**true, "pt": true["pt"] * 1.02, "eta": true["eta"] + 0.01}
    res = residuals(true, pred)
    np.testing.assert_allclose(res["pt"], 0.02)
    np.testing.assert_allclose(res["eta"], 0.01)
    metrics = residual_metrics(true, pred)
    assert metrics["pt_rel_mean"] == pytest.approx(0.02)
    assert metrics["pt_rel_sigma68"] == pytest.approx(0.0, abs=1e-12)
    # E = sqrt(m^2 + (pt cosh eta)^2) moves with pt
    assert 0.0 < metrics["E_rel_mean"] < 0.03


def test_phi_residual_wraps_around() -> None:
    true = {
        "m": np.array([5.0]),
        "pt": np.array([50.0]),
        "phi": np.array([3.1]),
        "eta": np.array([0.0]),
    }
    pred = {**true, "phi": np.array([-3.1])}
    assert residuals(true, pred)["phi"][0] == pytest.approx(2 * np.pi - 6.2)


def test_energy_with_negative_mass_squared() -> None:
    assert jet_energy(np.array([3.0]), np.array([4.0]), np.array([0.0]))[0] == pytest.approx(5.0)
    assert jet_energy(np.array([-3.0]), np.array([4.0]), np.array([0.0]))[0] == pytest.approx(
        np.sqrt(7.0)
    )


def test_zero_true_values_give_nan_not_inf() -> None:
    true = {
        "m": np.array([0.0, 5.0]),
        "pt": np.array([50.0, 50.0]),
        "phi": np.array([0.1, 0.2]),
        "eta": np.array([0.5, 0.4]),
    }
    pred = {**true, "m": np.array([1.0, 5.5])}
    res = residuals(true, pred)
    assert np.isnan(res["m"][0]) and res["m"][1] == pytest.approx(0.1)
    assert residual_metrics(true, pred)["m_rel_n"] == 1


def test_hepae_relative_std_is_plain_std_over_all_jets() -> None:
    true = {
        "m": np.full(4, 10.0),
        "pt": np.array([50.0, 100.0, 200.0, 400.0]),
        "phi": np.array([3.1, -1.0, 0.5, 2.0]),
        "eta": np.array([0.5, -1.0, 2.0, 0.0]),
    }
    pred = {
        **true,
        "pt": true["pt"] * np.array([1.01, 0.99, 1.0, 1.0]),
        # phi 3.1 -> -3.1 is a small angle, but HEPAutoencoders does not wrap: residual -2
        "phi": np.array([-3.1, -1.0, 0.5, 2.0]),
        # the jet at eta = 0 has no relative residual and is left out
        "eta": np.array([0.51, -0.98, 2.0, 0.3]),
    }
    metrics = residual_metrics(true, pred)
    # population std (ddof 0) of [0.01, -0.01, 0, 0]
    assert metrics["pt_rel_std_hepae"] == pytest.approx(np.sqrt(0.0002 / 4))
    # of [0.02, -0.02, 0]: no clipping, no range
    assert metrics["eta_rel_std_hepae"] == pytest.approx(np.sqrt(0.0008 / 3))
    # of [-2, 0, 0, 0], while the absolute phi residual wraps around
    assert metrics["phi_rel_std_hepae"] == pytest.approx(np.std([-2.0, 0, 0, 0]))
    assert metrics["phi_abs_rms"] == pytest.approx(np.sqrt((2 * np.pi - 6.2) ** 2 / 4))
    e_true = jet_energy(true["m"], true["pt"], true["eta"])
    e_pred = jet_energy(pred["m"], pred["pt"], pred["eta"])
    assert metrics["E_rel_std_hepae"] == pytest.approx(np.std(e_pred / e_true - 1))
    # one far outlier sets the std (it is not clipped), sigma68 does not see it
    pred["pt"] = true["pt"] * np.array([1.0, 1.0, 1.0, 2.0])
    metrics = residual_metrics(true, pred)
    assert metrics["pt_rel_std_hepae"] == pytest.approx(np.std([0, 0, 0, 1.0]))
