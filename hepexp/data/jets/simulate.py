"""Simulated ATLAS-like trigger jets, written in the original table format (m, pt in MeV).

Shapes follow what is known of the anti-kt R = 0.4 trigger-jet tables of the HEPAutoencoders
studies: a steeply falling pT spectrum from the 20 GeV threshold with a harder tail, a central
eta plateau with forward jets out to abs(eta) ~ 4.5, uniform phi, and a few jets with m <= 0
(single-cluster jets are massless; rounding can make m^2 slightly negative). The mass follows
m/pT rather than pT: its median falls from ~0.17 at 20 GeV (soft radiation and pile-up weigh
more in soft jets) to ~0.09 at 1 TeV, with a log-normal spread of 0.3 in ln(m/pT), saturating
below ~0.3, the most a jet of radius 0.4 holds. Evidence: the leading ATLAS trigger jets of
~100 GeV printed in the HEPAutoencoders examples have m/pT 0.05-0.17, median ~0.10, a spread
of ~0.28 in ln(m/pT); an autoencoder that does not keep the mass (loss weight 0.05 on m)
reconstructs the mass of the real ATLAS trigger-jet test table to sigma68 20%, which bounds the
spread of m at given pT; CMS Open Data AK4 jets (particle flow, a broader spread of ~0.5) have
medians 0.19 at 20-30 GeV and 0.12 at 30-60 GeV.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PT_MIN_GEV = 20.0
PT_MAX_GEV = 4000.0
#: m/pT of an R = 0.4 jet stays below about this value
MAX_MASS_RATIO = 0.3


def median_mass_ratio(pt_gev: np.ndarray) -> np.ndarray:
    """Median m/pT of the simulated jets at ``pt_gev``: 0.17 at 20 GeV falling to 0.09."""
    return 0.09 + 0.08 * PT_MIN_GEV / np.asarray(pt_gev)


def simulate_jets(
    n_jets: int,
    seed: int = 0,
    pt_index: float = 4.0,
    hard_fraction: float = 0.15,
    hard_pt_index: float = 2.8,
    forward_fraction: float = 0.2,
    mass_spread: float = 0.3,
    nonpositive_mass_fraction: float = 0.003,
) -> pd.DataFrame:
    """Draw ``n_jets`` jets; columns m, pt (MeV), phi, eta.

    pT follows dN/dpT ~ pT^-pt_index above 20 GeV, mixed with a harder component
    (``hard_fraction`` with index ``hard_pt_index``); both truncated at 4 TeV. m/pT is
    log-normal around :func:`median_mass_ratio` with ``mass_spread`` (in ln), softly capped at
    :data:`MAX_MASS_RATIO`; ``nonpositive_mass_fraction`` of the jets have m <= 0.
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

    ratio = median_mass_ratio(pt) * np.exp(mass_spread * rng.standard_normal(n_jets))
    ratio = MAX_MASS_RATIO * np.tanh(ratio / MAX_MASS_RATIO)
    m = ratio * pt
    odd = rng.random(n_jets) < nonpositive_mass_fraction
    # half massless, half a slightly negative mass (negative m^2), always above -1 GeV
    m[odd] = -np.minimum(rng.exponential(0.15, odd.sum()), 0.9) * rng.integers(0, 2, odd.sum())

    return pd.DataFrame({"m": m * 1e3, "pt": pt * 1e3, "phi": phi, "eta": eta})
