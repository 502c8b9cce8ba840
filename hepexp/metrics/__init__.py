"""Physics metrics: tracking scores and efficiencies, resolutions, distribution distances.

- TrackML (:mod:`hepexp.metrics.trackml`): :func:`score_event` (the official score),
  :func:`hit_weights`, :func:`efficiencies` / :func:`aggregate_efficiencies`,
  :func:`match_particles`, :func:`match_clusters`.
- Jets (:mod:`hepexp.metrics.jets`): :func:`residual_metrics` (mean, RMS, std, sigma68 of the
  residuals of m, pt, E, phi, eta), :func:`residuals`, :func:`jet_energy`.
- Statistics (:mod:`hepexp.metrics.stats`): :func:`summarize` (mean, RMS, std, sigma68 of any
  residuals), :func:`clopper_pearson` and :func:`efficiency_errors` (binomial intervals).
- Hit tokenizers (:mod:`hepexp.metrics.vqvae`): :func:`hit_errors`, :func:`error_summary`,
  :func:`error_cdf`.
- Photon timing (:mod:`hepexp.metrics.timing`, imported on first use: it needs torch):
  :func:`js_distance`, :func:`ks_distance`, :func:`fit_asymmetric_gmm`, :func:`by_photon_class`.
"""

from __future__ import annotations

from hepexp.metrics.jets import jet_energy, residual_metrics, residuals
from hepexp.metrics.stats import clopper_pearson, efficiency_errors, summarize
from hepexp.metrics.trackml import (
    aggregate_efficiencies,
    efficiencies,
    hit_weights,
    match_clusters,
    match_particles,
    score_event,
)
from hepexp.metrics.vqvae import error_cdf, error_summary, hit_errors
from hepexp.utils.lazy import lazy_exports

#: names of hepexp.metrics.timing, imported on first use (it imports torch and scipy)
_TIMING = (
    "AsymmetricGaussianMixture",
    "by_photon_class",
    "fit_asymmetric_gmm",
    "js_distance",
    "ks_distance",
)

__all__ = [
    "aggregate_efficiencies",
    "clopper_pearson",
    "efficiencies",
    "efficiency_errors",
    "error_cdf",
    "error_summary",
    "hit_errors",
    "hit_weights",
    "jet_energy",
    "match_clusters",
    "match_particles",
    "residual_metrics",
    "residuals",
    "score_event",
    "summarize",
    *_TIMING,
]


# imported on first use: hepexp.metrics.timing needs torch and scipy
__getattr__ = lazy_exports(__name__, dict.fromkeys(_TIMING, "hepexp.metrics.timing"))
