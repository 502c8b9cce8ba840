"""Simulated ATLAS-like trigger jets, written in the original table format (m, pt in MeV).

Shapes follow what the ATLAS jet tables of HEPAutoencoders show: a steeply falling pT spectrum
from the 20 GeV threshold with a harder tail, a central eta plateau with forward jets out to
abs(eta) ~ 4.5, uniform phi, jet mass growing with pT with a wide m/pT spread, and a few jets with
m <= 0 (calorimeter noise can give a negative mass squared).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PT_MIN_GEV = 20.0
PT_MAX_GEV = 4000.0


def simulate_jets(
    n_jets: int,
    seed: int = 0,
    pt_index: float = 4.0,
    hard_fraction: float = 0.15,
    hard_pt_index: float = 2.8,
    forward_fraction: float = 0.2,
    nonpositive_mass_fraction: float = 0.003,
) -> pd.DataFrame:
    """Draw ``n_jets`` jets; columns m, pt (MeV), phi, eta.

    pT follows dN/dpT ~ pT^-pt_index above 20 GeV, mixed with a harder component
    (``hard_fraction`` with index ``hard_pt_index``); both truncated at 4 TeV.
    """
    rng = np.random.default_rng(seed)
    hard = rng.random(n_jets) < hard_fraction
    index = np.where(hard, hard_pt_index, pt_index)
    # inverse CDF of a truncated power law
    u = rng.random(n_jets)
    lo, hi = PT_MIN_GEV ** (1 - index), PT_MAX_GEV ** (1 - index)
    pt = (lo + u * (hi - lo)) ** (1 / (1 - index))

    forward = rng.random(n_jets) < forward_fraction
    abs_eta = np.where(
        forward,
        2.5 + 2.0 * (1 - np.sqrt(rng.random(n_jets))),  # falling linearly to zero at 4.5
        2.5 * rng.random(n_jets),
    )
    eta = abs_eta * rng.choice([-1.0, 1.0], n_jets)
    phi = rng.uniform(-np.pi, np.pi, n_jets)

    # m/pT: log-normal, median rising slowly with pT (more radiation in harder jets)
    median_ratio = 0.10 + 0.02 * np.log10(pt / PT_MIN_GEV)
    ratio = np.clip(median_ratio * np.exp(0.45 * rng.standard_normal(n_jets)), 0.005, 0.6)
    m = ratio * pt
    odd = rng.random(n_jets) < nonpositive_mass_fraction
    m[odd] = -rng.exponential(0.15, odd.sum()) * rng.integers(0, 2, odd.sum())

    return pd.DataFrame({"m": m * 1e3, "pt": pt * 1e3, "phi": phi, "eta": eta})
