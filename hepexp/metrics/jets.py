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


def hepae_relative_std(
    true: dict[str, np.ndarray], pred: dict[str, np.ndarray]
) -> dict[str, float]:
    """Standard deviation of the relative residual (out - in) / in as HEPAutoencoders quotes it.

    The HEPAutoencoders studies (E. Wulff's thesis and the repositories that followed) compute,
    for each of pT, eta, phi and E separately, ``np.std((pred - data) / data)`` over every
    evaluated jet: no range, no clipping, no outlier removal (the range they give, e.g.
    +-0.02 or +-0.1, only sets the histogram axis), phi not wrapped, population std (ddof 0).
    The relative residual of eta and phi diverges for values near 0, so these numbers are set
    by the few jets closest to eta = 0 or phi = 0. Jets whose input is exactly 0 (NaN there)
    are left out. Returns ``<var>_rel_std_hepae`` for pt, eta, phi, E.
    """
    true, pred = with_energy(true), with_energy(pred)
    out = {}
    for var in ("pt", "eta", "phi", "E"):
        keep = true[var] != 0
        rel = (pred[var][keep] - true[var][keep]) / true[var][keep]
        out[f"{var}_rel_std_hepae"] = float(np.std(rel)) if rel.size else float("nan")
    return out


def residual_metrics(true: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> dict[str, float]:
    """Flat metrics ``<var>_<stat>`` (e.g. ``pt_rms``) over all jets, and the relative standard
    deviations of HEPAutoencoders (:func:`hepae_relative_std`)."""
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
    flat.update(hepae_relative_std(true, pred))
    return flat
