"""Jet 4-vector reconstruction residuals, as reported for the ATLAS jet autoencoders."""

from __future__ import annotations

import numpy as np

from hepexp.metrics.stats import summarize

#: Variables compared by relative residual (out - in) / in; the others by absolute residual.
RELATIVE = ("m", "pt", "E")
ABSOLUTE = ("phi", "eta")


def jet_energy(m: np.ndarray, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """E from (m, pt, eta); a negative m stands for a negative mass squared."""
    p2 = (pt * np.cosh(eta)) ** 2
    return np.sqrt(np.clip(np.sign(m) * m**2 + p2, 0.0, None))


def with_energy(jets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Jets (m, pt, phi, eta) plus their energy E."""
    return {**jets, "E": jet_energy(jets["m"], jets["pt"], jets["eta"])}


def residuals(true: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-jet residuals: relative for m, pt and E, absolute for eta and phi (wrapped to +-pi).

    Relative residuals of jets whose true value is exactly 0 are undefined and come out NaN.
    """
    true, pred = with_energy(true), with_energy(pred)
    out = {}
    for var in RELATIVE:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[var] = np.where(true[var] != 0, (pred[var] - true[var]) / true[var], np.nan)
    out["eta"] = pred["eta"] - true["eta"]
    out["phi"] = np.angle(np.exp(1j * (pred["phi"] - true["phi"])))
    return out


def residual_metrics(true: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> dict[str, float]:
    """Flat metrics ``<var>_<stat>`` (e.g. ``pt_rms``) over all jets."""
    res = residuals(true, pred)
    flat = {}
    for var, values in res.items():
        for stat, value in summarize(values).items():
            flat[f"{var}_{'rel_' if var in RELATIVE else 'abs_'}{stat}"] = value
    # relative residuals of eta and phi, as quoted by the HEPAutoencoders studies (they blow up
    # near 0, so compare their sigma68 rather than their RMS)
    for var in ABSOLUTE:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(true[var] != 0, res[var] / true[var], np.nan)
        for stat, value in summarize(rel).items():
            flat[f"{var}_rel_{stat}"] = value
    # the mass of very light jets makes its relative residual explode; report heavier jets too
    heavy = true["m"] > 1.0
    for stat, value in summarize(res["m"][heavy]).items():
        flat[f"m_rel_{stat}_m_gt_1GeV"] = value
    return flat
